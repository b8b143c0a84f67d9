//! One slot of the thread table: a thread's fields and the verbs that change its state.
use super::layout::{BOOT_THREADS, GUEST_MANAGER, ThreadId};
use crate::mm::AddressSpace;
use bsp_x86_64::frame::Frame;
use bsp_x86_64::gdt;
use ipc::ring::{Consumer, Producer};
use ipc::{Event, Token};
use xen_abi::layout::selector::{FLAT_RING3_CS64, FLAT_RING3_SS64};

/// Where a thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started: missing module, rejected image, or killed.
    Absent,
    Ready,
    /// Waiting in `RingWait` for the nucleus to push to its event ring.
    WaitingForEvents,
    /// Waiting for its fault handler's reply about its event `Token`.
    WaitingForReply(Token),
    /// Killed, to be loaded again from its module at tick `at` (the restart backoff).
    Restarting {
        at: u64,
    },
}

/// The code and stack selectors every server runs on in Ring3 ([`Thread::segments`]).
pub const SERVER_SEGMENTS: (u16, u16) = (gdt::USER_CS64.raw(), gdt::USER_DS.raw());

/// Complaints about one thread's messages printed per tick; the rest are counted.
pub const COMPLAINTS_PER_TICK: u32 = 4;

/// An event forwarded to the fault handler and not answered yet, kept so a handler that dies
/// before answering does not strand the thread.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub token: Token,
    pub event: Event,
}

/// What a thread is. The scheduler never looks (it picks, switches and watches both kinds
/// alike); the event path does (a guest's `syscall` is a hypercall), and the thread itself
/// answers what differs when it is entered ([`Thread::segments`], [`Thread::root`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Ring3 server: started from a boot module, its own address space and two rings.
    Server,
    /// A guest vCPU of `domain`: no rings, no address space of its own (it runs on the
    /// domain's validated tables, `guest_root`), its events go to [`GUEST_MANAGER`].
    GuestVcpu { domain: u16 },
}

pub struct Thread {
    name: &'static str,
    /// A server or a guest vCPU: the scheduler runs both alike and never asks.
    pub(super) kind: Kind,
    /// The machine address of the L4 a guest vCPU runs on.
    pub guest_root: Option<bsp_x86_64::paging::PhysAddr>,
    /// A guest vCPU's mode and user tables.
    pub vcpu: super::guest_vcpu::GuestVcpu,
    /// A guest vCPU's FS/GS bases and GS selector (`set_segment_base`; zero for servers).
    pub bases: bsp_x86_64::guest_segments::SegmentBases,
    /// The GDT and LDT it runs on (a guest's window once it has descriptor tables; the
    /// CPU's own otherwise), set by `domains::descriptors`.
    pub tables: bsp_x86_64::gdt::DescriptorView,
    /// A guest vCPU's DS, ES, FS and GS selectors while it does not run.
    pub selectors: bsp_x86_64::guest_selectors::DataSelectors,
    /// `selectors` changed while the CPU may hold the old ones: load them at the next run.
    pub selectors_stale: bool,
    /// Who gets this thread's events; `None`: the nucleus reports them itself.
    pub(super) fault_handler: Option<ThreadId>,
    /// The CPU (bring-up number) it runs on: its run queue is that CPU's (`Threads::place`).
    pub(super) cpu: u8,
    /// Some thread's fault handler (fixed at boot, so the reply path need not search).
    pub(super) handles_faults: bool,
    /// The boot module the thread is (re)loaded from.
    module: Option<core::ops::Range<u64>>,
    state: State,
    pub space: Option<AddressSpace>,
    /// A fresh start's frame (a loaded image's entry, a guest vCPU's first context), moved
    /// into the save area when the thread is next entered (`Threads::area_mut`): a thread may
    /// be restarted while its area is the live frame.
    pub(super) fresh: Option<Frame>,
    pub events: Option<Producer<'static>>,
    pub replies: Option<Consumer<'static>>,
    pub(super) hello: bool,
    generation: u32,
    restarts: u32,
    /// Timer ticks that found this thread running in Ring3 since its last syscall: the
    /// watchdog counts CPU time, not wall time, so a thread that slept long is not hung.
    ticks_without_syscall: u64,
    pub pending: Option<Pending>,
    /// The register dump that went with `pending` (faults and hangs; not `int3`). Kept apart
    /// so the hot `int3` path never moves a dump-sized value.
    pub pending_dump: Option<ipc::dump::RegisterDump>,
    /// What it may still print before the next tick (`ipc::console`).
    pub console: ipc::console::Budget,
    /// The tick its console budget was last refilled at.
    console_refilled: u64,
    /// `Log` messages dropped for want of console budget, not reported yet.
    logs_dropped: u32,
    /// Restarts since its budget was last fresh, and the tick of the last one.
    recent_restarts: u32,
    last_restart: u64,
    /// Complaint lines about its messages printed in this tick, and those withheld.
    complaints: u32,
    complaints_withheld: u32,
}

