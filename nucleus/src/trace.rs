//! The binary trace (architecture.md §8): `defmt` records in a per-CPU buffer, drained to
//! COM2 and decoded on the host (`image-builder run --trace FILE`).
//!
//! Nothing on the event path emits: under `trace=off` the dispatcher's entry costs one
//! compare and one branch ([`active`]) and no other code changes. Under `trace=` the entry
//! runs [`traced`] instead, which looks at the thread table before and after the unchanged
//! dispatcher and records what the event did: delivered (kind, vector, delivery, RIP, ring,
//! CPU; every record's timestamp is the TSC), forwarded (from which thread to which server,
//! token), reply taken (token), and at `all` the syscall (number, caller) and the context
//! switch. The rare lifecycle records (server started, stopped, restarting) are emitted where
//! they happen. Guest records (start, hypercall, bounce, shutdown) are lifecycle records of
//! vCPU threads: one emitter each where they happen, level `events`.
//!
//! Writing never waits: the buffer (`ipc::trace::TraceBuffer`) drops a record that does not
//! fit, or one begun from a context that interrupted another record, and counts it; the count
//! goes into the trace before the next drain. COM2 takes bytes only as fast as its FIFO has
//! room ([`drain`]: after an event that leaves the CPU idle, on each tick, after lifecycle
//! records) and all of them before an emulator exit ([`flush`]).
//!
//! On the host (the safe core's unit tests) nothing is recorded; [`changes`] is tested there.
use crate::racy::RacyCell;
use crate::thread::{MAX_THREADS, State, ThreadId, Threads};
use bsp_x86_64::cmdline::TraceLevel;
use bsp_x86_64::frame::Frame;
use ipc::Token;
use ipc::dump::Delivery;
use ipc::syscall::Syscall;

/// The `trace=` level. A plain cell, not an atomic: the compiler folds a plain byte's load
/// into the compare (`cmp byte ptr [LEVEL], 0`), so the dispatcher's check is two
/// instructions; an atomic load is a separate load and test.
static LEVEL: RacyCell<TraceLevel> = RacyCell::new(TraceLevel::Off);

/// Sets the level (boot, once the command line is parsed, before interrupts are on) and
/// programs COM2 if it is used.
pub fn start(level: TraceLevel) {
    // SAFETY: boot, one CPU, interrupts off: nothing reads the level while it is written,
    // and it is never written again.
    unsafe { *LEVEL.get() = level };
    if level != TraceLevel::Off {
        bare::init();
    }
}

fn level() -> TraceLevel {
    // SAFETY: written once during boot before any event can read it (see `start`).
    unsafe { *LEVEL.get() }
}

fn on(wanted: TraceLevel) -> bool {
    level() >= wanted
}

/// Whether the dispatcher's entry goes through [`traced`]: one compare, one branch.
#[inline(always)]
pub fn active() -> bool {
    level() != TraceLevel::Off
}

/// Whether a server's own records (`TraceWrite`) are taken.
pub fn servers_on() -> bool {
    on(TraceLevel::All)
}

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
        if all && let Some(cur) = before.and_then(|b| b.current) {
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
        if entry.timer || after.current.is_none() {
            drain();
        }
    });
}

/// Server `slot` started (or restarted) as `generation`.
pub fn started(slot: usize, name: &str, generation: u32) {
    if on(TraceLevel::Events) {
        record::started(slot, name, generation);
        // Rare and worth seeing at once (a crash story survives a run cut right after it).
        drain();
    }
}

/// Server `slot` stopped.
pub fn stopped(slot: usize, name: &str) {
    if on(TraceLevel::Events) {
        record::stopped(slot, name);
        drain();
    }
}

/// Server `slot` is being restarted for the `restart`th time.
pub fn restarting(slot: usize, name: &str, restart: u32) {
    if on(TraceLevel::Events) {
        record::restarting(slot, name, restart);
        drain();
    }
}

#[cfg_attr(not(target_os = "none"), allow(unused_imports))]
pub use bare::{drain, flush, push_server};

/// On the host: no COM2, nothing to drain or flush.
#[cfg(not(target_os = "none"))]
mod bare {
    pub fn init() {}
    pub fn drain() {}
    pub fn flush() {}
    pub fn push_server(_: usize, _: &[u8]) {}
}

#[cfg(not(target_os = "none"))]
mod record {
    pub fn delivered(_: &ipc::Event, _: bool) {}
    pub fn forwarded(_: usize, _: Option<usize>, _: &str, _: u64) {}
    pub fn reply(_: usize, _: u64) {}
    pub fn started(_: usize, _: &str, _: u32) {}
    pub fn stopped(_: usize, _: &str) {}
    pub fn restarting(_: usize, _: &str, _: u32) {}
    pub fn switch(_: Option<usize>, _: Option<usize>) {}
    pub fn syscall(_: usize, _: u64) {}
}

/// The records as the host decodes them; the format strings are the trace's text.
#[cfg(target_os = "none")]
mod record {
    /// What kind of event a record is about (the decoder prints the variant's name).
    #[derive(Clone, Copy, defmt::Format)]
    enum Kind {
        Exception,
        Interrupt,
        Nmi,
        SoftwareException,
        SoftwareInterrupt,
        PrivilegedSoftwareException,
        Syscall,
        Sysenter,
    }

    /// Which delivery brought an event.
    #[derive(Clone, Copy, defmt::Format)]
    enum Via {
        Idt,
        Fred,
    }

