//! Forwarding and replies, end to end over the host stand-ins.
use super::*;
use crate::host::kit::{self, fred, pv};
use crate::thread::sched::NextTask;
use crate::thread::{State, ThreadId, Threads};
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use ipc::dump::RegisterDump;
use ipc::message::{Reply, ServerMessage};
use ipc::{Event, EventKind, NucleusMessage};
use xen_abi::layout::selector::{FLAT_RING3_CS64, FLAT_RING3_SS64};

fn no_dump(prefix: &str, _frame: &Frame) -> RegisterDump {
    RegisterDump {
        prefix: ipc::dump::Text::truncated(prefix),
        ..RegisterDump::default()
    }
}

fn event_of(frame: &Frame, kind: EventKind) -> Event {
    Event {
        cpu: 0,
        kind,
        event_data: 0,
        rip: frame.ret.rip,
        cs: frame.ret.cs.selector().raw(),
        rflags: frame.ret.rflags,
        rsp: frame.ret.rsp,
        ss: frame.ret.ss.selector().raw(),
        from_ring: 3,
        insn_len: 0,
        owner: 0,
    }
}

/// The table booted with both threads' boot messages drained, and `cur` running.
fn running(cur: ThreadId) -> (Threads, kit::ServerEnds, kit::ServerEnds) {
    let mut t = kit::booted();
    let mut fred_ends = kit::server_ends("fred-server");
    let pv_ends = kit::server_ends("pv-server");
    kit::recv_all(&mut fred_ends);
    t.set_current(Some(cur));
    (t, fred_ends, pv_ends)
}

/// Domain 1's vCPU started at `rip` and made current.
fn guest_running(t: &mut Threads, rip: u64) -> ThreadId {
    let guest = t.guest_id(1).unwrap();
    let mut frame = kit::user_frame(rip);
    frame.ret.cs = CsQword::from_raw(u64::from(FLAT_RING3_CS64));
    frame.ret.ss = SsQword::from_raw(u64::from(FLAT_RING3_SS64));
    t.get_mut(guest)
        .start_guest(bsp_x86_64::paging::PhysAddr::new(0x7000), frame);
    t.set_current(Some(guest));
    guest
}

#[test]
fn a_guest_syscall_is_a_hypercall_for_pv_server_and_its_return_sets_rax() {
    let (mut t, mut fred_ends, mut pv_ends) = running(pv());
    kit::recv_all(&mut pv_ends);
    let guest = guest_running(&mut t, 0x1002);
    // The IDT's SYSCALL stub leaves the servers' selectors in the frame.
    let mut frame = kit::user_frame(0x1002);
    frame.gprs.rax = 17;
    frame.gprs.rsi = 0x1234;
    frame.gprs.r8 = 5;
    assert_eq!(
        crate::syscall::handle(&mut t, &mut frame),
        Ok(NextTask::Other)
    );
    let messages = kit::recv_all(&mut pv_ends);
    let [NucleusMessage::Hypercall(call)] = messages.as_slice() else {
        panic!("expected one hypercall, got {messages:?}");
    };
    assert_eq!(
        (
            call.domain,
            call.number,
            call.args[1],
            call.args[4],
            call.rip
        ),
        (1, 17, 0x1234, 5, 0x1002)
    );
    assert_eq!(t.get(guest).state(), State::WaitingForReply(call.token));
    assert_eq!(t.frame(guest).ret.cs.selector().raw(), FLAT_RING3_CS64);
    assert_eq!(t.frame(guest).ret.ss.selector().raw(), FLAT_RING3_SS64);
    assert!(
        kit::recv_all(&mut fred_ends).is_empty(),
        "guests are pv-server's"
    );
    // fred-server cannot answer for a guest; pv-server can.
    kit::send(
        &mut fred_ends,
        &ServerMessage::Reply(Reply::Return {
            token: call.token,
            rax: 1,
        }),
    );
    reply::drain_replies(&mut t, fred());
    assert_eq!(t.get(guest).state(), State::WaitingForReply(call.token));
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(Reply::Return {
            token: call.token,
            rax: 0x4_0015,
        }),
    );
    reply::drain_replies(&mut t, pv());
    assert!(t.get(guest).runnable());
    assert_eq!(t.frame(guest).gprs.rax, 0x4_0015);
}

