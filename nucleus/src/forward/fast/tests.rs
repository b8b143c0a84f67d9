//! The fast path's one way through and each of its fallbacks, over the host stand-ins.
use super::*;
use crate::host::kit::{self, fred, pv};
use crate::thread::{State, ThreadId};
use bsp_x86_64::frame::{EventType, SsQword};
use bsp_x86_64::gdt;
use ipc::dump::RegisterDump;
use ipc::message::{Reply, ServerMessage};
use ipc::{Event, NucleusMessage};

/// pv-server's `int3` as the IDT stub (or FRED) leaves it: type 6, vector 3, ring 3.
fn int3_frame(rip: u64) -> Frame {
    let mut frame = kit::user_frame(rip);
    frame.ret.ss = SsQword::new(gdt::USER_DS, EventType::SoftwareException, 3).with_64bit(true);
    frame.ret.rsp = 0x7fff_f000;
    frame.ret.rflags = 0x202;
    frame.gprs.rbx = 0xb0b;
    frame
}

/// Booted, fred-server asleep in `RingWait` (its boot messages taken), `cur` running.
fn handler_waiting(cur: ThreadId) -> (Threads, kit::ServerEnds) {
    let mut t = kit::booted();
    let mut fred_ends = kit::server_ends("fred-server");
    kit::recv_all(&mut fred_ends);
    t.get_mut(fred()).block_on_events();
    t.set_current(Some(cur));
    (t, fred_ends)
}

/// The breakpoint of the current thread, its save area the live frame as the stub leaves it.
fn breakpoint_of_current(t: &mut Threads, rip: u64) -> Result<ExitFrame, Fallback> {
    let cur = t.current().expect("a current thread");
    *t.frame_mut(cur) = int3_frame(rip);
    let mut live = t.live_area(cur);
    t.with_live(&mut live, breakpoint)
}

/// The raw records in a thread's event ring.
fn records(ends: &mut kit::ServerEnds) -> Vec<Vec<u8>> {
    core::iter::from_fn(|| {
        ends.events
            .pop_with(|record| record.to_vec())
            .expect("event ring intact")
    })
    .collect()
}

fn no_dump(prefix: &str, _frame: &Frame) -> RegisterDump {
    RegisterDump {
        prefix: ipc::dump::Text::truncated(prefix),
        ..RegisterDump::default()
    }
}

#[test]
fn an_int3_goes_into_the_waiting_handlers_ring_and_the_handler_runs_next() {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    let exit = breakpoint_of_current(&mut t, 0x40_0100).expect("the fast path");
    assert_eq!(exit, t.area_ptr(fred()));
    assert_eq!(t.current(), Some(fred()));
    assert!(t.get(fred()).runnable());
    let root = t.get(fred()).space.as_ref().unwrap().root().as_u64();
    assert_eq!(crate::host::mm::loaded_root(), root);
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(fred()) as u64);
    let (cs, ss) = crate::thread::SERVER_SEGMENTS;
    assert_eq!(t.frame(fred()).ret.cs.raw(), u64::from(cs));
    assert_eq!(t.frame(fred()).ret.ss.raw(), u64::from(ss));
    let messages = kit::recv_all(&mut fred_ends);
    let [NucleusMessage::Event { token, event }] = messages.as_slice() else {
        panic!("expected one event, got {messages:?}");
    };
    assert_eq!(event.kind, EventKind::SoftwareException { vector: 3 });
    assert_eq!(
        (event.owner, event.rip, event.rsp, event.from_ring),
        (pv().owner(), 0x40_0100, 0x7fff_f000, 3)
    );
    let thread = t.get(pv());
    assert_eq!(thread.state(), State::WaitingForReply(*token));
    assert_eq!(
        thread.pending.map(|p| (p.token, p.event)),
        Some((*token, *event))
    );
    assert!(thread.pending_dump.is_none());
    // Its context stays where the stub saved it, for the answer to resume.
    assert_eq!(t.frame(pv()).gprs.rbx, 0xb0b);
    kit::send(
        &mut fred_ends,
        &ServerMessage::Reply(Reply::Resume { token: *token }),
    );
    crate::forward::drain_replies(&mut t, fred());
    assert!(t.get(pv()).runnable());
    assert!(t.get(pv()).pending.is_none());
}

