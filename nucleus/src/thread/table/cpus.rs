//! Which CPU runs what: the borrowing CPU and its live thread, where threads are placed
//! (the placement policy for guests), and the reschedule IPIs a wake-up on another CPU
//! needs. Part of the table: these read and write its per-CPU fields.
use super::{NOWHERE, Threads};
use crate::layout::MAX_CPUS;
use crate::thread::layout::ThreadId;

/// Where the placement policy put a guest vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the online CPU its `cpu=` named.
    Pinned(u8),
    /// Not pinned: the policy's pick.
    Spread(u8),
    /// Its `cpu=` named CPU `asked`, which is not online: the policy's pick instead.
    NotOnline { asked: u8, cpu: u8 },
}

impl Placement {
    pub fn cpu(self) -> u8 {
        match self {
            Self::Pinned(cpu) | Self::Spread(cpu) | Self::NotOnline { cpu, .. } => cpu,
        }
    }
}

impl Threads {
    /// CPU `cpu` borrows the table: its `current` comes in.
    #[inline(always)]
    pub(super) fn enter(&mut self, cpu: usize) {
        if cpu != self.here {
            self.current_by_cpu[self.here] = self.current;
            self.here = cpu;
            self.current = self.current_by_cpu[cpu];
        }
    }

    /// The borrow ends: `current_by_cpu` holds every CPU's again; returns the CPUs to wake
    /// (only ever marked once threads are spread).
    #[inline(always)]
    pub(super) fn leave(&mut self) -> u32 {
        if self.spread {
            self.current_by_cpu[self.here] = self.current;
            core::mem::take(&mut self.wakes)
        } else {
            0
        }
    }

    /// The thread live on the borrowing CPU.
    #[inline(always)]
    pub fn current(&self) -> Option<ThreadId> {
        self.current
    }

    pub fn set_current(&mut self, id: Option<ThreadId>) {
        self.current = id;
    }

    /// What CPU `cpu` runs (the borrowing CPU's from `current`).
    fn current_of(&self, cpu: usize) -> Option<ThreadId> {
        if cpu == self.here {
            self.current
        } else {
            self.current_by_cpu[cpu]
        }
    }

    /// Host tests: borrow as CPU `cpu`.
    #[cfg(test)]
    pub fn set_here(&mut self, cpu: usize) {
        self.enter(cpu);
    }

    /// The borrowing CPU's number.
    #[inline(always)]
    pub fn here(&self) -> usize {
        self.here
    }

    /// Places thread `id` on CPU `cpu` (the placement policy: `startup`).
    pub fn place(&mut self, id: ThreadId, cpu: u8) {
        self.threads[id.0].cpu = cpu;
        if cpu != 0 {
            self.spread = true;
        }
    }

    /// Where guest vCPU `id` runs (the placement policy for guests): `pinned` if that CPU is
    /// online (bit N of `online`), else the online CPU with the fewest live threads placed on
    /// it, the lowest number on a tie (so guests spread over the CPUs the servers leave
    /// free). Places it there.
    pub fn place_guest(&mut self, id: ThreadId, pinned: Option<u8>, online: u32) -> Placement {
        let online = online | 1; // the boot CPU always
        let is_online = |cpu: u8| cpu < 32 && online & (1 << cpu) != 0;
        let placement = match pinned {
            Some(cpu) if is_online(cpu) => Placement::Pinned(cpu),
            _ => {
                let load = |cpu: u8| {
                    self.ids()
                        .filter(|&other| other != id)
                        .filter(|&other| !self.get(other).is_absent() && self.get(other).cpu == cpu)
                        .count()
                };
                let least = (0..32u8)
                    .filter(|&cpu| is_online(cpu))
                    .min_by_key(|&cpu| (load(cpu), cpu))
                    .unwrap_or(0);
                match pinned {
                    Some(asked) => Placement::NotOnline { asked, cpu: least },
                    None => Placement::Spread(least),
                }
            }
        };
        self.place(id, placement.cpu());
        placement
    }

    /// Whether thread `id` is live on a CPU other than the borrowing one (its context is
    /// that CPU's, which may be running it in ring 3 or be on its way into the nucleus).
    pub fn live_elsewhere(&self, id: ThreadId) -> bool {
        (0..MAX_CPUS).any(|cpu| cpu != self.here && self.current_of(cpu) == Some(id))
    }

    /// Takes thread `id` off every run queue (no CPU picks it again) and marks the CPU it
    /// was placed on for a reschedule IPI, so that CPU switches away from it at its next
    /// event: what another CPU must do before it may stop a thread live there.
    pub fn unplace(&mut self, id: ThreadId) {
        let cpu = usize::from(self.threads[id.0].cpu);
        self.threads[id.0].cpu = NOWHERE;
        if cpu < MAX_CPUS && cpu != self.here {
            self.wakes |= 1 << cpu;
        }
    }

    /// Marks for a reschedule IPI (sent once the borrow ends, [`with`](super::with)) every other CPU that
    /// has a runnable thread placed on it which it is not running (a ring message or a reply
    /// woke it). Costs one test while every thread is on the boot CPU.
    #[inline(always)]
    pub fn wake_remote(&mut self) {
        if self.spread {
            self.wake_remote_cpus();
        }
    }

    #[inline(never)]
    fn wake_remote_cpus(&mut self) {
        for (index, thread) in self.threads.iter().enumerate() {
            let cpu = usize::from(thread.cpu);
            if cpu != self.here
                && cpu < MAX_CPUS
                && thread.runnable()
                && self.current_of(cpu) != Some(ThreadId(index))
            {
                self.wakes |= 1 << cpu;
            }
        }
    }

    /// Host tests: the CPUs marked for a reschedule IPI, cleared.
    #[cfg(test)]
    pub fn take_wakes(&mut self) -> u32 {
        core::mem::take(&mut self.wakes)
    }

    /// Whether thread `id` sleeps in `RingWait` on the borrowing CPU: an event for it may
    /// switch to it at once.
    #[inline(always)]
    pub fn waits_here(&self, id: ThreadId) -> bool {
        let thread = self.get(id);
        thread.state() == crate::thread::State::WaitingForEvents
            && usize::from(thread.cpu) == self.here
    }

    /// Whether thread `id` is placed on the borrowing CPU: a direct switch to it may happen
    /// here.
    #[inline(always)]
    pub fn placed_here(&self, id: ThreadId) -> bool {
        usize::from(self.get(id).cpu) == self.here
    }
}
