//! The rare records of a thread's life, emitted where it happens: a server started, stopped,
//! restarting. Each drains at once (a crash story survives a run cut right after it).
use super::level::on;
use super::record;
use super::sink::drain;
use bsp_x86_64::cmdline::TraceLevel;

/// Server `slot` started (or restarted) as `generation`.
pub fn started(slot: usize, name: &str, generation: u32) {
    if on(TraceLevel::Events) {
        record::started(slot, name, generation);
        drain();
    }
}

/// Server `slot` stopped.
pub fn stopped(slot: usize, name: &str) {
    if on(TraceLevel::Events) {
        record::stopped(slot, name);
        drain();
    }
}

/// Server `slot` is being restarted for the `restart`th time.
pub fn restarting(slot: usize, name: &str, restart: u32) {
    if on(TraceLevel::Events) {
        record::restarting(slot, name, restart);
        drain();
    }
}
