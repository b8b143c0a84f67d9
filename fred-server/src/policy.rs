//! What happens to a server after one of its events: resume, restart, or give up.
//!
//! Per owner, crashes are counted for the life of fred-server (owner ids stay the same
//! across restarts, see `NucleusMessage::ServerStarted`). The first [`MAX_RESTARTS`] crashes
//! restart the server from its module image; the next one kills it for good, and
//! fred-server says so once. `int3` is a debug aid and is resumed. Anything else that
//! reaches us (interrupts, syscalls, events not from Ring3) is not a fault we understand and
//! is killed, with the reason. Call gates are decided in [`crate::callgate`] first.

use core::fmt;

use heapless::Vec;
use ipc::{Event, EventKind};

/// Restarts granted per owner before fred-server gives up.
pub const MAX_RESTARTS: u32 = 3;
/// Owners whose crashes are counted (servers, later guests); beyond that, no restarts.
pub const MAX_OWNERS: usize = 16;

/// Why an event is answered with `Kill` without a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// The event is not one a Ring3 fault policy applies to.
    Unexpected(EventKind),
    /// The event did not come from Ring3.
    NotFromRing3 { ring: u8 },
    /// The crash table is full, so this owner's crashes cannot be counted.
    TooManyOwners,
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected(kind) => write!(f, "unexpected event {kind:?}"),
            Self::NotFromRing3 { ring } => write!(f, "event from ring {ring}, not Ring3"),
            Self::TooManyOwners => write!(f, "more than {MAX_OWNERS} crashing owners"),
        }
    }
}

/// The policy's answer to one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Continue the thread (`int3`).
    Resume,
    /// Crash number `crash` (1..=MAX_RESTARTS): restart from the image.
    Restart {
        crash: u32,
    },
    /// Crash number `crashes` > MAX_RESTARTS: kill for good.
    GiveUp {
        crashes: u32,
    },
    Kill(KillReason),
}

/// Crash counts per owner.
#[derive(Debug, Default)]
pub struct Policy {
    crashes: Vec<(u32, u32), MAX_OWNERS>,
}

impl Policy {
    pub const fn new() -> Self {
        Self {
            crashes: Vec::new(),
        }
    }

    /// Crashes counted for `owner` so far.
    #[cfg(test)]
    pub fn crashes(&self, owner: u32) -> u32 {
        self.crashes
            .iter()
            .find(|(o, _)| *o == owner)
            .map_or(0, |&(_, count)| count)
    }

    /// Decides about `event` (and counts it if it is a crash).
    pub fn decide(&mut self, event: &Event) -> Decision {
        if event.from_ring != 3 {
            return Decision::Kill(KillReason::NotFromRing3 {
                ring: event.from_ring,
            });
        }
        match event.kind {
            EventKind::SoftwareException { vector: 3 } => Decision::Resume,
            // The nucleus forwards an interrupt only when it caught the thread hung (no
            // syscall for seconds) with it: as much a crash as a fault.
            EventKind::Exception { .. } | EventKind::Interrupt { .. } => {
                match self.count_crash(event.owner) {
                    Some(crash) if crash <= MAX_RESTARTS => Decision::Restart { crash },
                    Some(crashes) => Decision::GiveUp { crashes },
                    None => Decision::Kill(KillReason::TooManyOwners),
                }
            }
            kind => Decision::Kill(KillReason::Unexpected(kind)),
        }
    }

    fn count_crash(&mut self, owner: u32) -> Option<u32> {
        if let Some(entry) = self.crashes.iter_mut().find(|(o, _)| *o == owner) {
            entry.1 = entry.1.saturating_add(1);
            return Some(entry.1);
        }
        self.crashes.push((owner, 1)).ok()?;
        Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(kind: EventKind, owner: u32) -> Event {
        Event {
            cpu: 0,
            kind,
            event_data: 0,
            rip: 0x40_1000,
            cs: 0x33,
            rflags: 0x202,
            rsp: 0x7fff_fef0_0000,
            ss: 0x2b,
            from_ring: 3,
            insn_len: 0,
            owner,
        }
    }

    #[test]
    fn three_restarts_then_give_up_per_owner() {
        let mut policy = Policy::new();
        let pf = EventKind::Exception {
            vector: 14,
            error_code: 6,
        };
        for crash in 1..=3 {
            assert_eq!(policy.decide(&event(pf, 2)), Decision::Restart { crash });
        }
        assert_eq!(
            policy.decide(&event(pf, 2)),
            Decision::GiveUp { crashes: 4 }
        );
        // Another owner has its own count.
        assert_eq!(policy.decide(&event(pf, 3)), Decision::Restart { crash: 1 });
        assert_eq!(policy.crashes(2), 4);
    }

    #[test]
    fn int3_resumes_hangs_restart_and_the_rest_is_killed() {
        let mut policy = Policy::new();
        let int3 = EventKind::SoftwareException { vector: 3 };
        assert_eq!(policy.decide(&event(int3, 2)), Decision::Resume);
        assert_eq!(policy.crashes(2), 0);
        let irq = EventKind::Interrupt { vector: 32 };
        assert_eq!(
            policy.decide(&event(irq, 2)),
            Decision::Restart { crash: 1 }
        );
        let syscall = EventKind::Syscall;
        assert_eq!(
            policy.decide(&event(syscall, 2)),
            Decision::Kill(KillReason::Unexpected(syscall))
        );
        let mut ring0 = event(
            EventKind::Exception {
                vector: 13,
                error_code: 0,
            },
            2,
        );
        ring0.from_ring = 0;
        assert_eq!(
            policy.decide(&ring0),
            Decision::Kill(KillReason::NotFromRing3 { ring: 0 })
        );
    }

    #[test]
    fn a_full_table_kills_instead_of_restarting() {
        let mut policy = Policy::new();
        let ud = EventKind::Exception {
            vector: 6,
            error_code: 0,
        };
        for owner in 0..MAX_OWNERS as u32 {
            policy.decide(&event(ud, owner));
        }
        assert_eq!(
            policy.decide(&event(ud, 99)),
            Decision::Kill(KillReason::TooManyOwners)
        );
    }
}
