//! What one event did to the thread table: two snapshots, before and after the dispatcher,
//! and the differences the trace records.
use crate::thread::{BOOT_THREADS, Kind, MAX_THREADS, State, Thread, ThreadId, Threads};
use ipc::Token;
use ipc::message::GuestMode;

/// What the trace needs to know about the thread table, before and after one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    current: Option<ThreadId>,
    waiting_for: [Option<Token>; MAX_THREADS],
    /// Slots that hold a running (not absent) guest vCPU, one bit each: compared whole, so
    /// an event that starts or stops no guest costs one compare.
    guests: SlotBits,
    /// Guest vCPUs waiting for the answer about an event that is not a hypercall: a reply
    /// that lets one run again bounced the event to the guest's own handler.
    guest_events: SlotBits,
}

/// One bit per slot of the thread table.
type SlotBits = u16;
const _: () = assert!(MAX_THREADS <= SlotBits::BITS as usize);

fn bit(slot: usize) -> SlotBits {
    1 << slot
}

/// Whether a forwarded thread waits for a hypercall's answer: a guest vCPU's `syscall` in
/// guest-kernel mode (guest-user mode's goes to the guest kernel as an event). A hypercall
/// keeps no `pending` event (`forward::hypercall`); every other forwarded event does.
pub fn is_hypercall(thread: &Thread) -> bool {
    matches!(thread.kind(), Kind::GuestVcpu { .. })
        && thread.vcpu.mode != GuestMode::User
        && thread
            .pending
            .is_none_or(|p| p.event.kind == ipc::EventKind::Syscall)
}

impl Snapshot {
    pub fn take(t: &Threads) -> Self {
        let mut waiting_for = [None; MAX_THREADS];
        for (slot, id) in waiting_for.iter_mut().zip(t.ids()) {
            if let State::WaitingForReply(token) = t.get(id).state() {
                *slot = Some(token);
            }
        }
        // Guests only in the guest slots that may be in use (none: nothing more to look at).
        let (mut guests, mut guest_events) = (0, 0);
        for (slot, id) in t
            .ids()
            .enumerate()
            .take(t.slots_in_use())
            .skip(BOOT_THREADS.len())
        {
            let thread = t.get(id);
            if !thread.is_absent() {
                guests |= bit(slot);
            }
            if waiting_for[slot].is_some() && !is_hypercall(thread) {
                guest_events |= bit(slot);
            }
        }
        Self {
            current: t.current(),
            waiting_for,
            guests,
            guest_events,
        }
    }

    /// The thread whose context is live (`None`: the idle loop).
    pub fn current(&self) -> Option<ThreadId> {
        self.current
    }

    /// Whether the guest vCPU in `slot` runs.
    pub fn guest_runs(&self, slot: usize) -> bool {
        self.guests & bit(slot) != 0
    }

    /// Whether the guest vCPU in `slot` waits for the answer about one of its events (not a
    /// hypercall).
    pub fn guest_event_waits(&self, slot: usize) -> bool {
        self.guest_events & bit(slot) != 0
    }
}

/// One thing an event did to the thread table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The reply about thread `to`'s event `token` was taken.
    Reply { to: usize, token: Token },
    /// Thread `from`'s event went to its fault handler under `token`.
    Forwarded { from: usize, token: Token },
    /// A guest vCPU started in `slot`.
    GuestStarted { slot: usize },
    /// The guest vCPU in `slot` stopped (its domain shut down or was ended).
    GuestStopped { slot: usize },
    /// The CPU runs another thread (`None`: the idle loop).
    Switch {
        from: Option<ThreadId>,
        to: Option<ThreadId>,
    },
}

/// What changed between two snapshots: replies, new forwards, then the switch.
pub fn changes(before: &Snapshot, after: &Snapshot) -> impl Iterator<Item = Change> {
    let pairs = before.waiting_for.into_iter().zip(after.waiting_for);
    let replies = pairs.clone().enumerate().filter_map(|(to, (was, is))| {
        let token = was?;
        (is != Some(token)).then_some(Change::Reply { to, token })
    });
    let forwards = pairs.enumerate().filter_map(|(from, (was, is))| {
        let token = is?;
        (was != Some(token)).then_some(Change::Forwarded { from, token })
    });
    let switch = (before.current != after.current).then_some(Change::Switch {
        from: before.current,
        to: after.current,
    });
    replies.chain(forwards).chain(switch)
}

