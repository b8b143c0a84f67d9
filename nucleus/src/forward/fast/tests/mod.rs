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

mod reply;
