//! What a tick reports and how it tells where it landed: NMIs counted since the last
//! report, and ticks that interrupted nucleus work (which only count: a CPU model may
//! deliver them with RFLAGS.IF = 0). Printed from the boot CPU's tick, a context that may
//! print; never from the NMI handler.
use bsp_x86_64::frame::Frame;
use bsp_x86_64::regs::Rflags;
use core::sync::atomic::{AtomicU64, Ordering};

static NMI_REPORTED: AtomicU64 = AtomicU64::new(0);

/// Reports NMIs counted since the last report. Called from a safe context (the timer tick),
/// since the NMI handler itself must not print (it may have interrupted the console's holder).
pub(super) fn report_nmis() {
    let seen = crate::cpu::ipi::nmis();
    let reported = NMI_REPORTED.swap(seen, Ordering::Relaxed);
    if seen != reported {
        println!(
            "nucleus: {} NMI(s) received ({seen} since boot)",
            seen - reported
        );
    }
}

/// Ticks that interrupted the nucleus with RFLAGS.IF = 0, and how many were reported.
static MASKED_TICKS: AtomicU64 = AtomicU64::new(0);
static MASKED_TICKS_REPORTED: AtomicU64 = AtomicU64::new(0);

/// Whether the tick interrupted nucleus code that is not the idle loop. The nucleus runs with
/// interrupts off everywhere else, but not every CPU model masks them as it should (Bochs'
/// FRED delivery clears RFLAGS.IF without masking INTR, issue 14). Such a tick interrupted
/// work in progress — a half-printed line, a server half restarted, the thread table
/// borrowed — so it only counts: it must neither switch contexts (the interrupted code would
/// never resume, still holding what it held) nor print.
pub(super) fn interrupted_nucleus_work(frame: &Frame) -> bool {
    if frame.ret.cs.selector().rpl() == 3 || crate::cpu::enter::in_idle_loop(frame.ret.rip) {
        return false;
    }
    if !Rflags::from_bits_retain(frame.ret.rflags).contains(Rflags::IF) {
        MASKED_TICKS.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Says once, from a tick that may print, that the CPU delivered ticks with IF = 0.
pub(super) fn report_masked_ticks() {
    let seen = MASKED_TICKS.load(Ordering::Relaxed);
    if seen != 0 && MASKED_TICKS_REPORTED.swap(seen, Ordering::Relaxed) == 0 {
        println!(
            "nucleus: the CPU delivered {seen} timer interrupt(s) while the nucleus ran with \
             RFLAGS.IF=0; counted, not acted on"
        );
    }
}