impl Thread {
    pub(super) const fn new(id: ThreadId) -> Self {
        if id.0 >= BOOT_THREADS.len() {
            return Self::guest_slot((id.0 - BOOT_THREADS.len() + 1) as u16);
        }
        let boot = BOOT_THREADS[id.0];
        let mut handles_faults = false;
        let mut i = 0;
        while i < BOOT_THREADS.len() {
            if let Some(ThreadId(h)) = BOOT_THREADS[i].fault_handler
                && h == id.0
            {
                handles_faults = true;
            }
            i += 1;
        }
        Self::absent(boot.name, Kind::Server, boot.fault_handler, handles_faults)
    }

    /// An empty guest vCPU slot for domain `domain`.
    const fn guest_slot(domain: u16) -> Self {
        Self::absent(
            "guest",
            Kind::GuestVcpu { domain },
            Some(GUEST_MANAGER),
            false,
        )
    }

    /// A slot that holds nothing yet: every field but who it is and who handles its faults
    /// starts empty, for servers and guest vCPUs alike.
    const fn absent(
        name: &'static str,
        kind: Kind,
        fault_handler: Option<ThreadId>,
        handles_faults: bool,
    ) -> Self {
        Self {
            name,
            kind,
            guest_root: None,
            vcpu: super::guest_vcpu::GuestVcpu::NEW,
            bases: bsp_x86_64::guest_segments::SegmentBases::ZERO,
            tables: bsp_x86_64::gdt::DescriptorView {
                gdt_base: 0,
                ldt: false,
            },
            selectors: bsp_x86_64::guest_selectors::DataSelectors::NULL,
            selectors_stale: false,
            fault_handler,
            cpu: 0,
            handles_faults,
            module: None,
            state: State::Absent,
            space: None,
            fresh: None,
            events: None,
            replies: None,
            hello: false,
            generation: 0,
            restarts: 0,
            ticks_without_syscall: 0,
            pending: None,
            pending_dump: None,
            console: ipc::console::Budget::new(),
            console_refilled: 0,
            logs_dropped: 0,
            recent_restarts: 0,
            last_restart: 0,
            complaints: 0,
            complaints_withheld: 0,
        }
    }

