//! The `trace=` level, set once at boot and read on every event.
use crate::racy::RacyCell;
use bsp_x86_64::cmdline::TraceLevel;

/// The `trace=` level. A plain cell, not an atomic: the compiler folds a plain byte's load
/// into the compare (`cmp byte ptr [LEVEL], 0`), so the dispatcher's check is two
/// instructions; an atomic load is a separate load and test.
static LEVEL: RacyCell<TraceLevel> = RacyCell::new(TraceLevel::Off);

/// Sets the level (boot, once the command line is parsed, before interrupts are on).
pub fn set(level: TraceLevel) {
    // SAFETY: boot, one CPU, interrupts off: nothing reads the level while it is written,
    // and it is never written again.
    unsafe { *LEVEL.get() = level };
}

fn level() -> TraceLevel {
    // SAFETY: written once during boot before any event can read it (see `set`).
    unsafe { *LEVEL.get() }
}

/// Whether records of level `wanted` are taken.
pub fn on(wanted: TraceLevel) -> bool {
    level() >= wanted
}

/// Whether the dispatcher's entry goes through `traced`: one compare, one branch.
#[inline(always)]
pub fn active() -> bool {
    level() != TraceLevel::Off
}

/// Whether a server's own records (`TraceWrite`) are taken.
pub fn servers_on() -> bool {
    on(TraceLevel::All)
}
