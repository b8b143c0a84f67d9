//! The table itself: every slot, the live thread, tokens, and the one checked borrow.
use super::areas::{LiveFrame, SaveAreas};
use super::layout::{BOOT_THREADS, GUEST_SLOTS, MAX_THREADS, ThreadId};
use super::slot::{Kind, Thread};
use crate::layout::MAX_CPUS;
use crate::racy::CpuLock;
use bsp_x86_64::cmdline::Options;
use bsp_x86_64::frame::Frame;
use core::fmt;
use ipc::{NucleusMessage, Token};

mod cpus;

pub use cpus::Placement;

/// Every thread started at boot has said hello (or is gone): `nucleus: ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterReady {
    /// Carry on scheduling.
    Run,
    /// Start the ring benchmark.
    Bench,
}

/// The CPU number of a thread placed on no CPU (`Threads::unplace`): never picked.
pub const NOWHERE: u8 = u8::MAX;

pub struct Threads {
    threads: [Thread; MAX_THREADS],
    /// The thread whose context is live on the borrowing CPU, `None` while it idles: that
    /// CPU's entry of `current_by_cpu`, moved here for the borrow ([`with`]), so the hot
    /// path reads a field, not an indexed array.
    current: Option<ThreadId>,
    /// Per CPU (by bring-up number): the same for the other CPUs.
    current_by_cpu: [Option<ThreadId>; MAX_CPUS],
    /// The CPU that holds the borrow (set by [`with`]).
    here: usize,
    /// Some thread is placed off the boot CPU: wake-ups may need an IPI ([`Threads::wake_remote`]).
    spread: bool,
    /// CPUs (bit per number) to send a reschedule IPI once the borrow ends.
    wakes: u32,
    next_token: u64,
    ready_printed: bool,
    /// Called once, when every started thread said hello (`startup` prints the marker).
    on_ready: Option<fn() -> AfterReady>,
    pub options: Option<Options>,
    /// Every thread's register save area (its saved context while it does not run).
    areas: SaveAreas,
}

static THREADS: CpuLock<Threads> = CpuLock::new(Threads::with_areas(super::areas::table_areas()));

/// The thread table, for `dispatch` and `startup` only: each event borrows it once. Every
/// CPU borrows it (a spin lock: the first in the lock order, the console's is taken inside
/// it); a CPU waiting for it answers TLB shootdowns meanwhile.
#[inline(always)]
pub fn with<R>(f: impl FnOnce(&mut Threads) -> R) -> R {
    let cpu = crate::cpu::this_cpu_number();
    // The closure inlined by force: out of line, every event paid for passing its handler's
    // captures through memory and a call (the syscall path's grew past LLVM's threshold).
    let (result, wakes) = THREADS.with(
        cpu,
        crate::cpu::ipi::answer_shootdowns,
        #[inline(always)]
        |t| {
            t.enter(cpu as usize);
            let result = f(t);
            (result, t.leave())
        },
    );
    // After the borrow: the woken CPU's first step is to borrow the table.
    if wakes != 0 {
        send_wakes(wakes);
    }
    result
}

#[inline(never)]
fn send_wakes(mut wakes: u32) {
    while wakes != 0 {
        let cpu = wakes.trailing_zeros() as usize;
        wakes &= wakes - 1;
        crate::cpu::ipi::wake_cpu(cpu);
    }
}

/// The thread table unless it is lent already: for the trace, which looks at it before and
/// after each event, also one that interrupted a borrower (an NMI, a nested tick).
pub fn try_with<R>(f: impl FnOnce(&mut Threads) -> R) -> Option<R> {
    let cpu = crate::cpu::this_cpu_number();
    THREADS.try_with(cpu, |t| {
        t.enter(cpu as usize);
        let result = f(t);
        // An observer's look wakes nobody: the marks stay for the borrower's `with`.
        t.wakes |= t.leave();
        result
    })
}

impl Threads {
    /// A table with its own save areas (host tests: each table leaks fresh ones).
    #[cfg(not(target_os = "none"))]
    pub fn new() -> Self {
        Self::with_areas(super::areas::fresh_areas())
    }

    const fn with_areas(areas: SaveAreas) -> Self {
        Self {
            threads: [
                Thread::new(ThreadId(0)),
                Thread::new(ThreadId(1)),
                Thread::new(ThreadId(2)),
                Thread::new(ThreadId(3)),
                Thread::new(ThreadId(4)),
                Thread::new(ThreadId(5)),
            ],
            current: None,
            current_by_cpu: [None; MAX_CPUS],
            here: 0,
            spread: false,
            wakes: 0,
            next_token: 1,
            ready_printed: false,
            on_ready: None,
            options: None,
            areas,
        }
    }

