//! Starting the application processors (issue 20 point 1): the MADT's CPUs ([`discover`]),
//! one at a time with INIT-SIPI-SIPI ([`apic`]) into the real-mode [`trampoline`], each on its
//! own stack block with its own `PerCpu`, GDT, TSS, GS base and FRED MSRs, programmed by the
//! AP itself ([`ap_entry`]). A CPU that does not answer in time is reported and skipped.
//!
//! Once online an AP enables its own local APIC, starts its timer and waits in the idle loop
//! with interrupts on: it takes its ticks, reschedule and shootdown IPIs and NMIs (`ipi`).
//! Threads still run on the boot CPU only.
//!
//! [`discover`]: super::discover
//! [`apic`]: super::apic
//! [`trampoline`]: super::trampoline
use super::apic::{self, Mode};
use super::percpu::{self, MAX_CPUS, PerCpu};
use super::{discover, trampoline};
use bsp_x86_64::cmdline::{Options, SelfTests};
use bsp_x86_64::frame::Frame;
use bsp_x86_64::stack_block::{StackBlock, StackPage};
use bsp_x86_64::tss::IST_DF;
use ipc::dump::Delivery;
use spin::Once;

/// How long the boot CPU waits for an AP's online claim.
const ANSWER_TIMEOUT_MS: u64 = 200;

/// The command line, for the APs' FRED decision.
static OPTIONS: Once<Options> = Once::new();

/// Starts every CPU the MADT lists (at most `cpus=` in all), waits for each, and returns how
/// many CPUs are online, the boot CPU included.
pub fn start_aps(rsdp: Option<u64>, options: &Options) -> usize {
    let boot = percpu::current();
    let limit = options.cpus.map_or(MAX_CPUS, usize::from);
    if limit <= 1 {
        return 1;
    }
    let found = match discover::cpus(rsdp) {
        Ok(found) => found,
        Err(e) => {
            println!("smp: {e}; the boot CPU only");
            return 1;
        }
    };
    let own_id = apic::this_cpu_id();
    boot.set_apic_id(own_id);
    let others = found.apic_ids.iter().filter(|&&id| id != own_id).count();
    if others == 0 {
        return 1;
    }
    let Some(mode) = boot.with_apic(|lapic| lapic.mode()) else {
        println!("smp: no local APIC enabled; the boot CPU only");
        return 1;
    };
    let msr_base = apic::base_address();
    match found.local_apic {
        Some(base) if base != msr_base && mode == Mode::XApic => println!(
            "smp: the MADT's local APIC address {base:#x} is not IA32_APIC_BASE's {msr_base:#x}; using IA32_APIC_BASE's"
        ),
        _ => {}
    }
    println!(
        "smp: {} cpu(s) in the MADT; starting the others through the {} (boot cpu apic id {own_id})",
        found.apic_ids.len() + found.cpus_dropped,
        mode.name()
    );
    OPTIONS.call_once(|| *options);
    trampoline::install(crate::mm::kernel_root().as_u64());
    let mut online = 1;
    let mut not_started = found.cpus_dropped;
    for &id in found.apic_ids.iter().filter(|&&id| id != own_id) {
        if online >= limit {
            not_started += 1;
            continue;
        }
        let Some(cpu) = percpu::claim() else {
            not_started += 1;
            continue;
        };
        if start_one(mode, cpu, id) {
            online += 1;
        }
    }
    if not_started > 0 {
        println!(
            "smp: {not_started} more cpu(s) not started (cpus={limit}, the nucleus runs at most {MAX_CPUS})"
        );
    }
    online
}

/// Starts the AP with APIC id `id` on `cpu`; true once it is online and has said so.
fn start_one(mode: Mode, cpu: &'static PerCpu, id: u32) -> bool {
    let boot = percpu::current();
    let init = || boot.with_apic(|lapic| lapic.send_init(id));
    let startup = || boot.with_apic(|lapic| lapic.send_startup(id, trampoline::SIPI_VECTOR));
    cpu.set_apic_id(id);
    let block = match crate::mm::memory::map_stack_block(u64::from(cpu.index())) {
        Ok(block) => block,
        Err(e) => {
            println!("cpu {}: apic id {id} not started: {e}", cpu.index());
            return false;
        }
    };
    cpu.set_block(&block);
    trampoline::prepare(
        block.primary_top(),
        core::ptr::from_ref(cpu) as u64,
        ap_entry,
    );
    // The start-up sequence (SDM vol. 3 §9.4.4.1): INIT, 10 ms, STARTUP, 200 µs, STARTUP.
    init();
    crate::timer::pit_wait_us(10_000);
    startup();
    crate::timer::pit_wait_us(200);
    if !cpu.is_online() {
        startup();
    }
    let mut waited = 0;
    while !cpu.is_online() && waited < ANSWER_TIMEOUT_MS {
        crate::timer::pit_wait_us(1_000);
        waited += 1;
    }
    if !cpu.is_online() && cpu.abandon() {
        // Back to wait-for-SIPI, so a late start cannot take the next AP's parameters.
        init();
        println!(
            "cpu {}: apic id {id} did not answer within {ANSWER_TIMEOUT_MS} ms ({}); skipped",
            cpu.index(),
            mode.name()
        );
        return false;
    }
    // Online: wait for its line, so the lines come in CPU order.
    while !cpu.is_announced() {
        core::hint::spin_loop();
    }
    true
}