#[test]
fn pv_server_may_not_answer_for_a_server() {
    let (mut t, _, mut pv_ends) = running(fred());
    assert_eq!(int3(&mut t, pv()), NextTask::Other);
    let State::WaitingForReply(token) = t.get(pv()).state() else {
        panic!("pv-server should wait");
    };
    kit::output();
    kit::send(&mut pv_ends, &ServerMessage::Reply(Reply::Resume { token }));
    reply::drain_replies(&mut t, pv());
    assert!(kit::output().contains("nucleus: pv-server: unexpected message Reply"));
}

#[test]
fn a_guest_fault_goes_to_pv_server_with_its_registers_and_the_dump_on_request() {
    let (mut t, mut fred_ends, mut pv_ends) = running(pv());
    kit::recv_all(&mut pv_ends);
    let guest = guest_running(&mut t, 0x2000);
    let mut frame = *t.frame(guest);
    frame.gprs.rcx = 0xc0;
    frame.gprs.r11 = 0x11;
    frame.gprs.r15 = 0xf15;
    let ev = event_of(
        &frame,
        EventKind::Exception {
            vector: 14,
            error_code: 7,
        },
    );
    assert_eq!(event(&mut t, &frame, guest, &ev, &no_dump), NextTask::Other);
    // One message: the event with the registers, no dump.
    let messages = kit::recv_all(&mut pv_ends);
    let [NucleusMessage::GuestEvent { token, event, regs }] = messages.as_slice() else {
        panic!("expected one guest event, got {messages:?}");
    };
    assert_eq!(event.owner, ipc::domain::guest_owner(1));
    use ipc::message::Gpr;
    assert_eq!(
        (regs.get(Gpr::Rcx), regs.get(Gpr::R11), regs.get(Gpr::R15)),
        (0xc0, 0x11, 0xf15)
    );
    assert!(kit::recv_all(&mut fred_ends).is_empty());
    // pv-server ends the guest: it asks for the dump and gets it before the same event.
    let token = *token;
    kit::send(
        &mut pv_ends,
        &ServerMessage::Reply(Reply::SendDump { token }),
    );
    reply::drain_replies(&mut t, pv());
    assert_eq!(t.get(guest).state(), State::WaitingForReply(token));
    let messages = kit::recv_all(&mut pv_ends);
    assert!(matches!(messages.first(), Some(NucleusMessage::Dump(_))));
    let Some(NucleusMessage::Event {
        token: again,
        event,
    }) = messages.last()
    else {
        panic!("expected the event last, got {messages:?}");
    };
    assert_eq!((*again, event.owner), (token, ipc::domain::guest_owner(1)));
}

#[test]
fn the_guests_end_with_their_manager() {
    let (mut t, _, _) = running(pv());
    let guest = guest_running(&mut t, 0x1000);
    assert_eq!(t.slots_in_use(), 3);
    crate::lifecycle::kill(&mut t, pv());
    assert!(t.get(guest).is_absent());
    assert_eq!(t.slots_in_use(), 2);
    assert!(kit::output().contains("nucleus: 1 guest domain(s) ended with their manager"));
}

fn int3(t: &mut Threads, cur: ThreadId) -> NextTask {
    let frame = kit::user_frame(0x40_0100);
    let ev = event_of(&frame, EventKind::SoftwareException { vector: 3 });
    event(t, &frame, cur, &ev, &no_dump)
}

#[test]
fn int3_goes_to_the_fault_handler_without_a_dump_and_the_thread_waits() {
    let (mut t, mut fred_ends, _) = running(pv());
    assert_eq!(int3(&mut t, pv()), NextTask::Other);
    let messages = kit::recv_all(&mut fred_ends);
    let [NucleusMessage::Event { token, event }] = messages.as_slice() else {
        panic!("expected one event, got {messages:?}");
    };
    assert_eq!(event.owner, pv().owner());
    assert_eq!(event.rip, 0x40_0100);
    assert_eq!(t.get(pv()).state(), State::WaitingForReply(*token));
    assert!(t.get(pv()).pending_dump.is_none());
    assert_eq!(t.frame(pv()).ret.rip, 0x40_0100);
    // fred-server's answer lets it run again.
    kit::send(
        &mut fred_ends,
        &ServerMessage::Reply(Reply::Resume { token: *token }),
    );
    reply::drain_replies(&mut t, fred());
    assert!(t.get(pv()).runnable());
    assert!(t.get(pv()).pending.is_none());
}

