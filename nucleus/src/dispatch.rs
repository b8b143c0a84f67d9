//! The one dispatcher both deliveries feed (architecture.md §3): decode, route, and — once,
//! on the way out — switch to whatever should run next.
//!
//! `bsp_x86_64::entry_stubs!` assembles the IDT stubs and the FRED entry page around the
//! `extern "C"` functions below (the stubs already tell a 64-bit SYSCALL from ring 3 from
//! every other event); from here on nothing knows which delivery ran except the label on
//! the dump. NMI, `#DF` and interrupts first, then the synchronous events. A
//! fault the nucleus cannot recover from ends in `fatal`; Ring3 events go to the thread's
//! fault handler (`forward`). Every handler returns a `NextTask`, and only
//! [`sched::finish`] here switches. The stubs hand in the frame they saved (a ring-3 event's
//! is its thread's save area) and get back the frame to leave through.
use crate::fatal::{self, fatal};
use crate::syscall::Fault;
use crate::thread::sched::{self, ExitFrame, NextTask, Tick};
use crate::thread::{self, LiveFrame, ThreadId, Threads};
use crate::timer;
use bsp_x86_64::entry::FastSyscall;
use bsp_x86_64::frame::{Frame, SsQword};
use bsp_x86_64::idt::Vector;
use core::sync::atomic::Ordering;
use ipc::dump::Delivery;
use ipc::syscall::Syscall;
use ipc::{Event, EventKind};
use tick_reports::{interrupted_nucleus_work, report_masked_ticks, report_nmis};

mod tick_reports;

bsp_x86_64::entry_stubs!(
    idt: idt_entry,
    fred_ring3: fred_from_ring3,
    fred_ring0: fred_from_ring0,
    syscall_idt_fast: syscall_fast_idt,
    syscall_idt: syscall_idt,
    syscall_fred_fast: syscall_fast_fred,
    syscall_fred: syscall_fred,
);

/// FRED event type 7 ("other") vector 1 is SYSCALL (fred-facts.md §3.6); `decode` agrees.
const SYSCALL_TYPE: u8 = ipc::EventKind::Syscall.fred_type();
const SYSCALL_VECTOR: u8 = ipc::EventKind::Syscall.vector();
/// The class of a SYSCALL from 64-bit mode.
const SYSCALL_CLASS: u64 = SsQword::class_of(SYSCALL_TYPE, SYSCALL_VECTOR, true);

extern "C" fn idt_entry(live: LiveFrame<'static>) -> ExitFrame {
    enter(live, Delivery::Idt, dispatch, Entry::Other)
}

/// Every ring-3 event under FRED but a 64-bit SYSCALL (the stub sends those to
/// [`syscall_fred`]), so none that `dispatch` would pick out as a syscall: straight to
/// [`event`].
extern "C" fn fred_from_ring3(live: LiveFrame<'static>) -> ExitFrame {
    enter(live, Delivery::Fred, event, Entry::FredRing3)
}

/// A 64-bit SYSCALL from ring 3 the FRED fast path declined: straight to the syscall table,
/// as under IDT ([`syscall_idt`]), the same code but for the delivery's label.
extern "C" fn syscall_fred(live: LiveFrame<'static>) -> ExitFrame {
    enter(live, Delivery::Fred, syscall_only, Entry::FredRing3)
}

/// The IDT syscall fast path (`syscall::fast`): a completed call returns with SYSRETQ,
/// so only to a RIP SYSRETQ may load.
extern "C" fn syscall_fast_idt(mut area: LiveFrame<'static>) -> FastSyscall {
    let ptr = area.as_ptr();
    let credit = || crate::thread::server_syscall_credit(ptr);
    let completed = crate::syscall::fast::complete(area.frame(), credit, |frame| {
        bsp_x86_64::entry::sysret_safe(frame.ret.rip)
    });
    FastSyscall::new(area.as_ptr(), completed)
}

/// The FRED syscall fast path: a completed call returns with ERETU from the CPU's own
/// return state, which any RIP the CPU saved can take. (While the FRED self-test watches
/// ring-3 events, `complete` declines: `trace::entries_watched`.)
extern "C" fn syscall_fast_fred(mut area: LiveFrame<'static>) -> FastSyscall {
    let ptr = area.as_ptr();
    let credit = || crate::thread::server_syscall_credit(ptr);
    let completed = crate::syscall::fast::complete(area.frame(), credit, |_| true);
    FastSyscall::new(area.as_ptr(), completed)
}