#[test]
fn the_fast_path_leaves_what_the_general_path_leaves() {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    breakpoint_of_current(&mut t, 0x40_0100).expect("the fast path");
    let fast = records(&mut fred_ends);
    let fast_pending = t.get(pv()).pending.map(|p| (p.token, p.event));

    let (mut t, mut fred_ends) = handler_waiting(pv());
    let frame = int3_frame(0x40_0100);
    let decoded: Event = frame.event(0, 0).expect("decodable");
    assert_eq!(
        crate::forward::event(&mut t, &frame, pv(), &decoded, &no_dump),
        crate::thread::sched::NextTask::Other
    );
    assert_eq!(records(&mut fred_ends), fast, "byte for byte");
    assert_eq!(
        t.get(pv()).pending.map(|p| (p.token, p.event)),
        fast_pending
    );
}

/// A fallback: the event goes on to the general path with nothing changed.
fn assert_untouched(t: &mut Threads, fallback: Fallback) {
    let cur = t.current();
    let token = t.upcoming_token();
    let states: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    assert_eq!(breakpoint_of_current(t, 0x40_0100), Err(fallback));
    assert_eq!(t.current(), cur);
    assert_eq!(t.upcoming_token(), token, "no token taken");
    let after: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    assert_eq!(after, states);
    assert!(t.get(pv()).pending.is_none());
}

#[test]
fn a_handler_that_is_not_asleep_in_ring_wait_gets_it_the_general_way() {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    t.get_mut(fred()).wake();
    assert_untouched(&mut t, Fallback::NotWaiting);
    assert!(records(&mut fred_ends).is_empty());
}

#[test]
fn a_handler_on_another_cpu_gets_it_the_general_way() {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    t.place(fred(), 1);
    assert_untouched(&mut t, Fallback::NotWaiting);
    assert!(records(&mut fred_ends).is_empty());
}

#[test]
fn a_thread_without_a_handler_or_with_a_stopped_one_is_the_general_paths() {
    // fred-server handles its own faults: nobody.
    let (mut t, _) = handler_waiting(fred());
    t.get_mut(fred()).wake();
    assert_untouched(&mut t, Fallback::NoHandler);
    // pv-server's handler gone.
    let (mut t, _) = handler_waiting(pv());
    t.get_mut(fred()).stop();
    assert_untouched(&mut t, Fallback::NotWaiting);
}

#[test]
fn a_full_ring_is_the_general_paths_to_report_and_count() {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    let ring = t.get_mut(fred()).events.as_mut().unwrap();
    while ring.try_push(&[0u8; 100]).is_ok() {}
    while ring.try_push(&[0u8; 4]).is_ok() {}
    let dropped = ring.dropped();
    assert_untouched(&mut t, Fallback::Ring);
    assert_eq!(t.get(fred()).events.as_ref().unwrap().dropped(), dropped);
    // The general path then counts it and says so.
    let frame = int3_frame(0x40_0100);
    let decoded = frame.event(0, 0).expect("decodable");
    let _ = crate::forward::event(&mut t, &frame, pv(), &decoded, &no_dump);
    // (The event, and the restart notice that follows it.)
    assert!(t.get(fred()).events.as_ref().unwrap().dropped() > dropped);
    assert!(kit::output().contains("event ring is full"));
    assert!(
        records(&mut fred_ends)
            .iter()
            .all(|r| r.len() != ipc::codec::EVENT_RECORD)
    );
}

#[test]
fn a_missing_ring_is_the_general_paths() {
    let (mut t, _) = handler_waiting(pv());
    t.get_mut(fred()).events = None;
    assert_untouched(&mut t, Fallback::Ring);
}

#[test]
fn a_guest_vcpus_breakpoint_is_the_general_paths() {
    let (mut t, _) = handler_waiting(pv());
    let guest = t.guest_id(1).unwrap();
    t.get_mut(guest).start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x7000),
        kit::user_frame(0x1000),
    );
    t.get_mut(pv()).block_on_events();
    t.set_current(Some(guest));
    assert_untouched(&mut t, Fallback::Guest);
}

