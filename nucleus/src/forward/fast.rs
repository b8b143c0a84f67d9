//! The event fast path (issue 17): a server's breakpoint goes straight into the event ring
//! of its fault handler, which sleeps in `RingWait` on this CPU, and the CPU switches
//! directly to that handler. No `Event` decode, no `NucleusMessage`, no run-queue pick.
//! The way back is [`reply_wait`]: the handler's answer in registers (`Syscall::ReplyWait`)
//! settles the waiter, and the CPU switches straight back to it.
//!
//! Chosen first, and only where it is sure: anything else (a guest vCPU, no live handler,
//! a handler that is not waiting here, a ring without room) is a [`Fallback`], and
//! [`super::event()`] then handles the event exactly as it did before the fast path existed,
//! from a table the fast path left untouched. What the fast path does leave behind is what
//! the general path would: the same record in the ring (`ipc::codec::push_event_record`
//! writes it with the hot path's own layout), the same `pending` event and token, the thread waiting for
//! its answer, the handler running.
use crate::thread::sched::{self, ExitFrame};
use crate::thread::{Pending, Threads};
use bsp_x86_64::frame::{Frame, SsQword};
use ipc::EventKind;
use ipc::syscall::RegisterReply;

/// The [`SsQword::class`] of an `int3` from 64-bit mode (FRED type 6, vector 3; the IDT
/// stubs write the same for vector 3).
pub const INT3_CLASS: u64 = SsQword::class_of(
    EventKind::SoftwareException { vector: 3 }.fred_type(),
    3,
    true,
);

/// Why an event was left to the general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No thread is current (the general path reports it).
    NoCurrent,
    /// A guest vCPU's event: its registers go with it (`send_guest_event`).
    Guest,
    /// The thread handles its own faults, or nobody does: the nucleus reports it.
    NoHandler,
    /// The handler is not asleep in `RingWait` on this CPU (it is runnable, gone, placed
    /// elsewhere or waiting for an answer itself): it gets the event the general way.
    NotWaiting,
    /// The thread has an unanswered event already (never, for a thread that runs).
    Pending,
    /// The handler's event ring is missing, full or corrupt: the general path reports it
    /// and counts the drop.
    Ring,
}

/// Whether `frame` is an `int3` from ring 3 in 64-bit mode: the events [`breakpoint`] is
/// for (the dispatcher's test, before it borrows the thread table).
#[inline(always)]
pub fn is_int3(frame: &Frame) -> bool {
    frame.ret.ss.class() == INT3_CLASS && frame.ret.cs.selector().rpl() == 3
}

/// An `int3` from ring 3 of the current thread ([`is_int3`]), whose context `frame` is:
/// into its waiting fault handler's ring, the thread waiting for the answer, and the
/// handler's frame to leave through. `Err` changes nothing.
#[inline(always)]
pub fn breakpoint(t: &mut Threads, frame: &mut Frame) -> Result<ExitFrame, Fallback> {
    debug_assert!(is_int3(frame));
    let cur = t.current().ok_or(Fallback::NoCurrent)?;
    let thread = t.get(cur);
    if thread.domain().is_some() {
        return Err(Fallback::Guest);
    }
    let handler = thread
        .fault_handler()
        .filter(|&h| h != cur)
        .ok_or(Fallback::NoHandler)?;
    if !t.waits_here(handler) {
        return Err(Fallback::NotWaiting);
    }
    if thread.pending.is_some() {
        return Err(Fallback::Pending);
    }
    // The event as the general path builds it: CPU 0 (the dispatcher decodes with it), the
    // server's slot. Built where it is written, once in the ring and once as `pending`.
    let event = || {
        let kind = EventKind::SoftwareException { vector: 3 };
        frame.event_of_kind(kind, 0, cur.owner())
    };
    let token = t.upcoming_token();
    let receiver = t.get_mut(handler);
    let ring = receiver.events.as_mut().ok_or(Fallback::Ring)?;
    // Not counted as a drop: the general path tries again and counts it.
    ipc::codec::push_event_record(ring, token, event).map_err(|_| Fallback::Ring)?;
    receiver.wake();
    t.next_token();
    let thread = t.get_mut(cur);
    thread.pending = Some(Pending {
        token,
        event: event(),
    });
    thread.pending_dump = None;
    thread.block_on_reply(token);
    t.keep_live(cur, frame);
    let exit = sched::switch_to_server(t, handler);
    t.wake_remote();
    Ok(exit)
}

