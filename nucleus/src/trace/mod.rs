//! The binary trace (architecture.md §8): `defmt` records in a per-CPU buffer, drained to
//! COM2 and decoded on the host (`image-builder run --trace FILE`).
//!
//! Nothing on the event path emits: under `trace=off` the dispatcher's entry costs one
//! compare and one branch ([`active`]) and no other code changes. Under `trace=` the entry
//! runs [`traced`] instead, which looks at the thread table before and after the unchanged
//! dispatcher and records what the event did: delivered (kind, vector, delivery, RIP, ring,
//! CPU; every record's timestamp is the TSC), forwarded (from which thread to which server,
//! token), reply taken (token), and at `all` the syscall (number, caller) and the context
//! switch. The rare lifecycle records (server started, stopped, restarting) are emitted where
//! they happen. Guest records are changes in the table too, level `events`: a guest vCPU
//! started, its hypercall (a guest-kernel `syscall` now waiting for pv-server: number, first
//! arguments, token), an event of it bounced (answered, and the guest runs on), and its
//! shutdown (the vCPU stopped).
//!
//! Writing never waits: the buffer (`ipc::trace::TraceBuffer`) drops a record that does not
//! fit, or one begun from a context that interrupted another record, and counts it; the count
//! goes into the trace before the next drain. COM2 takes bytes only as fast as its FIFO has
//! room ([`sink::drain`]: after an event that leaves the CPU idle, on each tick, after lifecycle
//! records) and all of them before an emulator exit ([`flush`]).
//!
//! On the host (the safe core's unit tests) nothing is recorded; [`changes`] is tested there.
mod changes;
mod event;
mod level;
mod lifecycle;
#[cfg(target_os = "none")]
mod record;
#[cfg(target_os = "none")]
mod sink;

use bsp_x86_64::cmdline::TraceLevel;
#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use event::traced;
#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use level::active;
pub use level::entries_watched;
pub use level::servers_on;
pub use lifecycle::{restarting, started, stopped};
#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use sink::{flush, push_server};

/// Sets the level (boot, once the command line is parsed, before interrupts are on) and
/// programs COM2 if it is used. `events_watched`: a self-test watches the entries
/// ([`entries_watched`]).
pub fn start(level: TraceLevel, events_watched: bool) {
    level::set(level, events_watched);
    if level != TraceLevel::Off {
        sink::init();
    }
}

/// On the host: no COM2, nothing to drain or flush.
#[cfg(not(target_os = "none"))]
mod sink {
    pub fn init() {}
    pub fn drain() {}
    pub fn flush() {}
    pub fn push_server(_: usize, _: &[u8]) {}
}

/// On the host: nothing is recorded.
#[cfg(not(target_os = "none"))]
mod record {
    pub fn delivered(_: &ipc::Event, _: bool) {}
    pub fn forwarded(_: usize, _: Option<usize>, _: &str, _: u64) {}
    pub fn reply(_: usize, _: u64) {}
    pub fn started(_: usize, _: &str, _: u32) {}
    pub fn stopped(_: usize, _: &str) {}
    pub fn restarting(_: usize, _: &str, _: u32) {}
    pub fn switch(_: Option<usize>, _: Option<usize>) {}
    pub fn syscall(_: usize, _: u64) {}
    pub fn guest_started(_: u16, _: usize, _: u64) {}
    pub fn hypercall(_: u16, _: u64, _: [u64; 3], _: Option<usize>, _: &str, _: u64) {}
    pub fn guest_stopped(_: u16, _: usize) {}
    pub fn bounced(_: u16, _: usize, _: u64, _: u64) {}
}
