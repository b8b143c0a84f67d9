//! External interrupts and events from Ring3: the hand-off from the dispatcher to the timer
//! and the servers.
use crate::timer;
use bsp_x86_64::frame::Frame;
use core::sync::atomic::{AtomicU64, Ordering};
use ipc::Event;
use ipc::dump::Delivery;

/// An external interrupt.
pub fn handle(frame: &mut Frame, vector: u8, delivery: Delivery) {
    if timer::PIC_VECTORS.contains(&vector) {
        if !timer::acknowledge(vector) {
            return; // spurious IRQ 7/15
        }
        if vector == timer::TIMER_VECTOR {
            timer::tick();
            if interrupted_nucleus_work(frame) {
                return;
            }
            crate::dispatch::report_nmis();
            report_masked_ticks();
            crate::servers::on_tick(frame, delivery);
            return;
        }
    }
    println!("nucleus: unexpected interrupt, vector {vector}");
}

/// An event from Ring3 that is not an interrupt: a syscall, or something for fred-server.
/// A SYSCALL from compatibility mode (FRED delivers it as a SYSCALL event with the 64-bit bit
/// clear) is not a syscall of fredvisor's ABI: it goes to fred-server like any fault.
pub fn user_event(frame: &mut Frame, event: &Event, delivery: Delivery) {
    match event.kind {
        ipc::EventKind::Syscall if frame.ret.ss.is_64bit() => crate::servers::on_syscall(frame),
        _ => crate::servers::on_user_event(frame, event, delivery),
    }
}

/// Ticks that interrupted the nucleus with RFLAGS.IF = 0, and how many were reported.
static MASKED_TICKS: AtomicU64 = AtomicU64::new(0);
static MASKED_TICKS_REPORTED: AtomicU64 = AtomicU64::new(0);

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Whether the tick interrupted nucleus code that is not the idle loop. The nucleus runs with
/// interrupts off everywhere else, but not every CPU model masks them as it should (Bochs'
/// FRED delivery clears RFLAGS.IF without masking INTR, issue 14). Such a tick interrupted
/// work in progress — a half-printed line, a server half restarted, the scheduler borrowed —
/// so it only counts: it must neither switch contexts (the interrupted code would never
/// resume, still holding what it held) nor print.
fn interrupted_nucleus_work(frame: &Frame) -> bool {
    if frame.ret.cs.selector().rpl() == 3 || crate::boot::in_idle_loop(frame.ret.rip) {
        return false;
    }
    if frame.ret.rflags & RFLAGS_IF == 0 {
        MASKED_TICKS.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Says once, from a tick that may print, that the CPU delivered ticks with IF = 0.
fn report_masked_ticks() {
    let seen = MASKED_TICKS.load(Ordering::Relaxed);
    if seen != 0 && MASKED_TICKS_REPORTED.swap(seen, Ordering::Relaxed) == 0 {
        println!(
            "nucleus: the CPU delivered {seen} timer interrupt(s) while the nucleus ran with \
             RFLAGS.IF=0; counted, not acted on"
        );
    }
}