/// Why a `ReplyWait` was left to the general path (`syscall::handle`), which then takes
/// the reply ring, the answer and the wait exactly as it did before the fast path existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyFallback {
    /// No thread is current (the general path reports it).
    NoCurrent,
    /// RSI is no verdict the nucleus knows: the general path refuses the call.
    Verdict,
    /// The caller's reply ring holds records: they go first, the general way.
    Queued,
    /// Events wait for the caller already: it does not sleep.
    Events,
    /// Nobody waits for the token, or the caller may not answer for who does: the general
    /// path says so.
    Refused,
    /// The waiter is placed on another CPU: it is woken the general way.
    NotHere,
    /// A guest vCPU's saved RIP that no return instruction loads: the general path turns
    /// it into a #GP for its guest manager.
    NotCanonical,
}

/// A `ReplyWait` of the current server, whose context `frame` is: its answer (RDI, RSI,
/// RDX) settles the event of the thread that waits for it, the caller sleeps until events
/// arrive, and the CPU switches straight to the waiter. Taken only when the answer is all
/// there is to take (an empty reply ring), the caller has no events waiting, and the
/// waiter runs here; `Err` changes nothing.
#[inline(always)]
pub fn reply_wait(t: &mut Threads, frame: &mut Frame) -> Result<ExitFrame, ReplyFallback> {
    let cur = t.current().ok_or(ReplyFallback::NoCurrent)?;
    let g = &frame.gprs;
    let reply = RegisterReply::from_registers(g.rdi, g.rsi, g.rdx).ok_or(ReplyFallback::Verdict)?;
    let token = reply.token();
    let caller = t.get(cur);
    debug_assert!(caller.domain().is_none());
    if !caller
        .replies
        .as_ref()
        .is_some_and(|r| r.empty_at_a_glance())
    {
        return Err(ReplyFallback::Queued);
    }
    if crate::bench::owns(token) && t.is_fault_handler(cur) {
        return Ok(bench_answer(t, cur, frame));
    }
    if !caller
        .events
        .as_ref()
        .is_some_and(|r| r.empty_at_a_glance())
    {
        return Err(ReplyFallback::Events);
    }
    let waiter = t.waiting_for(cur, token);
    if !super::reply::may_answer(t, cur, waiter) {
        return Err(ReplyFallback::Refused);
    }
    let waiter = waiter.ok_or(ReplyFallback::Refused)?;
    if !t.placed_here(waiter) {
        return Err(ReplyFallback::NotHere);
    }
    let guest = t.get(waiter).domain().is_some();
    if guest && !super::reply::resumable_rip(t.frame(waiter).ret.rip) {
        return Err(ReplyFallback::NotCanonical);
    }
    // What the table does for the call (the watchdog's credit, RAX), then for the wait.
    frame.gprs.rax = 0;
    let caller = t.get_mut(cur);
    caller.made_syscall();
    caller.block_on_events();
    t.keep_live(cur, frame);
    // What `reply::settle` does for a `Resume` or a `Return`.
    let (thread, saved) = t.thread_and_frame(waiter);
    thread.settle();
    if let RegisterReply::Return(_, rax) = reply {
        saved.gprs.rax = rax;
    }
    thread.resume();
    let exit = if guest {
        sched::switch_to_guest(t, waiter)
    } else {
        sched::switch_to_server(t, waiter)
    };
    t.wake_remote();
    Ok(exit)
}

/// The ring benchmark's ping answered in registers (`bench`: the sample ends, the next ping
/// goes out): then the wait, as the general path's `RingWait` would do it with nothing on
/// the reply ring.
#[inline(never)]
fn bench_answer(t: &mut Threads, cur: crate::thread::ThreadId, frame: &mut Frame) -> ExitFrame {
    crate::bench::on_reply(t);
    frame.gprs.rax = 0;
    let caller = t.get_mut(cur);
    caller.made_syscall();
    if caller.has_events() {
        return sched::finish(t, frame, sched::NextTask::Same);
    }
    caller.block_on_events();
    t.keep_live(cur, frame);
    sched::finish(t, frame, sched::NextTask::Other)
}

#[cfg(test)]
mod tests;