/// A 64-bit SYSCALL from ring 3 the IDT fast path declined: straight to the syscall table,
/// no event decode.
extern "C" fn syscall_idt(live: LiveFrame<'static>) -> ExitFrame {
    enter(live, Delivery::Idt, syscall_only, Entry::Other)
}

extern "C" fn fred_from_ring0(live: LiveFrame<'static>) -> ExitFrame {
    crate::selftest::fred::FRED_RING0_ENTRIES.fetch_add(1, Ordering::Relaxed);
    enter(live, Delivery::Fred, dispatch, Entry::Other)
}

/// Which stub called: the FRED self-test's ring-3 hook runs only for FRED's ring-3 entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    FredRing3,
    Other,
}

/// Every event: `dispatch` (the general dispatcher, or the part of it the stub already
/// chose), or — when the boot watches the entries ([`crate::trace::entries_watched`]:
/// `trace=`, `selftest=fred-ring3`) — FRED's ring-3 entries by [`watched_fred_ring3`], and
/// the others, under `trace=`, between the trace's two looks at the thread table
/// ([`crate::trace::traced`]). Unwatched, that costs one compare and one branch here and
/// nothing anywhere else. An event that may run on the user's GS is not traced (the trace
/// buffer is per CPU, reached through GS: `cpu::percpu`), nor is one on an AP (the trace
/// looks at the thread table, which only the boot CPU touches).
#[inline(always)]
fn enter(
    mut live: LiveFrame<'static>,
    delivery: Delivery,
    dispatch: fn(LiveFrame<'static>, Delivery) -> ExitFrame,
    entry: Entry,
) -> ExitFrame {
    if crate::trace::entries_watched() {
        if entry == Entry::FredRing3 {
            // A tail call: the hot path keeps no register for what follows the hook.
            return watched_fred_ring3(live, dispatch);
        }
        if crate::trace::active()
            && !crate::cpu::percpu::gs_may_be_user(live.frame(), delivery)
            && crate::cpu::percpu::current().index() == 0
        {
            return crate::trace::traced(live, delivery, dispatch);
        }
    }
    dispatch(live, delivery)
}

/// [`enter`] for FRED's ring-3 entry on a watched boot: `selftest=fred-ring3`'s look at its
/// first ring-3 event while it waits for one, then as [`enter`] (ring-3 entry under FRED: GS
/// is the nucleus').
#[cold]
#[inline(never)]
fn watched_fred_ring3(
    mut live: LiveFrame<'static>,
    dispatch: fn(LiveFrame<'static>, Delivery) -> ExitFrame,
) -> ExitFrame {
    if crate::selftest::fred::RING3_ARMED.load(Ordering::Relaxed) {
        crate::selftest::fred::ring3_event(live.frame());
    }
    if crate::trace::active() && crate::cpu::percpu::current().index() == 0 {
        return crate::trace::traced(live, Delivery::Fred, dispatch);
    }
    dispatch(live, Delivery::Fred)
}

/// `dispatch` for an event the stub knows is a 64-bit SYSCALL from ring 3. A guest vCPU's
/// (told by its save area, one address compare) goes to [`hypercall_event`], so a server's
/// call carries none of that path's registers; a server's `ReplyWait` to
/// [`reply_wait_event`].
#[inline(always)]
fn syscall_only(live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    if thread::is_guest_area(live.as_ptr()) {
        return hypercall_event(live, delivery);
    }
    server_syscall(live, delivery)
}

/// A server's 64-bit `syscall` (both deliveries'): a `ReplyWait` takes the reply fast path
/// first (`forward::fast::reply_wait`; not under `trace=`, whose records follow the general
/// path's steps), everything else the table.
#[inline(always)]
fn server_syscall(mut live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    if live.frame().gprs.rax == Syscall::ReplyWait as u64 && !crate::trace::active() {
        return reply_wait_event(live, delivery);
    }
    handle(
        live,
        #[inline(always)]
        |t, frame| syscall(t, frame, delivery),
    )
}

/// A server's `ReplyWait`: the answer and the switch back to its waiter by the reply fast
/// path when that may, else through the table as any syscall.
#[inline(never)]
fn reply_wait_event(live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    fast_or_table(live, delivery, crate::forward::fast::reply_wait)
}

/// A syscall `fast` may complete (the exit frame) or decline (`Err`, nothing changed), the
/// table then handling it as any syscall.
#[inline(always)]
fn fast_or_table<E>(
    mut live: LiveFrame<'static>,
    delivery: Delivery,
    fast: impl FnOnce(&mut Threads, &mut Frame) -> Result<ExitFrame, E>,
) -> ExitFrame {
    thread::with(|t| {
        t.with_live(&mut live, |t, frame| {
            if let Ok(exit) = fast(t, frame) {
                return exit;
            }
            let next = syscall(t, frame, delivery);
            sched::finish(t, frame, next)
        })
    })
}

/// Runs `handler` on the thread table and the live frame (its save area lent meanwhile) and
/// carries out its verdict: the frame the exit stub restores.
#[inline(always)]
fn handle(
    mut live: LiveFrame<'_>,
    handler: impl FnOnce(&mut Threads, &mut Frame) -> NextTask,
) -> ExitFrame {
    // Inlined by force, as `thread::with`'s own: LLVM put the syscall path's out of line.
    thread::with(
        #[inline(always)]
        |t| {
            t.with_live(
                &mut live,
                #[inline(always)]
                |t, frame| {
                    let next = handler(t, frame);
                    sched::finish(t, frame, next)
                },
            )
        },
    )
}

fn dispatch(mut live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    // The hot path first: a thread's `syscall` (type 7, vector 1, from ring 3, 64-bit mode)
    // needs none of the decoded event's other fields.
    let frame = live.frame();
    if frame.ret.ss.class() == SYSCALL_CLASS && frame.ret.cs.selector().rpl() == 3 {
        return syscall_event(live, delivery);
    }
    // Tail calls both: neither path pays for the other's registers.
    event(live, delivery)
}

/// A thread's `syscall`: through the table (a guest vCPU's by [`hypercall_event`]).
#[inline(never)]
fn syscall_event(live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    if thread::is_guest_area(live.as_ptr()) {
        return hypercall_event(live, delivery);
    }
    server_syscall(live, delivery)
}

/// A guest vCPU's `syscall`: a hypercall by its fast path (`forward::hypercall::fast`) when
/// that may, else through the table as any syscall (which checks the caller's kind again).
#[inline(never)]
fn hypercall_event(live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    fast_or_table(live, delivery, crate::forward::hypercall::fast)
}

/// Every event but a syscall from ring 3: an `int3` from ring 3 takes the event fast path
/// (`forward::fast`) first, which hands anything it is not sure of on to the general path
/// (not under `trace=`, whose records follow the general path's steps). The general path
/// decodes the event and routes it by its kind.
#[inline(never)]
fn event(mut live: LiveFrame<'static>, delivery: Delivery) -> ExitFrame {
    let frame = live.frame();
    if crate::forward::fast::is_int3(frame)
        && !crate::trace::active()
        && let Ok(exit) = thread::with(|t| t.with_live(&mut live, crate::forward::fast::breakpoint))
    {
        return exit;
    }
    let frame = live.frame();
    // Borrowed in place: moving the decoded event out of its `Result` cost a copy of it.
    let decoded = frame.event(0, 0);
    let event = match &decoded {
        Ok(event) => event,
        Err(error) => fatal(
            frame,
            delivery,
            format_args!("undecodable event frame: {error}"),
        ),
    };
    match event.kind {
        EventKind::Nmi { .. } => {
            // A kexec shootdown parks this CPU here for good (never returns).
            crate::handoff::shootdown::on_nmi(core::ptr::from_ref(frame) as u64);
            // Nothing prints from NMI context (it may have interrupted the console's holder),
            // and nothing reads GS (`cpu::ipi`).
            crate::cpu::ipi::on_nmi();
        }
        EventKind::Exception { vector: 8, .. } => fatal::double_fault(frame, delivery),
        EventKind::Interrupt { vector } => return interrupt(live, vector, delivery),
        // A SYSCALL from compatibility mode (FRED delivers it with the 64-bit bit clear): the
        // table says whose fault it is.
        EventKind::Syscall if event.from_ring == 3 => return compat_syscall(live, delivery),
        _ if event.from_ring == 3 => {
            return handle(live, |t, frame| {
                let Some(cur) = t.current() else {
                    fatal(
                        frame,
                        delivery,
                        format_args!("ring-3 event with no current server"),
                    );
                };
                forward(t, frame, cur, event, delivery)
            });
        }
        EventKind::SoftwareException { vector: 3 } => {
            // A trap: RIP already points after the int3, so returning resumes there.
            println!("nucleus: #BP (int3) at {:#x}, resuming", event.rip);
            crate::selftest::fred::breakpoint(frame);
        }
        EventKind::Exception { vector, error_code } => {
            fatal::report_exception(event, vector, error_code);
            if !crate::selftest::recover(frame, event) {
                fatal(
                    frame,
                    delivery,
                    format_args!("unrecoverable {} in the nucleus", Vector::new(vector)),
                );
            }
        }
        EventKind::SoftwareInterrupt { .. }
        | EventKind::PrivilegedSoftwareException
        | EventKind::SoftwareException { .. }
        | EventKind::Syscall
        | EventKind::Sysenter => fatal(
            frame,
            delivery,
            format_args!("unexpected {:?} in the nucleus", event.kind),
        ),
    }
    live.as_ptr()
}

/// A thread's `syscall` through the table; one outside the ABI is the caller's fault.
#[inline(always)]
fn syscall(t: &mut Threads, frame: &mut Frame, delivery: Delivery) -> NextTask {
    match crate::syscall::handle(t, frame) {
        Ok(next) => next,
        Err(fault) => caller_faulted(t, frame, fault, delivery),
    }
}

/// A SYSCALL the fast path did not take, through the same table (which finds it outside the
/// ABI). Out of line: it is never hot, and its copy of the table stays out of `dispatch`.
#[cold]
#[inline(never)]
fn compat_syscall(live: LiveFrame<'_>, delivery: Delivery) -> ExitFrame {
    handle(
        live,
        #[inline(always)]
        |t, frame| syscall(t, frame, delivery),
    )
}

/// The syscall table found the caller outside the ABI: its event goes to its fault handler.
#[cold]
fn caller_faulted(t: &mut Threads, frame: &Frame, fault: Fault, delivery: Delivery) -> NextTask {
    match t.current() {
        Some(cur) => forward(t, frame, cur, &fault.event(frame), delivery),
        None => NextTask::Same,
    }
}

/// An event of thread `cur` to its fault handler, with the dump labelled by `delivery`.
fn forward(
    t: &mut Threads,
    frame: &Frame,
    cur: ThreadId,
    event: &Event,
    delivery: Delivery,
) -> NextTask {
    let capture = |prefix: &str, frame: &Frame| fatal::capture(prefix, frame, delivery);
    crate::forward::event(t, frame, cur, event, &capture)
}

/// An external interrupt: the boot CPU's tick (local APIC timer or PIT: preemption, the
/// watchdog), another local APIC vector (`cpu::ipi`), or one line.
fn interrupt(live: LiveFrame<'_>, vector: u8, delivery: Delivery) -> ExitFrame {
    match crate::cpu::ipi::local_interrupt(vector) {
        Some(crate::cpu::ipi::Local::Tick { boot }) => return tick(live, delivery, boot),
        Some(crate::cpu::ipi::Local::Reschedule) => return reschedule(live),
        Some(crate::cpu::ipi::Local::Done) => return live.as_ptr(),
        None => {}
    }
    if timer::PIC_VECTORS.contains(&vector) {
        if !timer::acknowledge(vector) {
            return live.as_ptr(); // spurious IRQ 7/15
        }
        if vector == timer::TIMER_VECTOR {
            return tick(live, delivery, true);
        }
    }
    println!("nucleus: unexpected interrupt, vector {vector}");
    live.as_ptr()
}

/// A tick on a CPU that runs threads, acknowledged: unless it interrupted nucleus work, the
/// scheduler's verdict for this CPU (preemption, the watchdog). The boot CPU's also counts
/// the time (`timer::ticks`), prints the reports and runs the lifecycle's tick (restarts).
fn tick(mut live: LiveFrame<'_>, delivery: Delivery, boot: bool) -> ExitFrame {
    if boot {
        timer::tick();
    }
    if interrupted_nucleus_work(live.frame()) {
        return live.as_ptr();
    }
    if boot {
        report_nmis();
        report_masked_ticks();
    }
    handle(live, |t, frame| {
        if boot {
            for handler in crate::lifecycle::tick(t) {
                crate::forward::rehome_pending(t, handler);
            }
        }
        tick_verdict(t, frame, delivery)
    })
}

/// A reschedule IPI: another CPU made a thread placed here runnable. From the idle loop or
/// ring 3, this CPU picks from its run queue again; in nucleus code it only counts (the
/// event in progress ends with its own pick).
fn reschedule(mut live: LiveFrame<'_>) -> ExitFrame {
    if interrupted_nucleus_work(live.frame()) {
        return live.as_ptr();
    }
    handle(live, |_, _| NextTask::NextInTurn)
}

/// What the timer tick found, carried out: preemption, or the hung thread forwarded.
fn tick_verdict(t: &mut Threads, frame: &mut Frame, delivery: Delivery) -> NextTask {
    match sched::tick(t, frame) {
        Tick::Run(next) => next,
        Tick::Hung(cur) => match frame.event(0, cur.owner()) {
            Ok(event) => forward(t, frame, cur, &event, delivery),
            Err(_) => NextTask::Same,
        },
    }
}
