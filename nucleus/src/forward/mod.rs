//! Events of Ring3 threads to their fault handler, and the handler's replies back
//! (architecture.md §5).
//!
//! An event of a thread (a fault, `int3`, a hang the watchdog caught) goes into the event
//! ring of the thread's fault handler with a fresh token, and the thread waits for the
//! handler's `Reply` ([`reply`]): resume (possibly with changed registers, checked by
//! [`changes`]), kill or restart. A thread without a live fault handler, or whose handler
//! cannot be reached, is reported and restarted by the nucleus, within the thread's restart
//! budget (`lifecycle`). An event and its dump go into the handler's ring all or nothing.
//! A server's breakpoint for a handler asleep in `RingWait` takes [`fast`] first.
pub mod changes;
pub(crate) mod event;
pub(crate) mod fast;
pub mod hypercall;
pub mod reply;

#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use event::event;
pub use event::rehome_pending;
pub use hypercall::hypercall;
pub use reply::drain_replies;

#[cfg(test)]
mod tests;
