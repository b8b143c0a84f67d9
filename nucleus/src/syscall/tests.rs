//! The syscall table over the host stand-ins: codes back in RAX, or the caller faults.
use super::*;
use crate::host::kit::{self, fred, pv};
use crate::mm::AddressSpace;
use crate::thread::State;
use ipc::dump::RegisterDump;

/// A capture that renders no dump (the host has no `fatal`).
fn no_dump(prefix: &str, _frame: &Frame) -> RegisterDump {
    RegisterDump {
        prefix: ipc::dump::Text::truncated(prefix),
        ..RegisterDump::default()
    }
}

/// The table for a caller inside the ABI: what runs next.
fn handle(t: &mut Threads, frame: &mut Frame) -> NextTask {
    super::handle(t, frame).expect("a syscall, not the caller's fault")
}

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
    t.get_mut(pv()).space = Some(AddressSpace::fake(0x9000).with_bytes(0x5000, b"hi\x1b[2J\nok"));
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
    // Ticks that only counted (they landed inside the nucleus: no `lifecycle::tick`) refill
    // it all the same, one tick's worth each: the writer is not starved.
    let mut ticks = 0;
    while frame.gprs.rax == 0 && ticks < 4 {
        crate::timer::tick();
        ticks += 1;
        frame.gprs.rax = Syscall::ConsoleWrite as u64;
        assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
    }
    assert!(frame.gprs.rax > 0, "nothing taken after {ticks} ticks");
    kit::output();
    frame.gprs.rax = Syscall::ConsoleWrite as u64;
    assert_eq!(handle(&mut t, &mut frame), NextTask::Same);
    assert_eq!(frame.gprs.rax, 0, "no more within the same tick");
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
    assert_eq!(t.frame(fred()).ret.rip, 0x40_1234);
    assert_eq!(t.frame(fred()).gprs.rax, 0);
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

#[test]
fn a_syscall_from_compatibility_mode_is_the_callers_fault_for_its_fault_handler() {
    let (mut t, mut frame) = calling(pv(), Syscall::Nop, 0, 0);
    frame.ret.ss = frame.ret.ss.with_64bit(false);
    assert_eq!(
        super::handle(&mut t, &mut frame),
        Err(Fault::CompatibilityModeSyscall)
    );
    // Not a syscall: RAX untouched, the watchdog not reset.
    assert_eq!(frame.gprs.rax, Syscall::Nop as u64);
    // `dispatch` forwards the SYSCALL event itself, like any fault: dump first.
    let mut fred_ends = kit::server_ends("fred-server");
    kit::recv_all(&mut fred_ends);
    let event = Fault::CompatibilityModeSyscall.event(&frame);
    assert_eq!(
        crate::forward::event(&mut t, &frame, pv(), &event, &no_dump),
        NextTask::Other
    );
    let messages = kit::recv_all(&mut fred_ends);
    assert!(matches!(
        messages.first(),
        Some(ipc::NucleusMessage::Dump(_))
    ));
    let Some(ipc::NucleusMessage::Event { token, event }) = messages.last() else {
        panic!("expected the event last, got {messages:?}");
    };
    assert_eq!(
        (event.kind, event.rip, event.owner, event.from_ring),
        (ipc::EventKind::Syscall, 0x40_1234, pv().owner(), 3)
    );
    assert_eq!(t.get(pv()).state(), State::WaitingForReply(*token));
}

#[test]
fn a_handlers_error_code_is_recoverable() {
    assert_eq!(
        UserError::from(SyscallError::BadPointer),
        UserError::Recoverable(SyscallError::BadPointer)
    );
}