/// An AP's first Rust code, from the trampoline: on its primary stack, on the AP boot page
/// tables, interrupts off, with nothing of its own set up yet.
extern "C" fn ap_entry(percpu: u64) -> ! {
    // SAFETY: the trampoline passes what `prepare` wrote: the address of a `PerCpu` in the
    // static pool, claimed for this CPU.
    let cpu: &'static PerCpu = unsafe { &*(percpu as *const PerCpu) };
    // GS first: everything below may use `percpu::current`.
    percpu::install(cpu);
    let Some(block) = cpu.block() else { park() };
    cpu.use_stack_block(&block);
    // The GDT before the IDT: the shared IDT's gates name the final GDT's KERNEL_CS.
    cpu.install_gdt();
    super::tables::load_idt();
    crate::mm::load_root(crate::mm::kernel_root());
    super::protect::apply();
    let fred = match OPTIONS.get() {
        Some(options) => super::fred::init_quiet(options),
        None => park(),
    };
    if !cpu.claim_online() {
        park(); // the boot CPU gave up on this CPU and reported it
    }
    println!(
        "cpu {}: online (apic id {}, {fred})",
        cpu.index(),
        cpu.apic_id()
    );
    check_own_stacks(cpu, &block);
    if OPTIONS
        .get()
        .is_some_and(|o| o.selftests.contains(SelfTests::CPU_DF))
    {
        double_fault_probe(cpu, &block);
    }
    let ticking = take_interrupts(cpu);
    cpu.set_announced();
    if !ticking {
        park();
    }
    super::enter::idle_forever()
}

/// Enables this AP's local APIC (no virtual wire: the PIC is the boot CPU's) and starts its
/// timer; false (one line) if either fails, and the AP then parks.
fn take_interrupts(cpu: &PerCpu) -> bool {
    let Some(apic) = super::apic::LocalApic::enable(Mode::probe(), false) else {
        println!("cpu {}: local APIC not enabled; parked", cpu.index());
        return false;
    };
    cpu.set_apic(apic);
    if !super::apic_timer::start_here() {
        println!(
            "cpu {}: local APIC timer not calibrated; parked",
            cpu.index()
        );
        return false;
    }
    true
}

/// `selftest=cpu-df`: points RSP at the bottom of this AP's primary stack and pushes, into the
/// guard page below it. The `#PF` cannot be delivered on that stack (IDT: no IST for `#PF`;
/// FRED: a ring-0 `#PF` stays on the current stack level), so the CPU raises `#DF`, which
/// goes to IST1 / FRED SL3: [`expected_double_fault`] checks it is this CPU's own.
fn double_fault_probe(cpu: &PerCpu, block: &StackBlock) -> ! {
    cpu.expect_double_fault();
    let bottom = block.page_address(StackPage::Primary);
    // SAFETY: deliberately faults: the push writes below the primary stack into its unmapped
    // guard page; the `#DF` that follows never returns here (`expected_double_fault` parks
    // the AP). Nothing of this CPU's state is needed afterwards.
    unsafe {
        core::arch::asm!("mov rsp, {}", "push rax", "ud2", in(reg) bottom, options(noreturn));
    }
}

/// From the `#DF` handler: if this CPU armed `cpu-df`, says whether the `#DF` frame lies on
/// its own `#DF` stack and parks the CPU (the boot CPU is waiting for that line).
pub fn expected_double_fault(frame: &Frame, delivery: Delivery) {
    let cpu = percpu::current();
    if !cpu.double_fault_expected() {
        return;
    }
    let at = core::ptr::from_ref(frame) as u64;
    let page = cpu.block().and_then(|b| b.classify(at));
    let n = cpu.index();
    let via = match delivery {
        Delivery::Fred => "FRED SL3",
        Delivery::Idt => "IST1",
    };
    if page == Some(StackPage::Df) {
        println!("cpu {n}: #DF on its own #DF stack ({via}, frame {at:#x})");
    } else {
        println!("cpu {n}: #DF FAILED: frame {at:#x} is not on its own #DF stack ({via})");
    }
    cpu.set_announced();
    park()
}

/// Checks, on the CPU itself, that what its hardware uses lies in its own block: RSP in the
/// primary stack, the TSS that TR names (found through SGDT) with IST1 at the block's `#DF`
/// stack, and under FRED IA32_FRED_RSP3 at the same top. Prints one line either way.
fn check_own_stacks(cpu: &PerCpu, block: &StackBlock) {
    let rsp: u64;
    // SAFETY: reads RSP; no memory, no flags.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    let rsp_ok = block.classify(rsp) == Some(bsp_x86_64::stack_block::StackPage::Primary);
    let df_ist = super::tables::loaded_tss_ist(IST_DF);
    let df_ok = df_ist == Some(block.df_top());
    let sl3_ok = !cpu.fred_enabled() || {
        // SAFETY: FRED is enabled on this CPU, so IA32_FRED_RSP3 exists.
        let sl3 = unsafe {
            bsp_x86_64::insn::rdmsr(<bsp_x86_64::fred::FredRsp<3> as bsp_x86_64::msr::Msr>::ADDR)
        };
        sl3 == block.df_top()
    };
    let n = cpu.index();
    if rsp_ok && df_ok && sl3_ok {
        println!(
            "cpu {n}: own stacks: block {:#x}, rsp in its primary stack, #DF stack {:#x} ({})",
            block.base(),
            block.df_top(),
            if cpu.fred_enabled() {
                "IST1 and FRED SL3"
            } else {
                "IST1"
            }
        );
    } else {
        println!(
            "cpu {n}: stack check FAILED: block {:#x}, rsp {rsp:#x}, IST1 {df_ist:x?}, sl3 ok {sl3_ok}",
            block.base()
        );
    }
}

/// Where an online AP waits: interrupts off, `hlt` (an NMI wakes it, is counted and returns
/// here).
fn park() -> ! {
    loop {
        // SAFETY: CPL 0; with interrupts off only an NMI ends the `hlt`, and its handler
        // returns to the loop.
        unsafe {
            bsp_x86_64::insn::cli();
            bsp_x86_64::insn::hlt();
        }
    }
}
