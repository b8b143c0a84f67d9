//! The thread table: every Ring3 thread the nucleus runs, and its state (issue 7, issue 12).
//!
//! Each server is one thread in its own address space, started from the boot module whose
//! string names it. A thread's kernel-side state is its register save area (`areas`: the
//! entry stubs save its context straight into it), its address space, its two ring ends and its *fault handler*: the
//! thread that gets its events (faults, `int3`, a hang) and decides with a `Reply`. A thread
//! without one (fred-server) is the nucleus' to report and restart.
//!
//! The table is reached only through [`with`], which lends the one `&mut Threads` to one
//! closure at a time and panics on a nested borrow. State changes go through verbs
//! ([`slot::Thread::wake`], [`slot::Thread::block_on_events`], …), never raw field writes
//! from outside.
// The save areas' storage and the live frame (each `unsafe` argued there).
#[allow(unsafe_code)]
mod areas;
pub mod guest_vcpu;
mod layout;
pub mod sched;
mod slot;
mod table;

pub use areas::LiveFrame;
#[cfg(target_os = "none")]
pub use areas::is_guest_area;
#[cfg(any(target_os = "none", test))]
pub use areas::server_syscall_credit;
#[cfg(test)]
pub use areas::static_area_ptr;
pub use layout::BOOT_THREADS;
pub use layout::{GUEST_MANAGER, MAX_THREADS, ThreadId};
pub use slot::{COMPLAINTS_PER_TICK, Kind, Pending, SERVER_SEGMENTS, State, Thread};
pub use table::{AfterReady, Placement, SendFailure, Threads, try_with, with};

#[cfg(test)]
mod tests;
