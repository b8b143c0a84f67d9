//! The way back: `ReplyWait`'s answer in registers, and a switch straight to the waiter;
//! each fallback leaves everything as it was.
use super::*;

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
