//! When the nucleus itself is in trouble: the register dump ([`capture`]), the one-line
//! report of an exception in Ring0, [`fatal`] and the `#DF` path.
//!
//! The rendering (`show_registers`) lives in `ipc::dump`, so the nucleus' fatal path and
//! `fred-server` print the very same layout. [`capture`] only reads registers: control
//! registers, EFER and the segment bases, plus a few qwords of the interrupted stack when
//! that stack is the nucleus' own (a Ring3 stack is never read here).
use crate::exit::{self, Status};
use crate::racy::Exclusive;
use bsp_x86_64::error_code::{PageFaultError, SelectorErrorCode};
use bsp_x86_64::frame::Frame;
use bsp_x86_64::idt::Vector;
use bsp_x86_64::stack_block::StackPage;
use bsp_x86_64::tss::{IST_DB, IST_DF, IST_MC, IST_NMI};
use core::sync::atomic::{AtomicBool, Ordering};
use ipc::Event;
use ipc::dump::{Delivery, RegisterDump, StackName, Text};

const STACK_WORDS: usize = 16;

/// False until the command line has been parsed: faults then come from the early IDT.
pub static BOOT_PARSED: AtomicBool = AtomicBool::new(false);

/// The stack level an event arrived on, from where its frame lies (delivery-blind): the
/// `#DF` page is SL3/IST1, the other IST pages their IST index, the primary stack SL0.
fn stack_level(delivery: Delivery, page: Option<StackPage>) -> u8 {
    match (delivery, page) {
        (Delivery::Fred, Some(StackPage::Df)) => 3,
        (Delivery::Fred, _) => 0,
        (Delivery::Idt, Some(StackPage::Df)) => IST_DF.get(),
        (Delivery::Idt, Some(StackPage::Db)) => IST_DB.get(),
        (Delivery::Idt, Some(StackPage::Nmi)) => IST_NMI.get(),
        (Delivery::Idt, Some(StackPage::Mc)) => IST_MC.get(),
        (Delivery::Idt, _) => 0,
    }
}

/// Captures everything `show_registers` shows. Allocation-free and lock-free: safe on `#DF`.
pub fn capture(prefix: &str, frame: &Frame, delivery: Delivery) -> RegisterDump {
    // Which stack the event was delivered to: the one its frame is on, or (an event from
    // ring 3, saved in its thread's save area) the one this handler runs on, where the CPU
    // left its own copy of the frame.
    let frame_addr = core::ptr::from_ref(frame) as u64;
    let here = 0u8;
    let at = match crate::cpu::stacks::classify(frame_addr) {
        Some(_) => frame_addr,
        None => core::ptr::from_ref(&here) as u64,
    };
    let page = crate::cpu::stacks::classify(at);
    let stack = crate::cpu::stacks::block().map_or(StackName::Unknown, |b| b.stack_name(at));
    let ret = &frame.ret;
    let mut dump = RegisterDump {
        prefix: Text::truncated(prefix),
        cpu: crate::cpu::this_cpu_number() as u16,
        delivery,
        stack,
        stack_level: stack_level(delivery, page),
        ..RegisterDump::default()
    };
    crate::cpu::control::fill(&mut dump);
    frame.fill_dump(&mut dump);
    if ret.cs.selector().rpl() == 0 {
        dump.symbol = crate::symbols::lookup(ret.rip);
        let mut words = [0u64; STACK_WORDS];
        if let Some(from) = crate::cpu::stacks::read_words(ret.rsp, &mut words) {
            for word in words {
                let _ = dump.stack_words.0.push(word);
            }
            dump.stack_skipped = (from - ret.rsp) as u16;
        }
    }
    dump
}

/// One line per exception with its decoded error code.
pub fn report_exception(event: &Event, vector: u8, error_code: u64) {
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
    println!("{}", capture("nucleus", frame, delivery));
    println!("nucleus: halted");
    exit::exit(Status::Failure)
}

/// Register scratch area of `#DF`: filled before anything is printed (design note, "#DF
/// path uses the fields as scratch storage"), so the dump shows the state at delivery even
/// if printing faults again.
static DF_SCRATCH: Exclusive<Option<RegisterDump>> = Exclusive::new(None);

pub fn double_fault(frame: &Frame, delivery: Delivery) -> ! {
    // An AP's `selftest=cpu-df` probe: its verdict, and the AP parks.
    crate::cpu::bringup::expected_double_fault(frame, delivery);
    let captured = capture("nucleus", frame, delivery);
    // #DF is the last event this CPU handles (it never returns), so the borrow never ends.
    DF_SCRATCH.with(|scratch| {
        let dump = scratch.insert(captured);
        crate::console::force_unlock();
        println!("nucleus: #DF (double fault) on the {} stack", dump.stack);
        println!("{dump}");
        let status = if crate::selftest::double_fault_expected() {
            crate::selftest::double_fault_passed(dump)
        } else {
            // `crashkernel`: hand the machine to the kexec image (returns if it cannot).
            crate::handoff::crash(bsp_x86_64::cmdline::KexecReason::DoubleFault);
            Status::Failure
        };
        println!("nucleus: halted after #DF");
        exit::exit(status)
    })
}
