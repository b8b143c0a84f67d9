//! Interrupts between CPUs (issue 20 point 3) and the local APIC's own vectors: the timer
//! tick ([`super::apic_timer`]), a reschedule/wake-up ([`wake`]), a TLB shootdown
//! ([`shootdown_tlb`]) and NMIs to every other CPU ([`send_nmi_all_but_self`]; kexec's NMI
//! shootdown is `handoff::shootdown`).
//!
//! No lock anywhere here: a sender writes its own CPU's APIC (interrupts are off in the
//! nucleus, so nothing on this CPU is half way through another send) and the handshakes are
//! atomics. The NMI side reads nothing through GS (the IDT window of `percpu`): it counts in
//! a global.
use super::apic::{Ipi, Target};
use super::percpu::{self, PerCpu};
use core::sync::atomic::{AtomicU64, Ordering};

/// The local APIC timer's vector (one per CPU, periodic at `timer::HZ`).
pub const TIMER_VECTOR: u8 = crate::timer::APIC_TIMER_VECTOR;
/// A reschedule/wake-up: the target looks at its run queue again.
pub const RESCHEDULE_VECTOR: u8 = 0xf1;
/// A TLB shootdown: the target reloads CR3 and acknowledges.
pub const TLB_VECTOR: u8 = 0xf2;

/// NMIs seen on any CPU since boot (the NMI handler's only write).
static NMIS: AtomicU64 = AtomicU64::new(0);

/// How long a sender waits for other CPUs to answer before it reports and goes on.
const ANSWER_TIMEOUT_US: u64 = 100_000;

/// What a local APIC vector was, once handled and acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// The timer tick on a CPU that runs threads: the caller runs the tick's work
    /// (preemption and the watchdog there; on the boot CPU also the lifecycle and reports).
    Tick { boot: bool },
    /// A reschedule on a CPU that runs threads: the caller looks at its run queue.
    Reschedule,
    /// Handled in full here (a tick or reschedule on a CPU without threads, a shootdown, a
    /// spurious interrupt).
    Done,
}

/// Handles an interrupt on one of this CPU's APIC vectors; `None` for any other vector.
pub fn local_interrupt(vector: u8) -> Option<Local> {
    let cpu = percpu::current();
    match vector {
        // No EOI for a spurious interrupt: nothing is in service.
        super::apic::SPURIOUS_VECTOR => return Some(Local::Done),
        TIMER_VECTOR => {
            cpu.count_tick();
        }
        RESCHEDULE_VECTOR => {
            cpu.count_reschedule();
        }
        TLB_VECTOR => {
            flush_if_asked(cpu);
        }
        _ => return None,
    }
    cpu.with_apic(|apic| apic.eoi());
    let boot = cpu.index() == 0;
    let runs_threads = boot || cpu.runs_threads();
    Some(match vector {
        TIMER_VECTOR if runs_threads => Local::Tick { boot },
        RESCHEDULE_VECTOR if runs_threads => Local::Reschedule,
        _ => Local::Done,
    })
}

/// Sends a reschedule/wake-up to `cpu` (no-op for this CPU or one not online).
pub fn wake(cpu: &PerCpu) {
    let me = percpu::current();
    if core::ptr::eq(cpu, me) || !(cpu.index() == 0 || cpu.is_online()) {
        return;
    }
    me.with_apic(|apic| apic.send(Target::Cpu(cpu.apic_id()), Ipi::Vector(RESCHEDULE_VECTOR)));
}

/// Sends a reschedule/wake-up to the CPU with bring-up number `cpu`, if it is online.
pub fn wake_cpu(cpu: usize) {
    if let Some(target) = percpu::claimed().nth(cpu) {
        wake(target);
    }
}

/// Answers a TLB shootdown aimed at this CPU (while it spins on a lock with interrupts off).
pub fn answer_shootdowns() {
    flush_if_asked(percpu::current());
}

