//! The syscall table: what a server's `syscall` does (type 7 vector 1 under FRED, LSTAR
//! under IDT). Each handler returns what runs next, or the error the caller gets in RAX.
use crate::mm::BadPointer;
use crate::thread::sched::NextTask;
use crate::thread::{GUEST_MANAGER, Kind, ThreadId, Threads};
use bsp_x86_64::frame::Frame;
use ipc::layout;
use ipc::syscall::{Syscall, SyscallError, to_rax};

/// Longest console write (of which one call prints at most `ipc::console::WRITE_BYTES_MAX`).
const CONSOLE_WRITE_MAX: u64 = 1024;

/// A `syscall` from the current thread: its number in RAX, arguments in RDI and RSI, the
/// result back in RAX. Each handler sets RAX when it succeeds and says what runs next; an
/// error is the caller's return code, never a fault.
#[inline]
pub fn handle(t: &mut Threads, frame: &mut Frame) -> NextTask {
    let Some(cur) = t.current() else {
        return NextTask::Same;
    };
    t.get_mut(cur).made_syscall();
    if let Kind::GuestVcpu { .. } = t.get(cur).kind() {
        // A guest kernel's `syscall` is a hypercall, never one of ours.
        return crate::forward::hypercall(t, frame, cur);
    }
    let (number, arg0, arg1) = (frame.gprs.rax, frame.gprs.rdi, frame.gprs.rsi);
    let result = match Syscall::try_from(number) {
        Ok(Syscall::ConsoleWrite) => console_write(t, cur, arg0, arg1).map(|n| ok(frame, n)),
        Ok(Syscall::Nop) => Ok(ok(frame, 0)),
        Ok(Syscall::Yield) => {
            frame.gprs.rax = 0;
            Ok(NextTask::NextInTurn)
        }
        Ok(Syscall::RingNotify) => ring_notify(t, cur, arg0, frame),
        Ok(Syscall::RingWait) => ring_wait(t, cur, arg0, frame),
        Ok(Syscall::Exit) => Ok(exit(t, cur, arg0)),
        // The frame, not `arg1`: a second user of RSI's value made every syscall load it.
        Ok(Syscall::TraceWrite) => trace_write(t, cur, frame).map(|n| ok(frame, n)),
        Ok(guest_call) => guest_manager(t, cur, guest_call, frame),
        Err(_) => Err(SyscallError::NoSuchSyscall),
    };
    result.unwrap_or_else(|error| {
        frame.gprs.rax = to_rax(Err(error));
        NextTask::Same
    })
}

/// The caller goes on with `value` in RAX.
#[inline(always)]
fn ok(frame: &mut Frame, value: u64) -> NextTask {
    frame.gprs.rax = to_rax(Ok(value));
    NextTask::Same
}

#[inline]
fn ring_notify(
    t: &mut Threads,
    cur: ThreadId,
    ring: u64,
    frame: &mut Frame,
) -> Result<NextTask, SyscallError> {
    match ring {
        layout::REPLY_RING_ID => {
            // Replies only act on *other* threads (those waiting for this fault handler), so
            // the caller's live frame and CR3 stay as they are.
            frame.gprs.rax = 0;
            crate::forward::drain_replies(t, cur);
            Ok(NextTask::Same)
        }
        layout::EVENT_RING_ID => Ok(ok(frame, 0)),
        _ => Err(SyscallError::NoSuchRing),
    }
}

#[inline]
fn ring_wait(
    t: &mut Threads,
    cur: ThreadId,
    ring: u64,
    frame: &mut Frame,
) -> Result<NextTask, SyscallError> {
    match ring {
        layout::EVENT_RING_ID => {
            frame.gprs.rax = 0;
            // Answer and sleep in one syscall: first take what the caller queued on its
            // reply ring (as RingNotify would), then wait for events.
            crate::forward::drain_replies(t, cur);
            let thread = t.get_mut(cur);
            if thread.has_events() {
                return Ok(NextTask::Same);
            }
            thread.block_on_events();
            thread.frame = *frame;
            Ok(NextTask::Other)
        }
        layout::REPLY_RING_ID => Err(SyscallError::BadArgument),
        _ => Err(SyscallError::NoSuchRing),
    }
}