    /// The kind and the vector (fixed ones for the kinds without a vector field).
    fn kind(kind: &ipc::EventKind) -> (Kind, u8) {
        use ipc::EventKind as K;
        match *kind {
            K::Exception { vector, .. } => (Kind::Exception, vector),
            K::Interrupt { vector } => (Kind::Interrupt, vector),
            K::Nmi { .. } => (Kind::Nmi, 2),
            K::SoftwareException { vector } => (Kind::SoftwareException, vector),
            K::SoftwareInterrupt { vector } => (Kind::SoftwareInterrupt, vector),
            K::PrivilegedSoftwareException => (Kind::PrivilegedSoftwareException, 1),
            K::Syscall => (Kind::Syscall, 1),
            K::Sysenter => (Kind::Sysenter, 2),
        }
    }

    /// A slot as a record byte: 255 is the idle loop (or the nucleus).
    fn slot(slot: Option<usize>) -> u8 {
        slot.map_or(u8::MAX, |s| s as u8)
    }

    pub fn delivered(event: &ipc::Event, fred: bool) {
        let (kind, vector) = kind(&event.kind);
        let via = if fred { Via::Fred } else { Via::Idt };
        defmt::info!(
            "event delivered: {} vector {=u8} via {} rip {=u64:#x} ring {=u8} cpu {=u16}",
            kind,
            vector,
            via,
            event.rip,
            event.from_ring,
            event.cpu
        );
    }

    pub fn forwarded(from: usize, to: Option<usize>, name: &str, token: u64) {
        defmt::info!(
            "event forwarded: of thread {=u8} to server {=u8} {=str} token {=u64}",
            from as u8,
            slot(to),
            name,
            token
        );
    }

    pub fn reply(to: usize, token: u64) {
        defmt::info!(
            "reply taken: for thread {=u8} token {=u64}",
            to as u8,
            token
        );
    }

    // The host decoder learns which ELF decodes a slot's records from this wording
    // (`image_builder::trace::SERVER_STARTED`).
    pub fn started(slot: usize, name: &str, generation: u32) {
        defmt::info!(
            "server {=u8} {=str}: started (generation {=u32})",
            slot as u8,
            name,
            generation
        );
    }

    pub fn stopped(slot: usize, name: &str) {
        defmt::info!("server {=u8} {=str}: stopped", slot as u8, name);
    }

    pub fn restarting(slot: usize, name: &str, restart: u32) {
        defmt::warn!(
            "server {=u8} {=str}: restarting (restart {=u32})",
            slot as u8,
            name,
            restart
        );
    }

    pub fn switch(from: Option<usize>, to: Option<usize>) {
        defmt::debug!("switch: {=u8} -> {=u8}", slot(from), slot(to));
    }

    pub fn syscall(slot: usize, number: u64) {
        defmt::debug!("syscall {=u64} from thread {=u8}", number, slot as u8);
    }
}

#[cfg(target_os = "none")]
mod bare {
    use bsp_x86_64::uart::{COM2, Uart16550};
    use ipc::trace::{Source, TraceBuffer};

    /// Bytes of a CPU's buffer: several hundred records between two drains.
    const BUFFER_BYTES: usize = 16 * 1024;

    /// One buffer per CPU (one CPU today).
    static BUFFERS: [TraceBuffer<BUFFER_BYTES>; 1] = [TraceBuffer::new()];

    fn buffer() -> &'static TraceBuffer<BUFFER_BYTES> {
        &BUFFERS[0]
    }

    fn com2() -> Uart16550 {
        // SAFETY: COM2 belongs to the trace: no server gets its ports and nothing else in
        // the nucleus drives it. A handle is only the port number; drains run with interrupts
        // off on the one CPU, so one context drives the UART at a time.
        unsafe { Uart16550::new(COM2) }
    }

    /// Programs COM2 (boot, before the first record can be drained).
    pub fn init() {
        com2().init();
    }

    #[defmt::global_logger]
    struct Logger;

    // SAFETY: `TraceBuffer` may be called from any context in any order: a record begun
    // while another is open is dropped whole, a stray release changes nothing. defmt's
    // sequence (acquire, writes, release) per frame holds for each context on its own.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            buffer().begin(Source::NUCLEUS);
        }
        unsafe fn flush() {}
        unsafe fn release() {
            buffer().end();
        }
        unsafe fn write(bytes: &[u8]) {
            buffer().write(bytes);
        }
    }

    defmt::timestamp!("{=u64}", tsc());

    fn tsc() -> u64 {
        // SAFETY: RDTSC reads a counter; it has no side effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A server's record (its defmt frame), under the source of its slot.
    pub fn push_server(slot: usize, payload: &[u8]) {
        buffer().push(Source::server(slot), payload);
    }

    fn report_drops() {
        let dropped = buffer().take_dropped();
        if dropped != 0 {
            defmt::warn!(
                "trace: {=u32} records dropped (buffer full or nested)",
                dropped
            );
        }
    }

    /// Sends what COM2's FIFO has room for now; never waits.
    pub fn drain() {
        if !super::active() {
            return;
        }
        report_drops();
        let mut uart = com2();
        loop {
            let room = uart.room();
            let mut left = room;
            let sent = buffer().drain(|byte| {
                if left == 0 {
                    return false;
                }
                uart.put_byte(byte);
                left -= 1;
                true
            });
            if room == 0 || sent < room {
                return;
            }
        }
    }

    /// Sends everything (waiting for the UART, boundedly): the run is about to end.
    pub fn flush() {
        if !super::active() {
            return;
        }
        report_drops();
        let mut uart = com2();
        buffer().drain(|byte| {
            uart.write_byte(byte);
            true
        });
        uart.drain();
    }
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