#[test]
fn only_an_int3_from_ring_3_in_64_bit_mode_is_the_fast_paths() {
    assert!(is_int3(&int3_frame(0x40_0100)));
    let with_ss = |ss: SsQword| {
        let mut f = int3_frame(0x40_0100);
        f.ret.ss = ss;
        f
    };
    let into =
        with_ss(SsQword::new(gdt::USER_DS, EventType::SoftwareException, 4).with_64bit(true));
    let ud = with_ss(SsQword::new(gdt::USER_DS, EventType::HardwareException, 6).with_64bit(true));
    // FRED reports `int $3` (CD 03) as a software interrupt, not as INT3.
    let int_n =
        with_ss(SsQword::new(gdt::USER_DS, EventType::SoftwareInterrupt, 3).with_64bit(true));
    let compat = with_ss(int3_frame(0).ret.ss.with_64bit(false));
    let mut ring0 = int3_frame(0x40_0100);
    ring0.ret.cs = bsp_x86_64::frame::CsQword::from_raw(u64::from(gdt::KERNEL_CS.raw()));
    for (what, frame) in [
        ("into", into),
        ("#UD", ud),
        ("int $3", int_n),
        ("compat", compat),
        ("ring 0", ring0),
    ] {
        assert!(!is_int3(&frame), "{what}");
    }
}

#[test]
fn a_thread_with_an_unanswered_event_is_the_general_paths() {
    let (mut t, _) = handler_waiting(pv());
    t.get_mut(pv()).pending = Some(Pending {
        token: ipc::Token(99),
        event: int3_frame(0).event(0, 0).unwrap(),
    });
    let cur = t.current();
    assert_eq!(
        breakpoint_of_current(&mut t, 0x40_0100),
        Err(Fallback::Pending)
    );
    assert_eq!(t.current(), cur);
    assert_eq!(t.get(pv()).pending.map(|p| p.token), Some(ipc::Token(99)));
}

#[test]
fn no_current_thread_is_the_general_paths() {
    let (mut t, _) = handler_waiting(pv());
    let mut frame = int3_frame(0x40_0100);
    t.set_current(None);
    assert_eq!(breakpoint(&mut t, &mut frame), Err(Fallback::NoCurrent));
}

// The way back: `ReplyWait`'s answer in registers, and a switch straight to the waiter.

/// The current thread's `ReplyWait` with `reply` in RDI/RSI/RDX, its save area the live frame.
fn reply_wait_of_current(t: &mut Threads, registers: [u64; 3]) -> Result<ExitFrame, ReplyFallback> {
    let cur = t.current().expect("a current thread");
    *t.frame_mut(cur) = reply_wait_frame(registers);
    let mut live = t.live_area(cur);
    t.with_live(&mut live, reply_wait)
}

/// A server's `ReplyWait` as the entry stub leaves it.
fn reply_wait_frame(registers: [u64; 3]) -> Frame {
    let mut frame = kit::user_frame(0x40_2000);
    frame.gprs.rax = ipc::syscall::Syscall::ReplyWait as u64;
    [frame.gprs.rdi, frame.gprs.rsi, frame.gprs.rdx] = registers;
    frame
}

/// pv-server's int3 taken by the fast path: fred-server runs, pv-server waits; the token.
fn int3_delivered() -> (Threads, kit::ServerEnds, ipc::Token) {
    let (mut t, mut fred_ends) = handler_waiting(pv());
    breakpoint_of_current(&mut t, 0x40_0100).expect("the fast path");
    let messages = kit::recv_all(&mut fred_ends);
    let [NucleusMessage::Event { token, .. }] = messages.as_slice() else {
        panic!("expected one event, got {messages:?}");
    };
    (t, fred_ends, *token)
}

