//! `cpu-ipi` (issue 20 point 3): on the boot CPU, after bring-up, checks that every online AP
//! takes its own local APIC timer ticks, answers a reschedule IPI and a TLB shootdown, that
//! an NMI to all but self reaches every AP (kexec's NMI stop has its own tests). One verdict
//! per check.
use super::expect::verdict;
use crate::cpu::ipi;
use crate::cpu::percpu::{self, PerCpu};
use bsp_x86_64::cmdline::SelfTests;

pub const RESUMABLE: [(SelfTests, fn()); 1] = [(SelfTests::CPU_IPI, cpu_ipi)];

/// How long each check waits for the APs, in 1 ms steps.
const WAIT_MS: u32 = 500;

/// Waits up to [`WAIT_MS`] for `done`.
fn wait(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..WAIT_MS {
        if done() {
            return true;
        }
        crate::timer::pit_wait_us(1_000);
    }
    done()
}

fn cpu_ipi() {
    let me = percpu::current();
    let aps: heapless::Vec<&'static PerCpu, { percpu::MAX_CPUS }> =
        percpu::online_others(me).collect();
    if aps.is_empty() {
        verdict("cpu-ipi", false, format_args!("no AP online"));
        return;
    }
    for cpu in &aps {
        let before = cpu.ticks();
        let ticking = wait(|| cpu.ticks() > before + 1);
        verdict(
            "cpu-ipi",
            ticking,
            format_args!(
                "cpu {}: local APIC timer, {} tick(s) so far",
                cpu.index(),
                cpu.ticks()
            ),
        );
        let before = cpu.reschedules();
        ipi::wake(cpu);
        let woken = wait(|| cpu.reschedules() > before);
        verdict(
            "cpu-ipi",
            woken,
            format_args!("cpu {}: reschedule IPI taken", cpu.index()),
        );
    }
    let root = crate::mm::kernel_root().as_u64();
    let asked = ipi::shootdown_tlb(&[root]);
    let flushed = aps.iter().all(|cpu| cpu.flush_asked().is_none());
    verdict(
        "cpu-ipi",
        asked == aps.len() && flushed,
        format_args!(
            "TLB shootdown of the nucleus root: {asked} of {} cpu(s) asked, all flushed: {flushed}",
            aps.len()
        ),
    );
    let before = ipi::nmis();
    let sent = ipi::send_nmi_all_but_self();
    let want = before + aps.len() as u64;
    let answered = sent && wait(|| ipi::nmis() >= want);
    verdict(
        "cpu-ipi",
        answered,
        format_args!(
            "NMI to all but self: {} of {} cpu(s) took it",
            ipi::nmis() - before,
            aps.len()
        ),
    );
}
