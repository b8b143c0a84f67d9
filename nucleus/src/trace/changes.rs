//! What one event did to the thread table: two snapshots, before and after the dispatcher,
//! and the differences the trace records.
use crate::thread::{MAX_THREADS, State, ThreadId, Threads};
use ipc::Token;

/// What the trace needs to know about the thread table, before and after one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    current: Option<ThreadId>,
    waiting_for: [Option<Token>; MAX_THREADS],
}

impl Snapshot {
    pub fn take(t: &Threads) -> Self {
        let mut waiting_for = [None; MAX_THREADS];
        for (slot, id) in waiting_for.iter_mut().zip(t.ids()) {
            if let State::WaitingForReply(token) = t.get(id).state() {
                *slot = Some(token);
            }
        }
        Self {
            current: t.current(),
            waiting_for,
        }
    }

    /// The thread whose context is live (`None`: the idle loop).
    pub fn current(&self) -> Option<ThreadId> {
        self.current
    }
}

/// One thing an event did to the thread table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The reply about thread `to`'s event `token` was taken.
    Reply { to: usize, token: Token },
    /// Thread `from`'s event went to its fault handler under `token`.
    Forwarded { from: usize, token: Token },
    /// The CPU runs another thread (`None`: the idle loop).
    Switch {
        from: Option<ThreadId>,
        to: Option<ThreadId>,
    },
}

/// What changed between two snapshots: replies, then new forwards, then the switch.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with `current` running and each `(slot, token)` waiting for that reply.
    fn snapshot(current: Option<usize>, waiting: &[(usize, u64)]) -> Snapshot {
        let t = Threads::new();
        let id = |i: usize| t.ids().nth(i).expect("a slot");
        let mut waiting_for = [None; MAX_THREADS];
        for &(slot, token) in waiting {
            waiting_for[slot] = Some(Token(token));
        }
        Snapshot {
            current: current.map(id),
            waiting_for,
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
}
