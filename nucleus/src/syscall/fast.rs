//! The syscall fast path (issue 17): a call that needs neither the thread table, nor a
//! switch, nor the caller's whole context completes inside the entry stub's first call,
//! before the stub has saved more than what a Rust call clobbers; everything else is
//! declined untouched and goes the general way (`dispatch`, [`super::handle`]).
//!
//! Chosen first, declined on any doubt: a guest vCPU's `syscall` (a hypercall), a caller
//! the table must see (every call but `Nop` needs it), `trace=` on (the trace looks at the
//! table around each event) or a self-test watching the entries
//! ([`crate::trace::entries_watched`], one byte for both), and under IDT a return SYSRETQ
//! could not make
//! ([`bsp_x86_64::entry::sysret_safe`]). What the table would have recorded — the caller
//! made a syscall, for the hung-thread watchdog — is a credit next to the
//! thread's save area until the scheduler's next tick hands it to the thread (`sched`).
use bsp_x86_64::frame::Frame;
use core::sync::atomic::{AtomicBool, Ordering};
use ipc::syscall::{Syscall, to_rax};

/// Completes the syscall in `frame` (a save area as the entry stub left it: RAX and the
/// argument registers) if it may, writing only RAX; true if it did. `credit`: the caller's
/// syscall credit if the area is a server's (`thread::server_syscall_credit`), `None` for a
/// guest vCPU's; `may_return`: the stub can return to the caller from this frame without
/// the rest of it.
#[inline(always)]
pub fn complete(
    frame: &mut Frame,
    credit: impl FnOnce() -> Option<&'static AtomicBool>,
    may_return: impl FnOnce(&Frame) -> bool,
) -> bool {
    if frame.gprs.rax != Syscall::Nop as u64
        || crate::trace::entries_watched()
        || !may_return(frame)
    {
        return false;
    }
    let Some(credit) = credit() else {
        return false;
    };
    credit.store(true, Ordering::Relaxed);
    frame.gprs.rax = to_rax(Ok(0));
    true
}

#[cfg(test)]
mod tests;
