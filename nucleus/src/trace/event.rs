//! Records around one event: what came in, and what the unchanged dispatcher did with it.
use super::changes::{Change, Snapshot, changes};
use super::level::on;
use super::record;
use super::sink::drain;
use crate::thread::ThreadId;
use bsp_x86_64::cmdline::TraceLevel;
use bsp_x86_64::frame::Frame;
use ipc::dump::Delivery;
use ipc::syscall::Syscall;

/// The dispatcher under `trace=`: records the event, runs `dispatch`, records what changed.
/// Only the look before stays on the stack while the dispatcher runs (the primary stack is
/// 8 KiB, and a restart's path is deep): the recording is in the two functions below.
#[cold]
#[inline(never)]
pub fn traced(frame: &mut Frame, delivery: Delivery, dispatch: fn(&mut Frame, Delivery)) {
    let entry = entered(frame, delivery);
    dispatch(frame, delivery);
    if let Some(entry) = entry {
        left(&entry);
    }
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
    // Below `all` a syscall matters only if it can take a reply (the lifecycle records of
    // `exit` are emitted where it happens): the null syscall stays nearly free.
    let takes_replies =
        [Syscall::RingWait as u64, Syscall::RingNotify as u64].contains(&frame.gprs.rax);
    if syscall && !all && !takes_replies {
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
        timer = event.kind
            == (ipc::EventKind::Interrupt {
                vector: crate::timer::TIMER_VECTOR,
            });
        record::delivered(&event, delivery == Delivery::Fred);
    }
    Some(Entry {
        before: before?,
        timer,
    })
}

/// Records what the dispatcher changed in the thread table, and drains when the CPU is about
/// to idle or a tick came.
#[inline(never)]
fn left(entry: &Entry) {
    let all = on(TraceLevel::All);
    crate::thread::with(|t| {
        let after = Snapshot::take(t);
        for change in changes(&entry.before, &after) {
            match change {
                Change::Forwarded { from, token } => {
                    let handler = t.ids().nth(from).and_then(|id| t.get(id).fault_handler());
                    let name = handler.map_or("nucleus", |h| t.get(h).name());
                    record::forwarded(from, handler.map(ThreadId::index), name, token.0);
                }
                Change::Reply { to, token } => record::reply(to, token.0),
                Change::Switch { from, to } if all => {
                    record::switch(from.map(ThreadId::index), to.map(ThreadId::index));
                }
                Change::Switch { .. } => {}
            }
        }
        if entry.timer || after.current().is_none() {
            drain();
        }
    });
}
