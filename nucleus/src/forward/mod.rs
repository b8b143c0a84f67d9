//! Events of Ring3 threads to their fault handler, and the handler's replies back
//! (architecture.md §5).
//!
//! An event of a thread (a fault, `int3`, a hang the watchdog caught) goes into the event
//! ring of the thread's fault handler with a fresh token, and the thread waits for the
//! handler's `Reply` ([`reply`]): resume (possibly with changed registers, checked by
//! [`changes`]), kill or restart. A thread without a live fault handler, or whose handler
//! cannot be reached, is reported and restarted by the nucleus, within the thread's restart
//! budget (`lifecycle`). An event and its dump go into the handler's ring all or nothing.
pub mod changes;
pub mod reply;

pub use reply::drain_replies;

use crate::lifecycle;
use crate::thread::sched::NextTask;
use crate::thread::{Pending, SendFailure, ThreadId, Threads};
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use ipc::dump::RegisterDump;
use ipc::{Event, EventKind, NucleusMessage};
use xen_abi::layout::selector::{FLAT_RING3_CS64, FLAT_RING3_SS64};

/// Captures the register dump of the event in `frame`, labelled with the given prefix.
pub type Capture<'a> = &'a dyn Fn(&str, &Frame) -> RegisterDump;

/// An event of thread `cur` (the one whose context `frame` is): to its fault handler, or
/// reported and restarted here.
pub fn event(
    t: &mut Threads,
    frame: &Frame,
    cur: ThreadId,
    event: &Event,
    capture: Capture<'_>,
) -> NextTask {
    t.get_mut(cur).frame = *frame;
    if let Some(handler) = t.live_fault_handler(cur) {
        let token = t.next_token();
        let event = Event {
            owner: t.get(cur).owner(cur),
            ..*event
        };
        // A breakpoint is a debugging aid the handler resumes at once: no dump, so `int3`
        // costs one message each way. Faults and hangs get the full register dump first
        // (built in place: the `int3` path never moves a dump-sized value).
        t.get_mut(cur).pending = Some(Pending { token, event });
        let sent = if matches!(event.kind, EventKind::SoftwareException { .. }) {
            // Straight from here: the pending copy is only for a re-send.
            t.get_mut(cur).pending_dump = None;
            t.send(handler, &NucleusMessage::Event { token, event })
        } else {
            keep_dump(t, cur, handler, frame, capture);
            send_pending(t, cur)
        };
        match sent {
            Ok(()) => {
                t.get_mut(cur).block_on_reply(token);
                return NextTask::Other;
            }
            Err(e) => {
                let thread = t.get_mut(cur);
                thread.pending = None;
                thread.pending_dump = None;
                let name = thread.name();
                let handler_name = t.get(handler).name();
                let dropped = t.get(handler).events.as_ref().map_or(0, |r| r.dropped());
                match e {
                    SendFailure::Ring(ipc::SendError::Push(ipc::ring::PushError::Full {
                        ..
                    })) => println!(
                        "nucleus: {handler_name}'s event ring is full: {name}'s fault is not \
                         forwarded ({dropped} message(s) dropped so far); the nucleus reports it"
                    ),
                    e => println!(
                        "nucleus: cannot forward {name}'s fault to {handler_name} ({e}); the \
                         nucleus reports it"
                    ),
                }
                let mut dump = capture("nucleus", frame);
                user_stack_words(t, cur, frame.ret.rsp, &mut dump);
                println!("{dump}");
            }
        }
    } else {
        let mut dump = capture("nucleus", frame);
        user_stack_words(t, cur, frame.ret.rsp, &mut dump);
        let thread = t.get(cur);
        match thread.fault_handler() {
            None => println!(
                "nucleus: {} faulted and {} faulted itself: the nucleus reports it",
                thread.name(),
                thread.name()
            ),
            Some(handler) => println!(
                "nucleus: {} faulted and {} is not running: the nucleus reports it",
                thread.name(),
                t.get(handler).name()
            ),
        }
        println!("{dump}");
    }
    lifecycle::restart(t, cur);
    if t.is_fault_handler(cur) {
        rehome_pending(t, cur);
    }
    NextTask::Other
}

