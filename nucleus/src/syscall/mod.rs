//! The syscall table: what a server's `syscall` does (type 7 vector 1 under FRED, LSTAR
//! under IDT). Each handler returns `Result<NextTask, UserError>`: what runs next, or
//! whether the caller gets an error code in RAX or faults ([`UserError`]).
pub mod fast;
mod user_error;

pub use user_error::{Fault, UserError};

use crate::mm::BadPointer;
use crate::thread::sched::NextTask;
use crate::thread::{GUEST_MANAGER, Kind, ThreadId, Threads};
use bsp_x86_64::frame::Frame;
use ipc::layout;
use ipc::syscall::{RegisterReply, Syscall, SyscallError, to_rax};

/// Longest console write (of which one call prints at most `ipc::console::WRITE_BYTES_MAX`).
const CONSOLE_WRITE_MAX: u64 = 1024;

/// A `syscall` from the current thread: its number in RAX, arguments in RDI and RSI, the
/// result back in RAX. Each handler sets RAX when it succeeds and says what runs next; its
/// [`UserError`] is either the caller's return code (set here) or the caller's fault, which
/// `dispatch` hands to the caller's fault handler.
/// Inlined into both of `dispatch`'s syscall arms: out of line, the null syscall paid for
/// the call and for its result (14 instructions).
#[inline(always)]
pub fn handle(t: &mut Threads, frame: &mut Frame) -> Result<NextTask, Fault> {
    let Some(cur) = t.current() else {
        return Ok(NextTask::Same);
    };
    match call(t, cur, frame) {
        Ok(next) => Ok(next),
        Err(UserError::Recoverable(error)) => {
            frame.gprs.rax = to_rax(Err(error));
            Ok(NextTask::Same)
        }
        Err(UserError::Unrecoverable(fault)) => Err(fault),
    }
}

/// The table itself: which handler a syscall number runs.
#[inline(always)]
fn call(t: &mut Threads, cur: ThreadId, frame: &mut Frame) -> Result<NextTask, UserError> {
    if !frame.ret.ss.is_64bit() {
        return Err(UserError::Unrecoverable(Fault::CompatibilityModeSyscall));
    }
    t.get_mut(cur).made_syscall();
    if let Kind::GuestVcpu { .. } = t.get(cur).kind() {
        // A guest kernel's `syscall` is a hypercall, never one of ours.
        return Ok(crate::forward::hypercall(t, frame, cur));
    }
    let (number, arg0, arg1) = (frame.gprs.rax, frame.gprs.rdi, frame.gprs.rsi);
    match Syscall::try_from(number) {
        Ok(Syscall::ConsoleWrite) => console_write(t, cur, arg0, arg1).map(|n| ok(frame, n)),
        Ok(Syscall::Nop) => Ok(ok(frame, 0)),
        Ok(Syscall::Yield) => {
            frame.gprs.rax = 0;
            Ok(NextTask::NextInTurn)
        }
        Ok(Syscall::RingNotify) => ring_notify(t, cur, arg0, frame),
        Ok(Syscall::RingWait) => ring_wait(t, cur, arg0, frame),
        Ok(Syscall::ReplyWait) => reply_wait(t, cur, frame),
        Ok(Syscall::Exit) => Ok(exit(t, cur, arg0)),
        // The frame, not `arg1`: a second user of RSI's value made every syscall load it.
        Ok(Syscall::TraceWrite) => trace_write(t, cur, frame).map(|n| ok(frame, n)),
        Ok(guest_call) => guest_manager(t, cur, guest_call, frame),
        Err(_) => Err(SyscallError::NoSuchSyscall.into()),
    }
}

/// The caller goes on with `value` in RAX.
#[inline(always)]
fn ok(frame: &mut Frame, value: u64) -> NextTask {
    frame.gprs.rax = to_rax(Ok(value));
    NextTask::Same
}

#[inline(always)]
fn ring_notify(
    t: &mut Threads,
    cur: ThreadId,
    ring: u64,
    frame: &mut Frame,
) -> Result<NextTask, UserError> {
    match ring {
        layout::REPLY_RING_ID => {
            // Replies only act on *other* threads (those waiting for this fault handler), so
            // the caller's live frame and CR3 stay as they are.
            frame.gprs.rax = 0;
            crate::forward::drain_replies(t, cur);
            Ok(NextTask::Same)
        }
        layout::EVENT_RING_ID => Ok(ok(frame, 0)),
        _ => Err(SyscallError::NoSuchRing.into()),
    }
}

#[inline(always)]
fn ring_wait(
    t: &mut Threads,
    cur: ThreadId,
    ring: u64,
    frame: &mut Frame,
) -> Result<NextTask, UserError> {
    match ring {
        layout::EVENT_RING_ID => Ok(answer_and_sleep(t, cur, frame, None)),
        layout::REPLY_RING_ID => Err(SyscallError::BadArgument.into()),
        _ => Err(SyscallError::NoSuchRing.into()),
    }
}