    /// Runs `f` with the table and the live frame, whose save area (if it is one: a ring-3
    /// event's) is lent meanwhile: the table refuses it ([`Threads::frame`]), so the two never
    /// alias.
    #[inline(always)]
    pub fn with_live<R>(
        &mut self,
        live: &mut LiveFrame<'_>,
        f: impl FnOnce(&mut Self, &mut Frame) -> R,
    ) -> R {
        self.areas.set_lent(live.as_ptr());
        let result = f(self, live.frame());
        self.areas.set_lent(core::ptr::null());
        result
    }

    /// Host tests: thread `id`'s area as the entry stub hands it to the dispatcher.
    #[cfg(test)]
    pub fn live_area(&self, id: ThreadId) -> LiveFrame<'static> {
        LiveFrame::of_area(&self.areas, id.0)
    }

    /// Where thread `id`'s save area is (for `cpu_info.save_area` and the exit stub).
    #[inline(always)]
    pub fn area_ptr(&self, id: ThreadId) -> *mut Frame {
        self.areas.ptr(id.0)
    }

    /// Whether thread `id` made a syscall the fast path completed since the last call
    /// (`syscall::fast` borrows no table: this is where the table learns of it).
    #[inline(always)]
    pub fn take_syscall_credit(&self, id: ThreadId) -> bool {
        self.areas.take_syscall_credit(id.0)
    }

    /// Host tests: thread `id`'s syscall credit, as the fast path sets it.
    #[cfg(test)]
    pub fn syscall_credit(&self, id: ThreadId) -> &core::sync::atomic::AtomicBool {
        self.areas.syscall_credit(id.0)
    }

    /// Whether `frame` is thread `id`'s save area.
    #[inline(always)]
    pub fn is_area_of(&self, id: ThreadId, frame: &Frame) -> bool {
        core::ptr::eq(self.area_ptr(id), frame)
    }

    /// Thread `id`'s saved context: a fresh start's frame until it first runs, else its save
    /// area. Panics for the area lent as the live frame (reach that through the frame).
    #[inline(always)]
    pub fn frame(&self, id: ThreadId) -> &Frame {
        match &self.threads[id.0].fresh {
            Some(fresh) => fresh,
            None => self.areas.get(id.0),
        }
    }

    /// [`Threads::frame`], to change it.
    pub fn frame_mut(&mut self, id: ThreadId) -> &mut Frame {
        self.thread_and_frame(id).1
    }

    /// Thread `id` and its saved context at once.
    #[inline(always)]
    pub fn thread_and_frame(&mut self, id: ThreadId) -> (&mut Thread, &mut Frame) {
        if self.threads[id.0].fresh.is_some() {
            self.install_fresh(id);
        }
        (&mut self.threads[id.0], self.areas.get_mut(id.0))
    }

    /// Thread `id`'s save area, with a fresh start's frame moved into it first.
    #[inline(always)]
    pub fn area_mut(&mut self, id: ThreadId) -> &mut Frame {
        if self.threads[id.0].fresh.is_some() {
            self.install_fresh(id);
        }
        self.areas.get_mut(id.0)
    }

    #[cold]
    fn install_fresh(&mut self, id: ThreadId) {
        if let Some(fresh) = self.threads[id.0].fresh.take() {
            *self.areas.get_mut(id.0) = fresh;
        }
    }

    /// The live frame is thread `id`'s area itself, about to become its next context (the
    /// switch that enters it again reads nothing else): a fresh start staged meanwhile (the
    /// thread restarted itself) is moved into it.
    #[inline(always)]
    pub fn refresh_live(&mut self, id: ThreadId, live: &mut Frame) {
        if self.threads[id.0].fresh.is_some()
            && let Some(fresh) = self.threads[id.0].fresh.take()
        {
            *live = fresh;
        }
    }

    /// The live frame holds thread `id`'s context: kept as its saved context (a copy only when
    /// the frame is not its save area, i.e. in host tests; an event from ring 3 is saved
    /// straight into the area).
    #[inline(always)]
    pub fn keep_live(&mut self, id: ThreadId, live: &Frame) {
        if !self.is_area_of(id, live) {
            *self.area_mut(id) = *live;
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = ThreadId> + use<> {
        (0..MAX_THREADS).map(ThreadId)
    }

    /// The server slots (started from boot modules).
    pub fn server_ids(&self) -> impl Iterator<Item = ThreadId> + use<> {
        (0..BOOT_THREADS.len()).map(ThreadId)
    }

    /// The server slots and the guest slots up to the last one in use.
    #[inline]
    pub fn slots_in_use(&self) -> usize {
        let guests = self.threads[BOOT_THREADS.len()..]
            .iter()
            .rposition(|t| !t.is_absent())
            .map_or(0, |last| last + 1);
        BOOT_THREADS.len() + guests
    }

    /// Stops every guest vCPU (their manager is gone); how many were running.
    pub fn stop_guests(&mut self) -> usize {
        let mut stopped = 0;
        for thread in &mut self.threads[BOOT_THREADS.len()..] {
            if !thread.is_absent() {
                thread.stop();
                thread.guest_root = None;
                thread.vcpu = super::guest_vcpu::GuestVcpu::NEW;
                stopped += 1;
            }
        }
        stopped
    }

    /// The vCPU slot of `domain` (domains are numbered from 1).
    pub fn guest_id(&self, domain: u16) -> Option<ThreadId> {
        let domain = usize::from(domain);
        (1..=GUEST_SLOTS)
            .contains(&domain)
            .then_some(ThreadId(BOOT_THREADS.len() + domain - 1))
    }

    pub fn get(&self, id: ThreadId) -> &Thread {
        &self.threads[id.0]
    }

    pub fn get_mut(&mut self, id: ThreadId) -> &mut Thread {
        &mut self.threads[id.0]
    }

    /// Two different threads at once (a waiting thread and its fault handler).
    pub fn pair_mut(&mut self, a: ThreadId, b: ThreadId) -> (&mut Thread, &mut Thread) {
        assert_ne!(a, b, "pair_mut needs two threads");
        if a.0 < b.0 {
            let (low, high) = self.threads.split_at_mut(b.0);
            (&mut low[a.0], &mut high[0])
        } else {
            let (low, high) = self.threads.split_at_mut(a.0);
            (&mut high[0], &mut low[b.0])
        }
    }

    pub fn set_on_ready(&mut self, on_ready: fn() -> AfterReady) {
        self.on_ready = Some(on_ready);
    }

    /// A fresh token for a message that expects a reply.
    #[inline(always)]
    pub fn next_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// The token [`Threads::next_token`] hands out next, not taken yet (a fast path writes it
    /// into a record before it knows the record fits).
    #[inline(always)]
    pub fn upcoming_token(&self) -> Token {
        Token(self.next_token)
    }

    /// True if `id` handles some thread's faults.
    pub fn is_fault_handler(&self, id: ThreadId) -> bool {
        self.get(id).handles_faults
    }

    /// The first thread that handles faults (the ring benchmark's peer).
    pub fn first_fault_handler(&self) -> Option<ThreadId> {
        self.ids().find(|&id| self.is_fault_handler(id))
    }

    /// `id`'s fault handler if that one is running, for forwarding.
    pub fn live_fault_handler(&self, id: ThreadId) -> Option<ThreadId> {
        self.get(id)
            .fault_handler
            .filter(|&h| h != id && !self.get(h).is_absent())
    }

    /// The thread waiting for `handler`'s reply about `token`.
    pub fn waiting_for(&self, handler: ThreadId, token: Token) -> Option<ThreadId> {
        self.ids().find(|&id| {
            let t = self.get(id);
            t.waits_for(token) && t.fault_handler == Some(handler)
        })
    }

    /// Pushes a message into a thread's event ring and wakes it if it waits for one.
    pub fn send(&mut self, to: ThreadId, message: &NucleusMessage) -> Result<(), SendFailure> {
        let thread = self.get_mut(to);
        let ring = thread.events.as_mut().ok_or(SendFailure::NoRing)?;
        // A full ring counts the message in its `dropped` (the nucleus never waits for a
        // thread).
        ring.push_message(message).map_err(SendFailure::Ring)?;
        thread.wake();
        Ok(())
    }

    /// Prints `nucleus: ready` (through `on_ready`) once every started thread has said
    /// hello. Returns what `on_ready` asked for, the first time only.
    pub fn check_ready(&mut self) -> Option<AfterReady> {
        if self.ready_printed {
            return None;
        }
        // Guests say no hello: only the servers count.
        let waiting = self
            .threads
            .iter()
            .any(|t| t.kind == Kind::Server && !t.is_absent() && !t.hello);
        if waiting {
            return None;
        }
        self.ready_printed = true;
        Some(self.on_ready.map_or(AfterReady::Run, |f| f()))
    }
}

/// Why a message did not reach a thread's event ring.
#[derive(Clone, Copy, Debug)]
pub enum SendFailure {
    NoRing,
    DumpTooLarge,
    Ring(ipc::SendError),
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRing => f.write_str("server has no ring"),
            Self::DumpTooLarge => f.write_str("register dump too large"),
            Self::Ring(e) => write!(f, "{e}"),
        }
    }
}
