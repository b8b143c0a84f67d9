//! The kexec NMI shootdown (issue 21 point 2): the kexecing CPU stops every other CPU for
//! good before it overwrites memory they run from.
//!
//! [`stop_other_cpus`] marks the shootdown requested, names itself, sends an NMI IPI to every
//! other online CPU and waits up to [`DEADLINE_MS`] for each to say it is parked; a CPU that
//! does not is reported and the hand-off goes on. Each CPU parks from its NMI handler
//! ([`on_nmi`], the first thing the dispatcher does for an NMI): it finds its own `PerCpu` by
//! APIC id (never through GS, which an IDT NMI may find holding the user's base), masks its
//! local APIC's LVT entries, records that it is parked and halts in a loop with interrupts
//! off, never returning from the NMI, so NMIs stay blocked and nothing is ever pushed on
//! the stack it parked on. Which stack that is, and why nothing can overwrite it, is in
//! docs/architecture-notes.md ("kexec").
use crate::cpu::apic::{self, LocalApic};
use crate::cpu::percpu::{self, PerCpu};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// How long the kexecing CPU waits for the other CPUs to park.
pub const DEADLINE_MS: u64 = 100;

/// Set once a shootdown started: from then on every NMI parks the CPU it arrives on.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The kexecing CPU's APIC id (an NMI there only counts).
static KEXECING_APIC: AtomicU32 = AtomicU32::new(u32::MAX);

fn online_others(me: u32) -> impl Iterator<Item = &'static PerCpu> {
    percpu::claimed()
        .filter(move |cpu| cpu.apic_id() != me && (cpu.index() == 0 || cpu.is_online()))
}

/// Parks every other online CPU (NMI IPI, then up to [`DEADLINE_MS`] for each to confirm),
/// with one line per CPU and a summary. Runs with interrupts off on the kexecing CPU.
pub fn stop_other_cpus() {
    let me = apic::this_cpu_id();
    let others = online_others(me).count();
    if others == 0 {
        return;
    }
    // A parking CPU whose APIC is in xAPIC mode masks it through the APIC page, which it
    // cannot map from NMI context: map it now (a no-op if bring-up did).
    apic::map_xapic_page();
    KEXECING_APIC.store(me, Ordering::Release);
    REQUESTED.store(true, Ordering::Release);
    let Some(mut lapic) = LocalApic::this_cpu() else {
        println!("nucleus: kexec: no local APIC to send the shootdown NMIs; handing over anyway");
        return;
    };
    for cpu in online_others(me) {
        lapic.send_nmi(cpu.apic_id());
    }
    let mut waited = 0;
    while waited < DEADLINE_MS && online_others(me).any(|cpu| cpu.parked_at().is_none()) {
        crate::timer::pit_wait_us(1_000);
        waited += 1;
    }
    let mut parked = 0;
    for cpu in online_others(me) {
        match cpu.parked_at() {
            Some(at) => {
                parked += 1;
                println!(
                    "nucleus: kexec: cpu {} (apic id {}) parked on {}",
                    cpu.index(),
                    cpu.apic_id(),
                    ParkedOn(cpu, at)
                );
            }
            None => println!(
                "nucleus: kexec: cpu {} (apic id {}) did not confirm within {DEADLINE_MS} ms; handing over anyway",
                cpu.index(),
                cpu.apic_id()
            ),
        }
    }
    println!(
        "nucleus: kexec: {parked} of {others} other cpu(s) parked (NMI shootdown, {} delivery here)",
        if percpu::current().fred_enabled() {
            "FRED"
        } else {
            "IDT"
        }
    );
}

/// Names the stack a CPU parked on: the page of its block the NMI frame lies in (IDT: the
/// NMI's IST page; FRED: whatever stack the CPU was on at SL0, its #DF one at SL3), or the
/// address if it is outside the block (its idle stack).
struct ParkedOn(&'static PerCpu, u64);

impl core::fmt::Display for ParkedOn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self(cpu, at) = *self;
        match cpu.block().and_then(|b| b.classify(at)) {
            Some(page) => write!(f, "its {page} stack (frame {at:#x})"),
            None => write!(f, "a stack outside its block (frame {at:#x})"),
        }
    }
}

/// From the NMI handler, on any CPU in any context, with the address of the NMI's frame:
/// parks this CPU for good if a shootdown is under way and this is not the kexecing CPU.
/// Takes no lock and prints nothing.
pub fn on_nmi(frame: u64) {
    if !REQUESTED.load(Ordering::Acquire) {
        return;
    }
    let me = apic::this_cpu_id();
    if me == KEXECING_APIC.load(Ordering::Acquire) {
        return;
    }
    park(me, frame)
}

fn park(me: u32, frame: u64) -> ! {
    // SAFETY: CPL 0 in an NMI handler; IF is already clear on IDT delivery, and this CPU
    // runs nothing of the nucleus any more.
    unsafe { bsp_x86_64::insn::cli() };
    apic::mask_local_interrupts();
    if let Some(cpu) = percpu::claimed().find(|cpu| cpu.apic_id() == me) {
        cpu.set_parked(frame);
    }
    loop {
        // SAFETY: interrupts off and NMIs blocked (this handler never returns): only INIT
        // (the next generation's bring-up), SMI or #MC end the `hlt`; the loop halts again.
        unsafe { bsp_x86_64::insn::hlt() };
    }
}
