//! The boot summary and options, kept once boot has moved to the stack block: far too large
//! for the 8 KiB primary stack, and the kexec hand-off needs the modules, memory map and
//! command line long after boot. Below `startup` and `handoff`, which both read it.
use crate::bootinfo::BootSummary;
use bsp_x86_64::cmdline::Options;
use spin::Once;

/// This boot's summary and options.
pub struct Kept {
    pub boot: BootSummary,
    pub options: Options,
}

/// Set once by `startup` with `KEPT.call_once(|| Kept { .. })` in place: a function taking
/// the summary by value would copy it onto the 8 KiB boot stack, which it overflows.
pub static KEPT: Once<Kept> = Once::new();

/// The boot summary and options, once [`keep`] has run.
pub fn boot_state() -> Option<(&'static BootSummary, &'static Options)> {
    KEPT.get().map(|k| (&k.boot, &k.options))
}