    /// The CPU it is placed on (`Threads::place`; `NOWHERE`: none).
    #[cfg(test)]
    pub fn cpu(&self) -> u8 {
        self.cpu
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The domain of a guest vCPU.
    pub fn domain(&self) -> Option<u16> {
        match self.kind {
            Kind::GuestVcpu { domain } => Some(domain),
            Kind::Server => None,
        }
    }

    /// The owner number its events carry: the slot for servers, `guest_owner(domain)` for
    /// guest vCPUs.
    pub fn owner(&self, id: ThreadId) -> u32 {
        match self.kind {
            Kind::GuestVcpu { domain } => ipc::domain::guest_owner(domain),
            Kind::Server => id.owner(),
        }
    }

    /// The code and stack selectors it runs on in Ring3: the 64-bit user segments for a
    /// server, Xen's flat ones for a guest vCPU (the same selectors: Xen's layout).
    pub fn segments(&self) -> (u16, u16) {
        match self.kind {
            Kind::GuestVcpu { .. } => (FLAT_RING3_CS64, FLAT_RING3_SS64),
            Kind::Server => SERVER_SEGMENTS,
        }
    }

    /// The tables the CPU walks while it runs.
    pub fn root(&self) -> Option<bsp_x86_64::paging::PhysAddr> {
        self.space
            .as_ref()
            .map(|s| s.root())
            .or(self.vcpu.root(self.guest_root))
    }

    /// A guest vCPU starts at `frame` on the tables at `root`.
    pub fn start_guest(&mut self, root: bsp_x86_64::paging::PhysAddr, frame: Frame) {
        self.guest_root = Some(root);
        self.vcpu = super::guest_vcpu::GuestVcpu::NEW;
        self.bases = bsp_x86_64::guest_segments::SegmentBases::ZERO;
        self.tables = bsp_x86_64::gdt::DescriptorView::default();
        self.selectors = bsp_x86_64::guest_selectors::DataSelectors::NULL;
        self.selectors_stale = true;
        self.fresh = Some(frame);
        self.state = State::Ready;
        self.hello = true;
        self.ticks_without_syscall = 0;
    }

    pub fn fault_handler(&self) -> Option<ThreadId> {
        self.fault_handler
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn module(&self) -> Option<core::ops::Range<u64>> {
        self.module.clone()
    }

    pub fn set_module(&mut self, range: core::ops::Range<u64>) {
        self.module = Some(range);
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    #[cfg(test)]
    pub fn said_hello(&self) -> bool {
        self.hello
    }

    /// Not running and not coming back by itself: never started, killed, given up. A thread
    /// waiting out its restart backoff is absent too (no rings, no frame), but
    /// [`Thread::restart_due`] brings it back.
    pub fn is_absent(&self) -> bool {
        matches!(self.state, State::Absent | State::Restarting { .. })
    }

    /// Waiting out its restart backoff.
    pub fn is_restarting(&self) -> bool {
        matches!(self.state, State::Restarting { .. })
    }

    /// Its backoff is over at tick `now`: it becomes absent, to be loaded by the caller.
    pub fn restart_due(&mut self, now: u64) -> bool {
        match self.state {
            State::Restarting { at } if now >= at => {
                self.state = State::Absent;
                true
            }
            _ => false,
        }
    }

    pub fn runnable(&self) -> bool {
        self.state == State::Ready
    }

    pub fn waits_for(&self, token: Token) -> bool {
        self.state == State::WaitingForReply(token)
    }

    /// A freshly loaded image: runnable from `frame`, no hello yet, watchdog reset.
    pub fn start(&mut self, space: AddressSpace, frame: Frame) {
        self.fresh = Some(frame);
        self.space = Some(space);
        self.state = State::Ready;
        self.hello = false;
        self.ticks_without_syscall = 0;
    }

    /// Stopped for good (until restarted): rings and the unanswered event go with it. The
    /// caller has taken the address space.
    pub fn stop(&mut self) {
        self.events = None;
        self.replies = None;
        self.pending = None;
        self.state = State::Absent;
        self.hello = false;
    }

    /// Counts a restart at tick `now` against the budget, which refills once the thread ran
    /// `window` ticks since its last restart. `Ok(n)`: restart `n` of this run of restarts
    /// (the next image is a new generation); `Err(n)`: the budget of `budget` restarts is
    /// spent, after `n`.
    pub fn count_restart(&mut self, now: u64, budget: u32, window: u64) -> Result<u32, u32> {
        if self.recent_restarts > 0 && now.saturating_sub(self.last_restart) > window {
            self.recent_restarts = 0;
        }
        if self.recent_restarts >= budget {
            return Err(self.recent_restarts);
        }
        self.recent_restarts += 1;
        self.last_restart = now;
        self.restarts += 1;
        self.generation += 1;
        Ok(self.recent_restarts)
    }

    /// Waits out a restart backoff until tick `at`.
    pub fn restart_at(&mut self, at: u64) {
        self.state = State::Restarting { at };
    }

    /// May one more line complaining about its messages be printed now? (A server must not
    /// make the nucleus flood the console on its behalf either.)
    pub fn may_complain(&mut self, per_tick: u32) -> bool {
        if self.complaints < per_tick {
            self.complaints += 1;
            true
        } else {
            self.complaints_withheld = self.complaints_withheld.saturating_add(1);
            false
        }
    }

    /// Refills its console budget for the ticks that passed since the last refill, if the
    /// tick itself could not: a tick that lands inside the nucleus only counts (Bochs'
    /// FRED model delivers them with IF = 0, issue 14), so a server that loops on
    /// `console_write` spends nearly all its time there and would wait for a refill forever.
    pub fn console_catch_up(&mut self) {
        let now = crate::timer::ticks();
        if now != self.console_refilled {
            self.console.tick();
            self.console_refilled = now;
        }
    }

    /// A `Log` message found no console budget.
    pub fn drop_log(&mut self) {
        self.logs_dropped = self.logs_dropped.saturating_add(1);
    }

    /// The tick: a fresh console allowance; returns the `Log` lines and complaints withheld
    /// since the last report, for one line each (and starts counting again).
    pub fn console_tick(&mut self) -> (u32, u32) {
        self.console.tick();
        self.console_refilled = crate::timer::ticks();
        self.complaints = 0;
        let withheld = core::mem::take(&mut self.complaints_withheld);
        let logs = match self.console.available() {
            true => core::mem::take(&mut self.logs_dropped),
            false => 0,
        };
        (logs, withheld)
    }

    pub fn greet(&mut self) {
        self.hello = true;
    }

    /// An event arrived: a thread sleeping in `RingWait` becomes runnable.
    pub fn wake(&mut self) {
        if self.state == State::WaitingForEvents {
            self.state = State::Ready;
        }
    }

    pub fn block_on_events(&mut self) {
        self.state = State::WaitingForEvents;
    }

    pub fn block_on_reply(&mut self, token: Token) {
        self.state = State::WaitingForReply(token);
    }

    /// Its fault handler answered: the pending event is settled (what happens to the thread
    /// is the answer's business).
    pub fn settle(&mut self) {
        // The watchdog's count stays: an answered event is not a syscall, and a thread that
        // only ever traps (an `int3` loop) is as hung as one that spins.
        self.pending = None;
    }

    /// It may run again.
    pub fn resume(&mut self) {
        self.state = State::Ready;
    }

    /// It made a syscall: the watchdog starts over.
    pub fn made_syscall(&mut self) {
        self.ticks_without_syscall = 0;
    }

    /// One more tick in Ring3 without a syscall; true (and the count starts over) once it
    /// exceeds `limit`.
    pub fn tick_exceeds(&mut self, limit: u64) -> bool {
        self.ticks_without_syscall += 1;
        if self.ticks_without_syscall > limit {
            self.ticks_without_syscall = 0;
            return true;
        }
        false
    }

    /// Whether its event ring holds messages it has not taken yet.
    #[inline(always)]
    pub fn has_events(&self) -> bool {
        self.events
            .as_ref()
            .is_some_and(|r| !r.is_empty().unwrap_or(true))
    }
}