/// The guests started or stopped between two snapshots (rare: apart from [`changes`], so
/// the common event pays one compare for them).
pub fn guest_changes(before: &Snapshot, after: &Snapshot) -> impl Iterator<Item = Change> {
    let (was, is) = (before.guests, after.guests);
    (0..if was == is { 0 } else { MAX_THREADS }).filter_map(move |slot| {
        match (was & bit(slot) != 0, is & bit(slot) != 0) {
            (false, true) => Some(Change::GuestStarted { slot }),
            (true, false) => Some(Change::GuestStopped { slot }),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with `current` running and each `(slot, token)` waiting for that reply.
    fn snapshot(current: Option<usize>, waiting: &[(usize, u64)]) -> Snapshot {
        with_guests(current, waiting, &[])
    }

    /// The same, with guest vCPUs running in `guest_slots`.
    fn with_guests(
        current: Option<usize>,
        waiting: &[(usize, u64)],
        guest_slots: &[usize],
    ) -> Snapshot {
        let t = Threads::new();
        let id = |i: usize| t.ids().nth(i).expect("a slot");
        let mut waiting_for = [None; MAX_THREADS];
        for &(slot, token) in waiting {
            waiting_for[slot] = Some(Token(token));
        }
        Snapshot {
            current: current.map(id),
            waiting_for,
            guests: guest_slots.iter().fold(0, |bits, &slot| bits | bit(slot)),
            guest_events: 0,
        }
    }

    #[test]
    fn an_event_forwarded_and_a_reply_taken_are_seen_with_the_switch() {
        let t = Threads::new();
        let ids: Vec<ThreadId> = t.ids().collect();
        // pv-server (slot 1) faults: its event goes to fred-server under token 7.
        let before = snapshot(Some(1), &[]);
        let after = snapshot(Some(0), &[(1, 7)]);
        assert_eq!(
            changes(&before, &after).collect::<Vec<_>>(),
            [
                Change::Forwarded {
                    from: 1,
                    token: Token(7)
                },
                Change::Switch {
                    from: Some(ids[1]),
                    to: Some(ids[0])
                }
            ]
        );
        // fred-server answers token 7; a new fault of pv-server waits under token 8.
        let later = snapshot(Some(0), &[(1, 8)]);
        assert_eq!(
            changes(&after, &later).collect::<Vec<_>>(),
            [
                Change::Reply {
                    to: 1,
                    token: Token(7)
                },
                Change::Forwarded {
                    from: 1,
                    token: Token(8)
                }
            ]
        );
        assert_eq!(changes(&later, &later).count(), 0);
    }

    #[test]
    fn a_guest_started_its_hypercall_and_its_end_are_seen() {
        // pv-server (slot 1) starts domain 1's vCPU in slot 2.
        let before = snapshot(Some(1), &[]);
        let started = with_guests(Some(1), &[], &[2]);
        assert_eq!(changes(&before, &started).count(), 0);
        assert_eq!(
            guest_changes(&before, &started).collect::<Vec<_>>(),
            [Change::GuestStarted { slot: 2 }]
        );
        // Its hypercall waits for pv-server under token 4; then pv-server ends the domain.
        let waiting = with_guests(Some(1), &[(2, 4)], &[2]);
        assert_eq!(
            changes(&started, &waiting).collect::<Vec<_>>(),
            [Change::Forwarded {
                from: 2,
                token: Token(4)
            }]
        );
        let ended = snapshot(Some(1), &[]);
        assert_eq!(
            changes(&waiting, &ended).collect::<Vec<_>>(),
            [Change::Reply {
                to: 2,
                token: Token(4)
            }]
        );
        assert_eq!(
            guest_changes(&waiting, &ended).collect::<Vec<_>>(),
            [Change::GuestStopped { slot: 2 }]
        );
        assert_eq!(guest_changes(&ended, &ended).count(), 0);
    }
}