/// A guest vCPU's `syscall`: a hypercall (pv64-abi.md §3). It goes to the guest manager
/// with the arguments and where the guest stands, and the vCPU waits for the answer (a
/// `Return` sets its RAX; a `ResumeWith` is checked as any reply). Without a live manager
/// the domain cannot be served: the vCPU stops.
pub fn hypercall(t: &mut Threads, frame: &Frame, cur: ThreadId) -> NextTask {
    let Some(domain) = t.get(cur).domain() else {
        return NextTask::Same;
    };
    t.get_mut(cur).frame = *frame;
    // The IDT's SYSCALL stub writes the servers' selectors into the frame (SYSCALL saves
    // none); a part-1 guest runs on Xen's flat selectors only, so it resumes on those.
    let thread = t.get_mut(cur);
    thread.frame.ret.cs = CsQword::from_raw(u64::from(FLAT_RING3_CS64));
    thread.frame.ret.ss = SsQword::from_raw(u64::from(FLAT_RING3_SS64));
    let Some(handler) = t.live_fault_handler(cur) else {
        println!("nucleus: guest domain {domain} made a hypercall with no pv-server; stopping it");
        t.get_mut(cur).stop();
        return NextTask::Other;
    };
    let token = t.next_token();
    let g = &frame.gprs;
    let call = ipc::message::Hypercall {
        token,
        domain,
        vcpu: 0,
        number: g.rax,
        args: [g.rdi, g.rsi, g.rdx, g.r10, g.r8, g.r9],
        rip: frame.ret.rip,
        rsp: frame.ret.rsp,
        rflags: frame.ret.rflags,
    };
    let event = Event {
        cpu: 0,
        kind: EventKind::Syscall,
        event_data: 0,
        rip: frame.ret.rip,
        cs: FLAT_RING3_CS64,
        rflags: frame.ret.rflags,
        rsp: frame.ret.rsp,
        ss: FLAT_RING3_SS64,
        from_ring: 3,
        owner: ipc::domain::guest_owner(domain),
    };
    let thread = t.get_mut(cur);
    thread.pending = Some(Pending { token, event });
    thread.pending_dump = None;
    match t.send(handler, &NucleusMessage::Hypercall(call)) {
        Ok(()) => {
            t.get_mut(cur).block_on_reply(token);
            NextTask::Other
        }
        Err(e) => {
            // A full ring: the guest retries the same `syscall` once pv-server caught up.
            let thread = t.get_mut(cur);
            thread.pending = None;
            thread.frame.ret.rip = thread.frame.ret.rip.wrapping_sub(2);
            let _ = e;
            NextTask::NextInTurn
        }
    }
}

/// Captures the dump that goes with thread `cur`'s pending event. Not inlined: merged into
/// [`event`], the compiler built the `int3` path's `None` as a whole dump-sized copy.
#[inline(never)]
fn keep_dump(
    t: &mut Threads,
    cur: ThreadId,
    handler: ThreadId,
    frame: &Frame,
    capture: Capture<'_>,
) {
    let mut dump = capture(t.get(handler).name(), frame);
    user_stack_words(t, cur, frame.ret.rsp, &mut dump);
    t.get_mut(cur).pending_dump = Some(dump);
}

/// Fills the dump's raw stack words from the thread's own stack, read through its address
/// space (checked: a wild RSP yields no words, never a nucleus fault).
fn user_stack_words(t: &Threads, id: ThreadId, rsp: u64, dump: &mut RegisterDump) {
    let Some(space) = t.get(id).space.as_ref() else {
        return;
    };
    dump.stack_words.0.clear();
    for i in 0..16u64 {
        let mut word = [0u8; 8];
        if space.read(rsp.wrapping_add(i * 8), &mut word).is_err() {
            break;
        }
        let _ = dump.stack_words.0.push(u64::from_le_bytes(word));
    }
}

