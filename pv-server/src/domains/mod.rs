//! The running guests and what pv-server does with each message about them (issue 15
//! points 4 and 5): hypercalls answered (page-table ones through the nucleus' checks, the
//! rest by `guest_hypercalls`), shutdowns and crashes ended with their lifecycle line and the
//! domain destroyed, and once the last guest ended one summary line with the free-memory
//! figures, which image-builder's `run --guest` waits for.
//!
//! [`table`] holds the guests and ends them; per guest ([`running`]) the hypercalls
//! ([`hypercalls`]), emulated faults ([`emulation`]), call-gate transfers ([`callgate`])
//! and the ways back into the guest are answered over the nucleus' calls ([`access`]).

mod access;
mod callgate;
mod emulation;
mod ending;
mod host_cpu;
mod hypercalls;
mod running;
mod table;
#[cfg(test)]
mod tests;

// Only the target's server loop uses it (the host build is a stub `main`).
#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use table::Guests;
