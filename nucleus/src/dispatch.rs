//! The one dispatcher both deliveries feed (architecture.md §3).
//!
//! `bsp_x86_64::entry_stubs!` assembles the IDT stubs and the FRED entry page around the
//! three `extern "C"` functions below; from here on nothing knows which delivery ran except
//! the label on the dump. Order as in Xen: NMI, `#DF` and interrupts first, then the
//! synchronous events. A fault the nucleus cannot recover from ends in `show_registers` and
//! a halt; Ring3 events go to the owning server (their own issue).
use crate::exit::{self, Status};
use crate::report;
use bsp_x86_64::error_code::{PageFaultError, SelectorErrorCode};
use bsp_x86_64::frame::Frame;
use bsp_x86_64::idt::Vector;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use ipc::dump::Delivery;
use ipc::{Event, EventKind};

bsp_x86_64::entry_stubs!(idt: idt_entry, fred_ring3: fred_from_ring3, fred_ring0: fred_from_ring0);

/// FRED event type 7 ("other") vector 1 is SYSCALL (fred-facts.md §3.6); `decode` agrees.
const SYSCALL_TYPE: u8 = ipc::EventKind::Syscall.fred_type();
const SYSCALL_VECTOR: u8 = ipc::EventKind::Syscall.vector();

/// False until the command line has been parsed: faults then come from the early IDT.
pub static BOOT_PARSED: AtomicBool = AtomicBool::new(false);
static NMI_COUNT: AtomicU64 = AtomicU64::new(0);
static NMI_REPORTED: AtomicU64 = AtomicU64::new(0);

/// Reports NMIs counted since the last report. Called from a safe context (the timer tick),
/// since the NMI handler itself must not print (it may have interrupted the console's holder).
pub fn report_nmis() {
    let seen = NMI_COUNT.load(Ordering::Relaxed);
    let reported = NMI_REPORTED.swap(seen, Ordering::Relaxed);
    if seen != reported {
        println!(
            "nucleus: {} NMI(s) received ({seen} since boot)",
            seen - reported
        );
    }
}

extern "C" fn idt_entry(frame: &mut Frame) {
    dispatch(frame, Delivery::Idt);
}

extern "C" fn fred_from_ring3(frame: &mut Frame) {
    if crate::selftest_fred::RING3_ARMED.load(Ordering::Relaxed) {
        crate::selftest_fred::ring3_event(frame);
    }
    dispatch(frame, Delivery::Fred);
}

/// Events that came in through the ring-0 FRED entry (+256), for the FRED self-tests.
pub static FRED_RING0_ENTRIES: AtomicU64 = AtomicU64::new(0);

extern "C" fn fred_from_ring0(frame: &mut Frame) {
    FRED_RING0_ENTRIES.fetch_add(1, Ordering::Relaxed);
    dispatch(frame, Delivery::Fred);
}

fn dispatch(frame: &mut Frame, delivery: Delivery) {
    // The hot path first: a server's `syscall` (type 7, vector 1, from ring 3, 64-bit mode)
    // needs none of the decoded event's other fields.
    let ss = frame.ret.ss;
    if ss.event_type_raw() == SYSCALL_TYPE
        && ss.vector() == SYSCALL_VECTOR
        && ss.is_64bit()
        && frame.ret.cs.selector().rpl() == 3
    {
        return crate::servers::on_syscall(frame);
    }
    let event = match frame.event(0, 0) {
        Ok(event) => event,
        Err(error) => fatal(
            frame,
            delivery,
            format_args!("undecodable event frame: {error}"),
        ),
    };
    match event.kind {
        EventKind::Nmi { .. } => {
            // Nothing prints from NMI context (it may have interrupted the console's holder).
            NMI_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        EventKind::Exception { vector: 8, .. } => double_fault(frame, delivery),
        EventKind::Interrupt { vector } => crate::interrupts::handle(frame, vector, delivery),
        _ if event.from_ring == 3 => crate::interrupts::user_event(frame, &event, delivery),
        EventKind::SoftwareException { vector: 3 } => {
            // A trap: RIP already points after the int3, so returning resumes there.
            println!("nucleus: #BP (int3) at {:#x}, resuming", event.rip);
            crate::selftest_fred::breakpoint(frame);
        }
        EventKind::Exception { vector, error_code } => {
            report_exception(&event, vector, error_code);
            if crate::selftest::recover(frame, &event) {
                return;
            }
            fatal(
                frame,
                delivery,
                format_args!("unrecoverable {} in the nucleus", Vector::new(vector)),
            );
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
}

/// One line per exception with its decoded error code.
fn report_exception(event: &Event, vector: u8, error_code: u64) {
    let v = Vector::new(vector);
    match v {
        Vector::PF => println!(
            "nucleus: {v} at {:#x}: address (CR2) {:#x}, error {error_code:#x} {}",
            event.rip,
            event.event_data,
            PageFaultError::from_raw(error_code)
        ),
        Vector::GP | Vector::TS | Vector::NP | Vector::SS if error_code != 0 => {
            match SelectorErrorCode::try_from_raw(error_code) {
                Ok(sel) => println!(
                    "nucleus: {v} at {:#x}: error {error_code:#x}: {sel}",
                    event.rip
                ),
                Err(e) => println!("nucleus: {v} at {:#x}: {e}", event.rip),
            }
        }
        Vector::DB => println!(
            "nucleus: {v} at {:#x}: DR6 (positive) {:#x}",
            event.rip, event.event_data
        ),
        _ if v.has_error_code() => {
            println!("nucleus: {v} at {:#x}: error {error_code:#x}", event.rip)
        }
        _ => println!("nucleus: {v} at {:#x}", event.rip),
    }
}

/// Dumps the frame with `show_registers` and stops the system.
pub fn fatal(frame: &Frame, delivery: Delivery, why: core::fmt::Arguments<'_>) -> ! {
    crate::console::force_unlock();
    if !BOOT_PARSED.load(Ordering::Relaxed) {
        println!("nucleus: fault before the command line was parsed (early IDT)");
    }
    println!("nucleus: FATAL: {why}");
    println!("{}", report::capture("nucleus", frame, delivery));
    println!("nucleus: halted");
    exit::exit(Status::Failure)
}

/// Register scratch area of `#DF`: filled before anything is printed (design note, "#DF
/// path uses the fields as scratch storage"), so the dump shows the state at delivery even
/// if printing faults again.
static DF_SCRATCH: crate::racy::RacyCell<Option<ipc::dump::RegisterDump>> =
    crate::racy::RacyCell::new(None);

fn double_fault(frame: &Frame, delivery: Delivery) -> ! {
    let captured = report::capture("nucleus", frame, delivery);
    // SAFETY: #DF is the last event this CPU handles (it never returns); nothing else
    // touches the scratch area.
    let scratch = unsafe { &mut *DF_SCRATCH.get() };
    let dump = scratch.insert(captured);
    crate::console::force_unlock();
    println!("nucleus: #DF (double fault) on the {} stack", dump.stack);
    println!("{dump}");
    let status = if crate::selftest::double_fault_expected() {
        crate::selftest::double_fault_passed(dump)
    } else {
        Status::Failure
    };
    println!("nucleus: halted after #DF");
    exit::exit(status)
}
