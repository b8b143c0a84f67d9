//! The syscall table: what a server's `syscall` does (type 7 vector 1 under FRED, LSTAR
//! under IDT). Each handler returns what runs next, or the error the caller gets in RAX.
use crate::mm::BadPointer;
use crate::text::Escaped;
use crate::thread::sched::NextTask;
use crate::thread::{ThreadId, Threads};
use bsp_x86_64::frame::Frame;
use ipc::layout;
use ipc::syscall::{Syscall, SyscallError, to_rax};

/// Longest console write.
const CONSOLE_WRITE_MAX: u64 = 1024;

/// A `syscall` from the current thread: its number in RAX, arguments in RDI and RSI, the
/// result back in RAX.
#[inline]
pub fn handle(t: &mut Threads, frame: &mut Frame) -> NextTask {
    let Some(cur) = t.current() else {
        return NextTask::Same;
    };
    t.get_mut(cur).made_syscall();
    let (number, arg0, arg1) = (frame.gprs.rax, frame.gprs.rdi, frame.gprs.rsi);
    let result = match Syscall::try_from(number) {
        Ok(Syscall::ConsoleWrite) => console_write(t, cur, arg0, arg1).map(Done::Value),
        Ok(Syscall::Nop) => Ok(Done::Value(0)),
        Ok(Syscall::Yield) => Ok(Done::Then(NextTask::NextInTurn)),
        Ok(Syscall::RingNotify) => ring_notify(t, cur, arg0),
        Ok(Syscall::RingWait) => ring_wait(t, cur, arg0, frame),
        Ok(Syscall::Exit) => Ok(Done::Then(exit(t, cur, arg0))),
        Err(_) => Err(SyscallError::NoSuchSyscall),
    };
    match result {
        Ok(Done::Value(value)) => {
            frame.gprs.rax = to_rax(Ok(value));
            NextTask::Same
        }
        Ok(Done::Then(next)) => {
            frame.gprs.rax = 0;
            next
        }
        Err(error) => {
            frame.gprs.rax = to_rax(Err(error));
            NextTask::Same
        }
    }
}

/// How a syscall that did not fail ends.
enum Done {
    /// The caller goes on with this in RAX.
    Value(u64),
    /// RAX = 0, and this runs next.
    Then(NextTask),
}

fn ring_notify(t: &mut Threads, cur: ThreadId, ring: u64) -> Result<Done, SyscallError> {
    match ring {
        layout::REPLY_RING_ID => {
            // Replies only act on *other* threads (those waiting for this fault handler), so
            // the caller's live frame and CR3 stay as they are.
            crate::forward::drain_replies(t, cur);
            Ok(Done::Then(NextTask::Same))
        }
        layout::EVENT_RING_ID => Ok(Done::Value(0)),
        _ => Err(SyscallError::NoSuchRing),
    }
}

fn ring_wait(
    t: &mut Threads,
    cur: ThreadId,
    ring: u64,
    frame: &mut Frame,
) -> Result<Done, SyscallError> {
    match ring {
        layout::EVENT_RING_ID => {
            frame.gprs.rax = 0;
            // Answer and sleep in one syscall: first take what the caller queued on its
            // reply ring (as RingNotify would), then wait for events.
            crate::forward::drain_replies(t, cur);
            if t.get(cur).has_events() {
                return Ok(Done::Then(NextTask::Same));
            }
            let thread = t.get_mut(cur);
            thread.block_on_events();
            thread.frame = *frame;
            Ok(Done::Then(NextTask::Other))
        }
        layout::REPLY_RING_ID => Err(SyscallError::BadArgument),
        _ => Err(SyscallError::NoSuchRing),
    }
}

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

fn console_write(t: &Threads, cur: ThreadId, ptr: u64, len: u64) -> Result<u64, SyscallError> {
    if len > CONSOLE_WRITE_MAX {
        return Err(SyscallError::BadArgument);
    }
    let mut buf = [0u8; CONSOLE_WRITE_MAX as usize];
    let buf = &mut buf[..len as usize];
    let space = t.get(cur).space.as_ref().ok_or(SyscallError::BadPointer)?;
    space
        .read(ptr, buf)
        .map_err(|BadPointer| SyscallError::BadPointer)?;
    // Printable ASCII and newlines pass; anything else is escaped so a server cannot drive
    // the terminal.
    for line in buf.split_inclusive(|&b| b == b'\n') {
        let (text, newline) = match line.split_last() {
            Some((b'\n', text)) => (text, true),
            _ => (line, false),
        };
        print!("{}", Escaped(text));
        if newline {
            println!();
        }
    }
    Ok(len)
}