/// The guest-manager calls (issue 15): only [`GUEST_MANAGER`] may make them; the checks
/// that protect frames, tables and other domains are `crate::domains`'.
fn guest_manager(
    t: &mut Threads,
    cur: ThreadId,
    call: Syscall,
    frame: &mut Frame,
) -> Result<NextTask, SyscallError> {
    if cur != GUEST_MANAGER {
        return Err(SyscallError::NotPermitted);
    }
    #[cfg(target_os = "none")]
    {
        let value = crate::domains::syscall(t, cur, call, frame)?;
        Ok(ok(frame, value))
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (t, call, frame);
        Err(SyscallError::NoSuchSyscall)
    }
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

fn console_write(t: &mut Threads, cur: ThreadId, ptr: u64, len: u64) -> Result<u64, SyscallError> {
    if len > CONSOLE_WRITE_MAX {
        return Err(SyscallError::BadArgument);
    }
    let mut buf = [0u8; CONSOLE_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    let thread = t.get_mut(cur);
    let space = thread.space.as_ref().ok_or(SyscallError::BadPointer)?;
    space
        .read(ptr, buf)
        .map_err(|BadPointer| SyscallError::BadPointer)?;
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
fn trace_write(t: &Threads, cur: ThreadId, frame: &Frame) -> Result<u64, SyscallError> {
    let (ptr, len) = (frame.gprs.rdi, frame.gprs.rsi);
    if len > ipc::trace::MAX_PAYLOAD as u64 {
        return Err(SyscallError::BadArgument);
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
mod tests {
    use super::*;
    use crate::host::kit::{self, fred, pv};
    use crate::mm::AddressSpace;
    use crate::thread::State;

    /// The table booted, `cur` running, and a frame asking for syscall `number`.
    fn calling(cur: ThreadId, number: Syscall, arg0: u64, arg1: u64) -> (Threads, Frame) {
        let mut t = kit::booted();
        t.set_current(Some(cur));
        let mut frame = kit::user_frame(0x40_1234);
        frame.gprs.rax = number as u64;
        frame.gprs.rdi = arg0;
        frame.gprs.rsi = arg1;
        (t, frame)
    }

    fn rax_error(error: SyscallError) -> u64 {
        to_rax(Err(error))
    }

    #[test]
    fn trace_write_refuses_overlong_frames_and_says_when_the_trace_takes_none() {
        let (mut t, mut frame) = calling(pv(), Syscall::TraceWrite, 0x5000, 256);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::BadArgument));
        // The host nucleus runs with trace=off: a frame is not taken, and that is not an error.
        let (mut t, mut frame) = calling(pv(), Syscall::TraceWrite, 0x5000, 4);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, 0);
        assert_eq!(kit::output(), "");
    }

    #[test]
    fn nop_returns_zero_and_the_caller_goes_on() {
        let (mut t, mut frame) = calling(pv(), Syscall::Nop, 0, 0);
        frame.gprs.rax = Syscall::Nop as u64;
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, 0);
    }

    #[test]
    fn an_unknown_number_is_an_error_code_not_a_fault() {
        let (mut t, mut frame) = calling(pv(), Syscall::Nop, 0, 0);
        frame.gprs.rax = 0x99;
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::NoSuchSyscall));
        assert!(t.get(pv()).runnable());
    }

    #[test]
    fn yield_lets_the_next_thread_run() {
        let (mut t, mut frame) = calling(pv(), Syscall::Yield, 0, 0);
        assert_eq!(handle(&mut t, &mut frame), NextTask::NextInTurn);
        assert_eq!(frame.gprs.rax, 0);
    }

    #[test]
    fn console_write_prints_the_callers_bytes_escaped() {
        let (mut t, mut frame) = calling(pv(), Syscall::ConsoleWrite, 0x5000, 9);
        t.get_mut(pv()).space =
            Some(AddressSpace::fake(0x9000).with_bytes(0x5000, b"hi\x1b[2J\nok"));
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, 9);
        // Every line gets the caller's name and its own newline (issue 13).
        assert_eq!(kit::output(), "pv-server: hi\\x1b[2J\npv-server: ok\n");
    }

    #[test]
    fn console_write_takes_only_what_the_tick_allows() {
        let junk = [1u8; 1024];
        let (mut t, mut frame) = calling(pv(), Syscall::ConsoleWrite, 0x5000, 1024);
        t.get_mut(pv()).space = Some(AddressSpace::fake(0x9000).with_bytes(0x5000, &junk));
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        let taken = frame.gprs.rax;
        assert!(taken > 0 && 12 + taken * 4 <= ipc::console::WRITE_BYTES_MAX as u64);
        kit::output();
        // The budget is spent: the next write takes nothing until the ticks refill it.
        frame.gprs.rax = Syscall::ConsoleWrite as u64;
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, 0);
        assert_eq!(kit::output(), "");
    }

    #[test]
    fn console_write_refuses_unmapped_and_overlong_buffers() {
        let (mut t, mut frame) = calling(pv(), Syscall::ConsoleWrite, 0x6000, 4);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::BadPointer));
        let (mut t, mut frame) = calling(pv(), Syscall::ConsoleWrite, 0x6000, 4096);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::BadArgument));
        assert_eq!(kit::output(), "");
    }

    #[test]
    fn ring_wait_on_an_empty_ring_blocks_with_the_frame_saved() {
        let (mut t, mut frame) = calling(fred(), Syscall::RingWait, layout::EVENT_RING_ID, 0);
        // The boot announcements are still queued: the caller goes on at once.
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        kit::recv_all(&mut kit::server_ends("fred-server"));
        frame.gprs.rax = Syscall::RingWait as u64;
        assert_eq!(handle(&mut t, &mut frame), NextTask::Other);
        let thread = t.get(fred());
        assert_eq!(thread.state(), State::WaitingForEvents);
        assert_eq!(thread.frame.ret.rip, 0x40_1234);
        assert_eq!(thread.frame.gprs.rax, 0);
    }

    #[test]
    fn ring_ids_are_checked() {
        let (mut t, mut frame) = calling(pv(), Syscall::RingWait, layout::REPLY_RING_ID, 0);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::BadArgument));
        let (mut t, mut frame) = calling(pv(), Syscall::RingNotify, 77, 0);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert_eq!(frame.gprs.rax, rax_error(SyscallError::NoSuchRing));
    }

    #[test]
    fn exit_stops_the_caller() {
        let (mut t, mut frame) = calling(pv(), Syscall::Exit, (-2i64) as u64, 0);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Other);
        assert!(t.get(pv()).is_absent());
        assert_eq!(
            kit::output(),
            "nucleus: pv-server exited with code -2\nnucleus: pv-server stopped\n"
        );
    }

    #[test]
    fn without_a_current_thread_nothing_happens() {
        let (mut t, mut frame) = calling(pv(), Syscall::Exit, 0, 0);
        t.set_current(None);
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
        assert!(t.get(pv()).runnable());
    }
}