#[test]
fn a_fault_sends_the_dump_first() {
    let (mut t, mut fred_ends, _) = running(pv());
    let frame = kit::user_frame(0x40_0200);
    let ev = event_of(
        &frame,
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
    );
    assert_eq!(event(&mut t, &frame, pv(), &ev, &no_dump), NextTask::Other);
    let messages = kit::recv_all(&mut fred_ends);
    assert!(matches!(messages.first(), Some(NucleusMessage::Dump(_))));
    assert!(matches!(
        messages.last(),
        Some(NucleusMessage::Event { .. })
    ));
    assert_eq!(
        t.get(pv()).pending_dump.as_ref().unwrap().prefix.as_str(),
        "fred-server"
    );
}

#[test]
fn a_fault_of_a_thread_without_handler_is_reported_and_restarted_within_its_budget() {
    use crate::lifecycle::RESTART_BUDGET;
    let (mut t, _, _) = running(fred());
    for restart in 1..=RESTART_BUDGET {
        assert_eq!(int3(&mut t, fred()), NextTask::Other);
        let out = kit::output();
        assert!(out.contains(
            "nucleus: fred-server faulted and fred-server faulted itself: the nucleus reports it"
        ));
        assert!(out.contains(&format!(
            "nucleus: restarting fred-server (restart {restart})"
        )));
        // The first restart is at once; each later one waits out its backoff.
        assert_eq!(t.get(fred()).is_restarting(), restart > 1);
        while t.get(fred()).is_restarting() {
            crate::timer::tick();
            crate::lifecycle::tick(&mut t);
        }
        assert_eq!(t.get(fred()).generation(), restart);
        t.set_current(Some(fred()));
    }
    kit::output();
    assert_eq!(int3(&mut t, fred()), NextTask::Other);
    assert!(kit::output().contains(
        "nucleus: gave up on fred-server (5 restarts in 60 s did not help); it stays down"
    ));
    assert!(t.get(fred()).is_absent() && !t.get(fred()).is_restarting());
    crate::timer::tick();
    crate::lifecycle::tick(&mut t);
    assert!(t.get(fred()).is_absent(), "it stays down");
}

#[test]
fn with_its_handler_gone_a_fault_is_the_nucleus_to_handle() {
    let (mut t, _, _) = running(pv());
    crate::lifecycle::kill(&mut t, fred());
    kit::output();
    assert_eq!(int3(&mut t, pv()), NextTask::Other);
    let out = kit::output();
    assert!(out.contains(
        "nucleus: pv-server faulted and fred-server is not running: the nucleus reports it"
    ));
    assert!(out.contains("nucleus: restarting pv-server (restart 1)"));
    assert!(t.get(pv()).runnable());
}

#[test]
fn an_unanswered_event_goes_to_the_restarted_handler() {
    let (mut t, mut fred_ends, _) = running(pv());
    assert_eq!(int3(&mut t, pv()), NextTask::Other);
    let sent = kit::recv_all(&mut fred_ends);
    // fred-server crashes before answering: the nucleus restarts it and re-sends.
    t.set_current(Some(fred()));
    assert_eq!(int3(&mut t, fred()), NextTask::Other);
    assert!(
        kit::output()
            .contains("nucleus: pv-server's unanswered event handed to the new fred-server")
    );
    let mut new_fred = kit::server_ends("fred-server");
    let resent = kit::recv_all(&mut new_fred);
    assert_eq!(resent.last(), sent.last());
    assert!(matches!(t.get(pv()).state(), State::WaitingForReply(_)));
}

#[test]
fn an_unanswered_event_without_any_handler_left_restarts_the_thread() {
    let (mut t, _, _) = running(pv());
    assert_eq!(int3(&mut t, pv()), NextTask::Other);
    crate::lifecycle::kill(&mut t, fred());
    kit::output();
    rehome_pending(&mut t, fred());
    assert!(kit::output().contains(
        "nucleus: pv-server's event has no fred-server to answer it; restarting pv-server"
    ));
    assert!(t.get(pv()).runnable());
}