/// `RingWait` on the event ring with one more answer in registers (RDI, RSI, RDX), checked
/// as a ring record would be; an unknown verdict is refused before anything is taken. The
/// general path of `ReplyWait` (`forward::fast::reply_wait` is its fast one). Out of line:
/// the fast path takes nearly every call, and `RingWait`'s copy of the wait stays as it was.
#[inline(never)]
fn reply_wait(t: &mut Threads, cur: ThreadId, frame: &mut Frame) -> Result<NextTask, UserError> {
    let g = &frame.gprs;
    let reply = RegisterReply::from_registers(g.rdi, g.rsi, g.rdx)
        .ok_or(UserError::from(SyscallError::BadArgument))?;
    Ok(answer_and_sleep(t, cur, frame, Some(reply)))
}

/// Answer and sleep in one syscall: first what the caller queued on its reply ring (as
/// `RingNotify` would take it), then its answer in registers, then wait for events.
#[inline(always)]
fn answer_and_sleep(
    t: &mut Threads,
    cur: ThreadId,
    frame: &mut Frame,
    reply: Option<RegisterReply>,
) -> NextTask {
    frame.gprs.rax = 0;
    crate::forward::drain_replies(t, cur);
    if let Some(reply) = reply {
        crate::forward::reply::take_register_reply(t, cur, reply);
    }
    let thread = t.get_mut(cur);
    if thread.has_events() {
        return NextTask::Same;
    }
    thread.block_on_events();
    t.keep_live(cur, frame);
    NextTask::Other
}

/// The guest-manager calls (issue 15): only [`GUEST_MANAGER`] may make them; the checks
/// that protect frames, tables and other domains are `crate::domains`'. Inlined like the
/// ring calls: pv-server makes several a bounce.
#[inline(always)]
fn guest_manager(
    t: &mut Threads,
    cur: ThreadId,
    call: Syscall,
    frame: &mut Frame,
) -> Result<NextTask, UserError> {
    if cur != GUEST_MANAGER {
        return Err(SyscallError::NotPermitted.into());
    }
    let value = crate::domains::syscall(t, cur, call, frame)?;
    Ok(ok(frame, value))
}

#[cold]
fn exit(t: &mut Threads, cur: ThreadId, code: u64) -> NextTask {
    println!(
        "nucleus: {} exited with code {}",
        t.get(cur).name(),
        code as i64
    );
    crate::lifecycle::kill(t, cur);
    if t.is_fault_handler(cur) {
        crate::forward::rehome_pending(t, cur);
    }
    NextTask::Other
}

fn console_write(t: &mut Threads, cur: ThreadId, ptr: u64, len: u64) -> Result<u64, UserError> {
    if len > CONSOLE_WRITE_MAX {
        return Err(SyscallError::BadArgument.into());
    }
    let mut buf = [0u8; CONSOLE_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    let thread = t.get_mut(cur);
    let space = thread.space.as_ref().ok_or(SyscallError::BadPointer)?;
    space
        .read(ptr, buf)
        .map_err(|BadPointer| SyscallError::BadPointer)?;
    if !thread.console.available() {
        thread.console_catch_up();
    }
    // Every line prefixed with the thread's name and escaped, within its console budget: the
    // caller learns how much was taken and writes the rest later (`ipc::console`).
    let name = thread.name();
    let taken = ipc::console::write(name, buf, &mut thread.console, |line| {
        crate::text::print_server_line(name, line)
    });
    Ok(taken as u64)
}

/// A server's trace frame, copied into the trace under its slot (an allegation: the host
/// decodes it against that server's ELF only, and the nucleus' envelope stays intact). Out
/// of line: its buffer must not grow the frame of the syscall path.
#[cold]
#[inline(never)]
fn trace_write(t: &Threads, cur: ThreadId, frame: &Frame) -> Result<u64, UserError> {
    let (ptr, len) = (frame.gprs.rdi, frame.gprs.rsi);
    if len > ipc::trace::MAX_PAYLOAD as u64 {
        return Err(SyscallError::BadArgument.into());
    }
    if !crate::trace::servers_on() {
        return Ok(0);
    }
    let mut buf = [0u8; ipc::trace::MAX_PAYLOAD];
    let buf = &mut buf[..len as usize];
    let space = t.get(cur).space.as_ref().ok_or(SyscallError::BadPointer)?;
    space
        .read(ptr, buf)
        .map_err(|BadPointer| SyscallError::BadPointer)?;
    crate::trace::push_server(cur.index(), buf);
    Ok(1)
}

#[cfg(test)]
mod tests;