/// Sends thread `id`'s forwarded event (dump first, then the event) to its fault handler,
/// all or nothing: a ring without room for every part gets none of them (the handler never
/// sees a dump without its event), and each message is counted in the ring's `dropped`.
fn send_pending(t: &mut Threads, id: ThreadId) -> Result<(), SendFailure> {
    let thread = t.get(id);
    let (Some(Pending { token, event }), Some(handler)) = (thread.pending, thread.fault_handler())
    else {
        return Ok(());
    };
    if handler == id {
        return Err(SendFailure::NoRing);
    }
    let mut buf = [0u8; ipc::dump_parts::DUMP_BYTES_MAX];
    let (waiting, receiver) = t.pair_mut(id, handler);
    let ring = receiver.events.as_mut().ok_or(SendFailure::NoRing)?;
    let mut batch = ring.batch();
    let mut result = Ok(());
    let mut messages = 1u32;
    // A breakpoint has no dump (only faults and hangs pay for one).
    if let Some(dump) = waiting.pending_dump.as_ref() {
        let reason = ipc::message::DumpReason::ServerCrash;
        let Ok(parts) = ipc::dump_parts::split(dump, token, reason, 0, &mut buf) else {
            batch.abandon();
            return Err(SendFailure::DumpTooLarge);
        };
        for part in parts {
            messages += 1;
            if result.is_ok() {
                result = batch.try_push_message(&NucleusMessage::Dump(part));
            }
        }
    }
    if result.is_ok() {
        result = batch.try_push_message(&NucleusMessage::Event { token, event });
    }
    if let Err(e) = result {
        batch.abandon();
        ring.count_drops(messages);
        return Err(SendFailure::Ring(e));
    }
    drop(batch);
    receiver.wake();
    Ok(())
}

/// After fault handler `handler` (re)started, or gave up for good: the events its
/// predecessor never answered go to the new one, or — with no handler left — the nucleus
/// restarts those threads itself rather than leave them waiting forever.
pub fn rehome_pending(t: &mut Threads, handler: ThreadId) {
    for id in t.ids() {
        let thread = t.get(id);
        if id == handler || thread.fault_handler() != Some(handler) || thread.pending.is_none() {
            continue;
        }
        if t.get(handler).is_restarting() {
            continue; // handed over once its backoff is over (`dispatch`, after `lifecycle::tick`)
        }
        let running = !t.get(handler).is_absent();
        let resent = running && send_pending(t, id).is_ok();
        let name = t.get(id).name();
        let handler_name = t.get(handler).name();
        if resent {
            println!("nucleus: {name}'s unanswered event handed to the new {handler_name}");
        } else {
            println!(
                "nucleus: {name}'s event has no {handler_name} to answer it; restarting {name}"
            );
            lifecycle::restart(t, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::kit::{self, fred, pv};
    use crate::thread::State;
    use ipc::message::{Reply, ServerMessage};

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
        assert_eq!(crate::syscall::handle(&mut t, &mut frame), NextTask::Other);
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
        assert_eq!(t.get(guest).frame.ret.cs.selector().raw(), FLAT_RING3_CS64);
        assert_eq!(t.get(guest).frame.ret.ss.selector().raw(), FLAT_RING3_SS64);
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
        assert_eq!(t.get(guest).frame.gprs.rax, 0x4_0015);
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
    fn a_guest_fault_goes_to_pv_server_under_the_guest_owner_with_its_dump() {
        let (mut t, mut fred_ends, mut pv_ends) = running(pv());
        kit::recv_all(&mut pv_ends);
        let guest = guest_running(&mut t, 0x2000);
        let frame = t.get(guest).frame;
        let ev = event_of(
            &frame,
            EventKind::Exception {
                vector: 14,
                error_code: 7,
            },
        );
        assert_eq!(event(&mut t, &frame, guest, &ev, &no_dump), NextTask::Other);
        let messages = kit::recv_all(&mut pv_ends);
        assert!(matches!(messages.first(), Some(NucleusMessage::Dump(_))));
        let Some(NucleusMessage::Event { event, .. }) = messages.last() else {
            panic!("expected the event last, got {messages:?}");
        };
        assert_eq!(event.owner, ipc::domain::guest_owner(1));
        assert!(kit::recv_all(&mut fred_ends).is_empty());
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
        assert_eq!(t.get(pv()).frame.ret.rip, 0x40_0100);
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
}