#[test]
fn a_full_handler_ring_gets_none_of_a_dump_and_its_event_and_counts_them() {
    let (mut t, mut fred_ends, _) = running(pv());
    // fred-server takes nothing: fill its ring with pings.
    let mut n = 0;
    while t
        .send(
            fred(),
            &NucleusMessage::Ping {
                token: ipc::Token(n),
            },
        )
        .is_ok()
    {
        n += 1;
    }
    let frame = kit::user_frame(0x40_0200);
    let ev = event_of(
        &frame,
        EventKind::Exception {
            vector: 6,
            error_code: 0,
        },
    );
    kit::output();
    assert_eq!(event(&mut t, &frame, pv(), &ev, &no_dump), NextTask::Other);
    let out = kit::output();
    assert!(out.contains(
        "nucleus: fred-server's event ring is full: pv-server's fault is not forwarded ("
    ));
    assert!(out.contains("nucleus: ----[ register dump"));
    assert!(out.contains("nucleus: restarting pv-server (restart 1)"));
    // Nothing but the pings went in: no dump part without its event.
    let messages = kit::recv_all(&mut fred_ends);
    assert_eq!(messages.len() as u64, n);
    assert!(
        messages
            .iter()
            .all(|m| matches!(m, NucleusMessage::Ping { .. }))
    );
    // The refused ping, the dump's part and the event (and the restart's ServerStarted).
    assert!(fred_ends.events.dropped_by_producer() >= 3);
}

/// Domain 1's vCPU running in kernel mode, pv-server asleep in `RingWait`, the vCPU's save
/// area the live frame with a `syscall` for `xen_version` as the stub leaves it.
fn hypercall_of_guest(
    waiting: bool,
) -> (
    Threads,
    kit::ServerEnds,
    ThreadId,
    Result<crate::thread::sched::ExitFrame, hypercall::Fallback>,
) {
    let (mut t, _, mut pv_ends) = running(pv());
    kit::recv_all(&mut pv_ends);
    if waiting {
        t.get_mut(pv()).block_on_events();
    }
    let guest = guest_running(&mut t, 0x1002);
    let frame = t.frame_mut(guest);
    *frame = kit::user_frame(0x1002);
    frame.gprs.rax = 17;
    frame.gprs.rdi = 0;
    frame.gprs.rsi = 0x1234;
    frame.gprs.r9 = 9;
    frame.ret.rsp = 0x1e000;
    let mut live = t.live_area(guest);
    let result = t.with_live(&mut live, hypercall::fast);
    (t, pv_ends, guest, result)
}

#[test]
fn a_hypercall_goes_into_the_waiting_managers_ring_and_pv_server_runs_next() {
    let (t, mut pv_ends, guest, result) = hypercall_of_guest(true);
    let exit = result.expect("the fast path");
    assert_eq!(exit, t.area_ptr(pv()));
    assert_eq!(t.current(), Some(pv()));
    assert!(t.get(pv()).runnable());
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(pv()) as u64);
    let messages = kit::recv_all(&mut pv_ends);
    let [NucleusMessage::Hypercall(call)] = messages.as_slice() else {
        panic!("expected one hypercall, got {messages:?}");
    };
    assert_eq!(
        (call.domain, call.number, call.args, call.rip, call.rsp),
        (1, 17, [0, 0x1234, 0, 0, 0, 9], 0x1002, 0x1e000)
    );
    // As the general path leaves it: waiting for that token, on Xen's flat selectors.
    assert_eq!(t.get(guest).state(), State::WaitingForReply(call.token));
    assert_eq!(t.frame(guest).ret.cs.selector().raw(), FLAT_RING3_CS64);
    assert_eq!(t.frame(guest).ret.ss.selector().raw(), FLAT_RING3_SS64);
    assert!(t.get(guest).pending.is_none());
}

#[test]
fn a_hypercall_with_pv_server_awake_is_left_to_the_general_path_untouched() {
    let (t, mut pv_ends, guest, result) = hypercall_of_guest(false);
    assert_eq!(result, Err(hypercall::Fallback::NotWaiting));
    assert_eq!(t.current(), Some(guest));
    assert!(t.get(guest).runnable());
    assert!(kit::recv_all(&mut pv_ends).is_empty());
}

#[test]
fn a_servers_syscall_is_no_hypercall() {
    let (mut t, _, _) = running(pv());
    t.get_mut(fred()).block_on_events();
    let mut live = t.live_area(pv());
    let result = t.with_live(&mut live, hypercall::fast);
    assert_eq!(result, Err(hypercall::Fallback::NotGuest));
}
