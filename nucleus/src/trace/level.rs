//! The `trace=` level, set once at boot and read on every event.
use crate::racy::RacyCell;
use bsp_x86_64::cmdline::TraceLevel;

/// The `trace=` level. A plain cell, not an atomic: the compiler folds a plain byte's load
/// into the compare (`cmp byte ptr [LEVEL], 0`), so the dispatcher's check is two
/// instructions; an atomic load is a separate load and test.
static LEVEL: RacyCell<TraceLevel> = RacyCell::new(TraceLevel::Off);

/// Whether the event entries must look at more than the event: `trace=` is on, or a
/// self-test watches ring-3 events (`selftest=fred-ring3`, `dispatch`). A plain byte as
/// [`LEVEL`] is, so the entries' one compare and branch covers both; the self-test's own
/// flag is read only behind it.
static WATCHED: RacyCell<bool> = RacyCell::new(false);

/// Sets the level, and whether the entries are watched (`events_watched`: a self-test
/// watches them) (boot, once the command line is parsed, before interrupts are on).
pub fn set(level: TraceLevel, events_watched: bool) {
    // SAFETY: boot, one CPU, interrupts off: nothing reads the level or the flag while they
    // are written, and they are never written again.
    unsafe {
        *LEVEL.get() = level;
        *WATCHED.get() = events_watched || level != TraceLevel::Off;
    }
}

/// Whether an entry looks at the trace and the self-test hooks (both off: one compare, one
/// branch). True whenever [`active`] is.
#[inline(always)]
pub fn entries_watched() -> bool {
    // SAFETY: written once during boot before any event can read it (see `set`).
    unsafe { *WATCHED.get() }
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
