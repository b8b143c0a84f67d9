//! The boot summary and options, kept once boot has moved to the stack block: far too large
//! for the 8 KiB primary stack, and the kexec hand-off needs the modules, memory map and
//! command line long after boot. Below `startup` and `handoff`, which both read it.
use crate::bootinfo::BootSummary;
use bsp_x86_64::cmdline::Options;
use spin::Once;

struct Kept {
    boot: BootSummary,
    options: Options,
}

static KEPT: Once<Kept> = Once::new();

/// Keeps this boot's summary and options (the first call wins; boot makes exactly one).
pub fn keep(boot: BootSummary, options: Options) {
    KEPT.call_once(|| Kept { boot, options });
}

/// The boot summary and options, once [`keep`] has run.
pub fn boot_state() -> Option<(&'static BootSummary, &'static Options)> {
    KEPT.get().map(|k| (&k.boot, &k.options))
}
