//! Records around one event: what came in, and what the unchanged dispatcher did with it.
use super::changes::{Change, Snapshot, changes, guest_changes, is_hypercall};
use super::level::on;
use super::record;
use super::sink::drain;
use crate::thread::sched::ExitFrame;
use crate::thread::{Kind, LiveFrame, Thread, ThreadId, Threads};
use bsp_x86_64::cmdline::TraceLevel;
use bsp_x86_64::frame::Frame;
use ipc::dump::Delivery;
use ipc::syscall::Syscall;

/// The dispatcher under `trace=`: records the event, runs `dispatch`, records what changed.
/// Only the look before stays on the stack while the dispatcher runs (the primary stack is
/// 8 KiB, and a restart's path is deep): the recording is in the two functions below.
#[cold]
#[inline(never)]
pub fn traced(
    mut live: LiveFrame<'static>,
    delivery: Delivery,
    dispatch: fn(LiveFrame<'static>, Delivery) -> ExitFrame,
) -> ExitFrame {
    let entry = entered(live.frame(), delivery);
    let exit = dispatch(live, delivery);
    if let Some(entry) = entry {
        left(&entry);
    }
    exit
}

/// What [`traced`] keeps across the dispatcher.
struct Entry {
    before: Snapshot,
    timer: bool,
}

/// Records the event about to be dispatched; `None` if there is nothing to compare after it.
#[inline(never)]
fn entered(frame: &Frame, delivery: Delivery) -> Option<Entry> {
    let all = on(TraceLevel::All);
    let ss = frame.ret.ss;
    let syscall = ss.event_type_raw() == ipc::EventKind::Syscall.fred_type()
        && ss.vector() == ipc::EventKind::Syscall.vector()
        && frame.ret.cs.selector().rpl() == 3;
    // Below `all` a syscall matters only if it can change what the trace records: take a
    // reply, start or end a guest, or be a guest's hypercall (the lifecycle records of `exit`
    // are emitted where it happens). The null syscall stays nearly free.
    let looked_at = [
        Syscall::RingWait as u64,
        Syscall::ReplyWait as u64,
        Syscall::RingNotify as u64,
        Syscall::VcpuStart as u64,
        Syscall::DomainDestroy as u64,
    ]
    .contains(&frame.gprs.rax);
    if syscall
        && !all
        && !looked_at
        && !crate::thread::try_with(|t| current_is_guest(t)).unwrap_or(false)
    {
        return None;
    }
    // An event inside a borrower of the thread table (an NMI, a nested tick) is recorded
    // without the look at the table.
    let before = crate::thread::try_with(|t| Snapshot::take(t));
    let mut timer = false;
    if syscall {
        if all && let Some(cur) = before.and_then(|b| b.current()) {
            record::syscall(cur.index(), frame.gprs.rax);
        }
    } else if let Ok(event) = frame.event(0, 0) {
        timer = matches!(
            event.kind,
            ipc::EventKind::Interrupt {
                vector: crate::timer::TIMER_VECTOR | crate::timer::APIC_TIMER_VECTOR,
            }
        );
        record::delivered(&event, delivery == Delivery::Fred);
    }
    Some(Entry {
        before: before?,
        timer,
    })
}

/// Whether the live thread is a guest vCPU (whose `syscall` is a hypercall).
fn current_is_guest(t: &Threads) -> bool {
    t.current()
        .is_some_and(|id| matches!(t.get(id).kind(), Kind::GuestVcpu { .. }))
}

/// A guest vCPU's forwarded event that is a hypercall: domain, number and first arguments.
fn hypercall_of(thread: &Thread, frame: &Frame) -> Option<(u16, u64, [u64; 3])> {
    let domain = thread.domain()?;
    let g = &frame.gprs;
    is_hypercall(thread).then_some((domain, g.rax, [g.rdi, g.rsi, g.rdx]))
}

/// Records what the dispatcher changed in the thread table, and drains when the CPU is about
/// to idle, a tick came or a guest started or stopped (rare, and worth seeing at once).
#[inline(never)]
fn left(entry: &Entry) {
    let all = on(TraceLevel::All);
    crate::thread::with(|t| {
        let after = Snapshot::take(t);
        let mut at_once = false;
        let thread = |slot: usize| t.ids().nth(slot).map(|id| t.get(id));
        for change in changes(&entry.before, &after).chain(guest_changes(&entry.before, &after)) {
            match change {
                Change::Forwarded { from, token } => {
                    let handler = thread(from).and_then(Thread::fault_handler);
                    let name = handler.map_or("nucleus", |h| t.get(h).name());
                    let to = handler.map(ThreadId::index);
                    let call =
                        thread(from).and_then(|th| hypercall_of(th, t.frame(t.ids().nth(from)?)));
                    match call {
                        Some((domain, number, args)) => {
                            record::hypercall(domain, number, args, to, name, token.0);
                        }
                        None => record::forwarded(from, to, name, token.0),
                    }
                }
                Change::GuestStarted { slot } => {
                    if let Some(guest) = thread(slot) {
                        let domain = guest.domain().unwrap_or_default();
                        let rip = t.ids().nth(slot).map_or(0, |id| t.frame(id).ret.rip);
                        record::guest_started(domain, slot, rip);
                    }
                    at_once = true;
                }
                Change::GuestStopped { slot } => {
                    let domain = thread(slot).and_then(Thread::domain).unwrap_or_default();
                    record::guest_stopped(domain, slot);
                    at_once = true;
                }
                Change::Reply { to, token } => {
                    record::reply(to, token.0);
                    // A guest's event answered and the guest runs on: pv-server bounced it.
                    let bounced = entry.before.guest_event_waits(to) && after.guest_runs(to);
                    if let Some(guest) = thread(to).filter(|_| bounced) {
                        let domain = guest.domain().unwrap_or_default();
                        let rip = t.ids().nth(to).map_or(0, |id| t.frame(id).ret.rip);
                        record::bounced(domain, to, rip, token.0);
                    }
                }
                Change::Switch { from, to } if all => {
                    record::switch(from.map(ThreadId::index), to.map(ThreadId::index));
                }
                Change::Switch { .. } => {}
            }
        }
        if at_once || entry.timer || after.current().is_none() {
            drain();
        }
    });
}