#[test]
fn a_resume_in_registers_switches_straight_back_to_the_waiter() {
    let (mut t, _fred_ends, token) = int3_delivered();
    let exit = reply_wait_of_current(&mut t, RegisterReply::Resume(token).to_registers())
        .expect("the fast path");
    assert_eq!(exit, t.area_ptr(pv()));
    assert_eq!(t.current(), Some(pv()));
    assert!(t.get(pv()).runnable());
    assert!(t.get(pv()).pending.is_none(), "settled");
    assert_eq!(t.get(fred()).state(), State::WaitingForEvents);
    assert_eq!(t.frame(fred()).gprs.rax, 0, "ReplyWait's result");
    // pv-server goes on after its int3 with the context the stub saved.
    assert_eq!(t.frame(pv()).ret.rip, 0x40_0100);
    assert_eq!(t.frame(pv()).gprs.rbx, 0xb0b);
    let root = t.get(pv()).space.as_ref().unwrap().root().as_u64();
    assert_eq!(crate::host::mm::loaded_root(), root);
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(pv()) as u64);
    let (cs, ss) = crate::thread::SERVER_SEGMENTS;
    assert_eq!(t.frame(pv()).ret.cs.raw(), u64::from(cs));
    assert_eq!(t.frame(pv()).ret.ss.raw(), u64::from(ss));
    // And the next breakpoint goes the same way again.
    breakpoint_of_current(&mut t, 0x40_0200).expect("fred-server waits again");
}

#[test]
fn the_fast_answer_leaves_what_the_general_answer_leaves() {
    let (mut t, _, token) = int3_delivered();
    reply_wait_of_current(&mut t, RegisterReply::Resume(token).to_registers())
        .expect("the fast path");
    let fast: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();

    let (mut t, _, token) = int3_delivered();
    let mut frame = reply_wait_frame(RegisterReply::Resume(token).to_registers());
    assert_eq!(
        crate::syscall::handle(&mut t, &mut frame),
        Ok(crate::thread::sched::NextTask::Other)
    );
    let general: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    assert_eq!(general, fast);
    assert_eq!(frame.gprs.rax, 0);
}

/// A fallback of the answer: nothing changed, for the general path to do it all.
fn assert_answer_untouched(t: &mut Threads, registers: [u64; 3], fallback: ReplyFallback) {
    let cur = t.current();
    let states: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    let pending = t.get(pv()).pending.map(|p| p.token);
    let root = crate::host::mm::loaded_root();
    assert_eq!(reply_wait_of_current(t, registers), Err(fallback));
    assert_eq!(t.current(), cur);
    let after: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    assert_eq!(after, states);
    assert_eq!(t.get(pv()).pending.map(|p| p.token), pending);
    assert_eq!(crate::host::mm::loaded_root(), root);
}

#[test]
fn an_unknown_verdict_is_refused_by_the_general_path_with_nothing_taken() {
    let (mut t, _, token) = int3_delivered();
    assert_answer_untouched(&mut t, [token.0, 2, 0], ReplyFallback::Verdict);
    let mut frame = reply_wait_frame([token.0, u64::MAX, 0]);
    assert_eq!(
        crate::syscall::handle(&mut t, &mut frame),
        Ok(crate::thread::sched::NextTask::Same)
    );
    assert_eq!(
        frame.gprs.rax,
        ipc::syscall::to_rax(Err(ipc::syscall::SyscallError::BadArgument))
    );
    assert_eq!(t.get(pv()).state(), State::WaitingForReply(token));
    assert!(t.get(fred()).runnable(), "no sleep either");
}

#[test]
fn records_on_the_reply_ring_go_first_the_general_way() {
    let (mut t, mut fred_ends, token) = int3_delivered();
    kit::send(
        &mut fred_ends,
        &ServerMessage::Reply(Reply::Resume {
            token: ipc::Token(12345),
        }),
    );
    assert_answer_untouched(
        &mut t,
        RegisterReply::Resume(token).to_registers(),
        ReplyFallback::Queued,
    );
    // The general path takes the record (an unknown token: said) and then the answer.
    let mut frame = reply_wait_frame(RegisterReply::Resume(token).to_registers());
    assert_eq!(
        crate::syscall::handle(&mut t, &mut frame),
        Ok(crate::thread::sched::NextTask::Other)
    );
    assert!(kit::output().contains("reply for unknown event"));
    assert!(t.get(pv()).runnable());
    assert_eq!(t.get(fred()).state(), State::WaitingForEvents);
}

#[test]
fn a_caller_with_events_waiting_does_not_sleep() {
    let (mut t, _, token) = int3_delivered();
    t.send(
        fred(),
        &NucleusMessage::Ping {
            token: ipc::Token(1),
        },
    )
    .expect("room for a ping");
    assert_answer_untouched(
        &mut t,
        RegisterReply::Resume(token).to_registers(),
        ReplyFallback::Events,
    );
}

