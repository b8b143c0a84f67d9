//! A thread's event to its fault handler (dump first for faults and hangs), or reported and
//! restarted here; the unanswered events of a handler that died go to its successor.
use crate::lifecycle;
use crate::thread::sched::NextTask;
use crate::thread::{Pending, SendFailure, ThreadId, Threads};
use bsp_x86_64::frame::Frame;
use ipc::dump::RegisterDump;
use ipc::{Event, EventKind, NucleusMessage};

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
    t.keep_live(cur, frame);
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
        let sent = if t.get(cur).domain().is_some() {
            send_guest_event(t, cur, handler, frame, capture)
        } else if matches!(event.kind, EventKind::SoftwareException { .. }) {
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

/// A guest's event (its `int3` too: a trap to bounce) goes with its registers; the dump is
/// kept and sent only if pv-server asks for it (`Reply::SendDump`), to print as it ends the
/// guest: a bounce never pays for it. Out of line: the servers' `int3` path stays as it was.
#[inline(never)]
fn send_guest_event(
    t: &mut Threads,
    cur: ThreadId,
    handler: ThreadId,
    frame: &Frame,
    capture: Capture<'_>,
) -> Result<(), SendFailure> {
    keep_dump(t, cur, handler, frame, capture);
    let Some(Pending { token, event }) = t.get(cur).pending else {
        return Err(SendFailure::NoRing);
    };
    let regs = guest_registers(frame);
    t.send(handler, &NucleusMessage::GuestEvent { token, event, regs })
}

/// A guest vCPU's general-purpose registers for pv-server, in `ipc::message::Gpr` order.
pub(super) fn guest_registers(frame: &Frame) -> ipc::message::GuestRegisters {
    let g = &frame.gprs;
    ipc::message::GuestRegisters([
        g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp, g.r8, g.r9, g.r10, g.r11, g.r12, g.r13,
        g.r14, g.r15,
    ])
}

/// pv-server's `Reply::SendDump` about guest vCPU `id`: its pending event again, after the
/// dump kept with it; the vCPU keeps waiting. With no dump kept or no room in the ring the
/// nucleus stops the vCPU itself (one line).
pub fn resend_with_dump(t: &mut Threads, id: ThreadId) {
    if t.get(id).pending_dump.is_some() && send_pending(t, id).is_ok() {
        return;
    }
    let domain = t.get(id).domain().unwrap_or(0);
    println!("nucleus: guest domain {domain}: its dump cannot be sent; stopping it");
    lifecycle::kill(t, id);
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
pub(super) fn send_pending(t: &mut Threads, id: ThreadId) -> Result<(), SendFailure> {
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
