//! The fast path's decisions: what it completes, what it declines untouched.
use super::*;
use crate::host::kit::{self, fred, pv};
use crate::thread::sched::{self, NextTask, Tick};
use bsp_x86_64::entry::sysret_safe;

/// A server's save area as `syscall_entry` leaves it for the fast path: number in RAX.
fn asking(number: u64) -> Frame {
    let mut frame = kit::user_frame(0x40_1234);
    frame.gprs.rax = number;
    frame.gprs.rdi = 0x1111;
    frame.gprs.rsi = 0x2222;
    frame
}

/// A server's credit as `thread::server_syscall_credit` finds it.
fn server_credit() -> &'static AtomicBool {
    Box::leak(Box::new(AtomicBool::new(false)))
}

#[test]
fn a_servers_nop_completes_with_zero_and_earns_a_credit() {
    let credit = server_credit();
    let mut frame = asking(Syscall::Nop as u64);
    let before = frame;
    assert!(complete(&mut frame, || Some(credit), |_| true));
    assert_eq!(frame.gprs.rax, 0);
    // RAX is the only register the fast path writes.
    frame.gprs.rax = before.gprs.rax;
    assert_eq!(frame, before);
    assert!(credit.load(Ordering::Relaxed));
}

#[test]
fn every_other_call_is_declined_untouched() {
    let credit = server_credit();
    for number in [
        Syscall::ConsoleWrite as u64,
        Syscall::Yield as u64,
        Syscall::RingNotify as u64,
        Syscall::RingWait as u64,
        Syscall::Exit as u64,
        Syscall::TraceWrite as u64,
        0x99,
        u64::MAX,
    ] {
        let mut frame = asking(number);
        let before = frame;
        assert!(
            !complete(&mut frame, || Some(credit), |_| true),
            "number {number:#x}"
        );
        assert_eq!(frame, before, "number {number:#x}");
    }
    assert!(!credit.load(Ordering::Relaxed));
}

#[test]
fn a_guest_vcpus_syscall_is_a_hypercall_and_declined() {
    // A guest's RAX = 5 is a hypercall number, not our Nop: the general path forwards it.
    let mut frame = asking(Syscall::Nop as u64);
    let before = frame;
    assert!(!complete(&mut frame, || None, |_| true));
    assert_eq!(frame, before);
}

#[test]
fn a_return_sysretq_cannot_make_is_declined() {
    let credit = server_credit();
    let mut frame = asking(Syscall::Nop as u64);
    // A SYSCALL as the last two bytes below the hole: RCX is the first non-canonical byte.
    frame.ret.rip = 0x0000_8000_0000_0000;
    let before = frame;
    assert!(!complete(
        &mut frame,
        || Some(credit),
        |f| sysret_safe(f.ret.rip)
    ));
    assert_eq!(frame, before);
    assert!(!credit.load(Ordering::Relaxed));
    frame.ret.rip = 0x0000_7fff_ffff_fffe;
    assert!(complete(
        &mut frame,
        || Some(credit),
        |f| sysret_safe(f.ret.rip)
    ));
}

#[test]
fn sysret_is_safe_only_to_the_user_half() {
    for (rip, safe) in [
        (0, true),
        (0x40_1234, true),
        (0x0000_7fff_ffff_ffff, true),
        (0x0000_8000_0000_0000, false),
        (0x0000_8000_0000_0001, false),
        (0xffff_7fff_ffff_ffff, false),
        // Canonical, but the nucleus' half: never a ring-3 caller's next instruction.
        (0xffff_8000_0000_0000, false),
        (u64::MAX, false),
    ] {
        assert_eq!(sysret_safe(rip), safe, "{rip:#x}");
    }
}

#[test]
fn only_the_server_slots_areas_have_a_credit() {
    for (slot, server) in [(0usize, true), (1, true), (2, false), (3, false)] {
        let area = crate::thread::static_area_ptr(slot);
        assert_eq!(
            crate::thread::server_syscall_credit(area).is_some(),
            server,
            "slot {slot}"
        );
    }
    let frame = Frame::ZERO;
    assert!(crate::thread::server_syscall_credit(&frame).is_none());
}

#[test]
fn fast_syscalls_keep_the_watchdog_off_a_thread_that_makes_them() {
    let mut t = kit::booted();
    let _ = sched::start(&mut t).expect("a runnable thread");
    assert_eq!(t.current(), Some(fred()));
    let frame = *t.frame(fred());
    // A server that only ever makes fast syscalls between ticks is not hung.
    for _ in 0..sched::HUNG_TICKS * 2 {
        t.syscall_credit(fred()).store(true, Ordering::Relaxed);
        assert_eq!(sched::tick(&mut t, &frame), Tick::Run(NextTask::NextInTurn));
    }
    assert_eq!(kit::output(), "");
}

#[test]
fn a_credit_is_its_own_threads() {
    let mut t = kit::booted();
    let _ = sched::start(&mut t).expect("a runnable thread");
    let frame = *t.frame(fred());
    // pv-server's fast syscalls do not keep fred-server, which makes none, alive.
    for _ in 0..sched::HUNG_TICKS {
        t.syscall_credit(pv()).store(true, Ordering::Relaxed);
        assert_eq!(sched::tick(&mut t, &frame), Tick::Run(NextTask::NextInTurn));
    }
    assert_eq!(sched::tick(&mut t, &frame), Tick::Hung(fred()));
    // pv-server's credit waits for its own tick.
    assert!(t.take_syscall_credit(pv()));
}