#[test]
fn an_answer_nobody_waits_for_or_for_someone_else_is_the_general_paths() {
    let (mut t, _, token) = int3_delivered();
    assert_answer_untouched(
        &mut t,
        RegisterReply::Resume(ipc::Token(token.0 + 1)).to_registers(),
        ReplyFallback::Refused,
    );
    // pv-server, current, answering for itself: it handles no server's faults.
    let (mut t, _, token) = int3_delivered();
    t.set_current(Some(pv()));
    t.get_mut(fred()).block_on_events();
    let states: Vec<State> = t.ids().map(|id| t.get(id).state()).collect();
    assert_eq!(
        reply_wait_of_current(&mut t, RegisterReply::Resume(token).to_registers()),
        Err(ReplyFallback::Refused)
    );
    assert_eq!(
        t.ids().map(|id| t.get(id).state()).collect::<Vec<_>>(),
        states
    );
}

#[test]
fn a_waiter_on_another_cpu_is_woken_the_general_way() {
    let (mut t, _, token) = int3_delivered();
    t.place(pv(), 1);
    assert_answer_untouched(
        &mut t,
        RegisterReply::Resume(token).to_registers(),
        ReplyFallback::NotHere,
    );
}

#[test]
fn a_return_in_registers_sets_the_guests_rax_and_switches_into_the_guest() {
    let (mut t, _) = handler_waiting(pv());
    let guest = t.guest_id(1).unwrap();
    let mut start = kit::user_frame(0x1002);
    start.gprs.rax = 17;
    t.get_mut(guest)
        .start_guest(bsp_x86_64::paging::PhysAddr::new(0x7000), start);
    t.set_current(Some(guest));
    // The guest's hypercall, pv-server asleep: into pv-server by the hypercall fast path.
    t.get_mut(pv()).block_on_events();
    let mut live = t.live_area(guest);
    t.with_live(&mut live, crate::forward::hypercall::fast)
        .expect("the hypercall fast path");
    assert_eq!(t.current(), Some(pv()));
    let crate::thread::State::WaitingForReply(token) = t.get(guest).state() else {
        panic!("the guest should wait");
    };
    let mut pv_ends = kit::server_ends("pv-server");
    kit::recv_all(&mut pv_ends);
    let exit = reply_wait_of_current(
        &mut t,
        RegisterReply::Return(token, 0x4_0015).to_registers(),
    )
    .expect("the fast path");
    assert_eq!(exit, t.area_ptr(guest));
    assert_eq!(t.current(), Some(guest));
    assert!(t.get(guest).runnable());
    assert_eq!(t.frame(guest).gprs.rax, 0x4_0015);
    assert_eq!(t.get(pv()).state(), State::WaitingForEvents);
    assert_eq!(crate::host::mm::loaded_root(), 0x7000);
    assert_eq!(crate::host::cpu::save_area(), t.area_ptr(guest) as u64);
}

#[test]
fn a_guest_waiting_at_a_non_canonical_rip_gets_its_gp_the_general_way() {
    let (mut t, _) = handler_waiting(pv());
    let guest = t.guest_id(1).unwrap();
    t.get_mut(guest).start_guest(
        bsp_x86_64::paging::PhysAddr::new(0x7000),
        kit::user_frame(0x1002),
    );
    t.get_mut(guest).block_on_reply(ipc::Token(77));
    t.frame_mut(guest).ret.rip = 0x0000_8000_0000_0000;
    t.set_current(Some(pv()));
    assert_answer_untouched(
        &mut t,
        RegisterReply::Return(ipc::Token(77), 0).to_registers(),
        ReplyFallback::NotCanonical,
    );
}

#[test]
fn no_current_thread_is_the_general_paths_answer_too() {
    let (mut t, _, token) = int3_delivered();
    let mut frame = reply_wait_frame(RegisterReply::Resume(token).to_registers());
    t.set_current(None);
    assert_eq!(
        reply_wait(&mut t, &mut frame),
        Err(ReplyFallback::NoCurrent)
    );
}