/// Makes every other online CPU whose CR3 holds one of `roots` reload it, and waits for each
/// to say so (while waiting, answers requests aimed at this CPU, so two CPUs shooting at each
/// other with interrupts off cannot deadlock). Returns how many CPUs were asked; a CPU that
/// does not answer within [`ANSWER_TIMEOUT_US`] is reported.
pub fn shootdown_tlb(roots: &[u64]) -> usize {
    shootdown(|cpu| roots.contains(&cpu.loaded_root()))
}

/// [`shootdown_tlb`] on every other online CPU, whatever it holds: before a domain's
/// descriptor window is unmapped, so that no idle CPU keeps it as its GDT (the answer
/// loads the CPU's own tables when it idles on the nucleus' root, [`flush_if_asked`]).
pub fn shootdown_tlb_everywhere() -> usize {
    shootdown(|_| true)
}

fn shootdown(aimed: impl Fn(&PerCpu) -> bool) -> usize {
    let me = percpu::current();
    let mut asked = 0;
    for cpu in percpu::online_others(me) {
        if !aimed(cpu) {
            continue;
        }
        let ticket = cpu.request_flush();
        me.with_apic(|apic| apic.send(Target::Cpu(cpu.apic_id()), Ipi::Vector(TLB_VECTOR)));
        asked += 1;
        let answered = wait_us(ANSWER_TIMEOUT_US, || {
            flush_if_asked(me);
            cpu.flushed(ticket)
        });
        if !answered {
            println!(
                "smp: cpu {} did not answer a TLB shootdown in {} ms",
                cpu.index(),
                ANSWER_TIMEOUT_US / 1000
            );
        }
    }
    asked
}

/// Reloads CR3 if another CPU asked this one to flush, and says so. A CPU idle on the
/// nucleus' root also goes back to its own GDT and no LDT: going idle leaves the last
/// guest's descriptor window loaded (a switch to idle does not reload them: that would cost
/// every round trip through idle), and the window may be about to go with its domain.
fn flush_if_asked(cpu: &PerCpu) {
    if let Some(ticket) = cpu.flush_asked() {
        // SAFETY: writing CR3 with the root it already holds only drops this CPU's
        // non-global translations (the nucleus' own are global and stay).
        unsafe { bsp_x86_64::insn::write_cr3(bsp_x86_64::insn::read_cr3()) };
        if cpu.loaded_root() == crate::mm::kernel_root().as_u64() {
            super::tables::load_descriptor_tables(
                &cpu.tables,
                bsp_x86_64::gdt::DescriptorView::default(),
            );
        }
        cpu.flush_done(ticket);
    }
}

/// Sends an NMI to every CPU but this one, through this CPU's APIC. No lock, no wait for an
/// answer; false if this CPU has no local APIC enabled (the boot CPU only, or no APIC).
/// Not for NMI context (the handler must not touch GS).
pub fn send_nmi_all_but_self() -> bool {
    percpu::current()
        .with_apic(|apic| apic.send(Target::AllButSelf, Ipi::Nmi))
        .is_some()
}

/// NMIs seen on every CPU since boot.
pub fn nmis() -> u64 {
    NMIS.load(Ordering::Relaxed)
}

/// From the NMI handler, on any CPU: counts. Reads nothing through GS and takes no lock.
pub fn on_nmi() {
    NMIS.fetch_add(1, Ordering::Relaxed);
}

/// Polls `done` for up to `us` microseconds (TSC-timed; PIT-timed if the TSC rate is
/// unknown); whether it came true.
fn wait_us(us: u64, mut done: impl FnMut() -> bool) -> bool {
    let khz = crate::timer::clock(ipc::domain::Clock::TscKhz);
    if khz == 0 {
        for _ in 0..us / 10 {
            if done() {
                return true;
            }
            crate::timer::pit_wait_us(10);
        }
        return done();
    }
    let start = bsp_x86_64::insn::rdtsc();
    let limit = khz * us / 1000;
    while bsp_x86_64::insn::rdtsc().wrapping_sub(start) < limit {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}
