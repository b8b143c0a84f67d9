//! The kexec hand-off (issue 21): the mechanism behind `kexec` (fred-server's request) and
//! `crashkernel` (a panic or `#DF`).
//!
//! [`prepare`] checks everything that can be refused, before anything is stopped: the
//! module exists and is a multiboot2 ELF (`bsp_x86_64::kexec::ImagePlan`), its copies
//! overwrite neither a boot module (all of them are passed on) nor the hand-off's low pages,
//! and the next generation's multiboot2 information fits; it writes that information (the
//! loader's memory map, so the old nucleus' memory is free again; the modules; the command
//! line with `kexec-generation=N kexec-reason=R`; the loader's RSDP tags). [`execute`]
//! cannot fail: interrupts off, the other CPUs parked ([`shootdown`]), the PIC masked, FRED
//! off on this CPU (IDT reloaded, then CR4.FRED cleared, still on this CPU's own stack),
//! then the [`trampoline`].
pub mod shootdown;
mod trampoline;

use crate::bootinfo::{BootSummary, RegionKind};
use crate::kexec::refusal::Refusal;
use crate::layout::{KEXEC_MBI_PHYS, KEXEC_RESERVED};
use crate::racy::RacyCell;
use bsp_x86_64::cmdline::{KexecReason, Options};
use bsp_x86_64::kexec::{ImagePlan, MbiWriter, memory_type, next_cmdline};
use bsp_x86_64::regs::Cr4;
use core::sync::atomic::{AtomicBool, Ordering};
use heapless::Vec;

/// The boot module string of the kexec image (`image-builder --kexec-image`).
pub const KEXEC_MODULE: &[u8] = b"kexec-image";
/// Longest command line handed on.
const NEXT_CMDLINE_MAX: usize = 4096;

/// A checked hand-off, its boot information written: only [`execute`] is left.
pub struct Prepared {
    plan: ImagePlan,
    src: u64,
    module: u16,
    generation: u32,
}

/// Set while a hand-off is being prepared or carried out (a panic inside one does not start
/// another), cleared by a refusal.
static BUSY: AtomicBool = AtomicBool::new(false);
/// The next command line is built here (too large for a stack that may be the `#DF` one).
static NEXT_CMDLINE: RacyCell<Vec<u8, NEXT_CMDLINE_MAX>> = RacyCell::new(Vec::new());

/// The index of the `kexec-image` boot module, if the ISO has one.
pub fn kexec_image() -> Option<u16> {
    let (boot, _) = crate::boot_state::boot_state()?;
    boot.modules
        .iter()
        .position(|m| m.name.as_slice() == KEXEC_MODULE)
        .and_then(|i| u16::try_from(i).ok())
}

/// Checks a hand-off into boot module `module` as generation `generation` and writes its
/// boot information; the reason it cannot be done otherwise.
pub fn prepare(module: u16, generation: u32, reason: KexecReason) -> Result<Prepared, Refusal> {
    if BUSY.swap(true, Ordering::AcqRel) {
        return Err(Refusal::TooEarly);
    }
    let result = check_and_write(module, generation, reason);
    if result.is_err() {
        BUSY.store(false, Ordering::Release);
    }
    result
}

fn check_and_write(module: u16, generation: u32, reason: KexecReason) -> Result<Prepared, Refusal> {
    let (boot, _) = crate::boot_state::boot_state().ok_or(Refusal::TooEarly)?;
    let image = boot
        .modules
        .get(usize::from(module))
        .ok_or(Refusal::NoModule {
            index: module,
            count: boot.modules.len(),
        })?;
    let plan = ImagePlan::parse(crate::mm::module_bytes(&image.range)).map_err(Refusal::Image)?;
    let low_is_ram = boot.regions.iter().any(|r| {
        r.kind == RegionKind::Usable
            && r.range.start <= KEXEC_RESERVED.start
            && KEXEC_RESERVED.end <= r.range.end
    });
    if !low_is_ram {
        return Err(Refusal::LowPages("are not usable RAM"));
    }
    if boot
        .modules
        .iter()
        .any(|m| m.range.start < KEXEC_RESERVED.end && KEXEC_RESERVED.start < m.range.end)
    {
        return Err(Refusal::LowPages("hold a boot module"));
    }
    let mut keep: Vec<(&'static str, core::ops::Range<u64>), 20> = Vec::new();
    let _ = keep.push(("the hand-off's low pages", KEXEC_RESERVED));
    for m in &boot.modules {
        let _ = keep.push(("a boot module", m.range.clone()));
    }
    plan.check_clear_of(&keep).map_err(Refusal::Image)?;
    write_boot_information(boot, generation, reason)?;
    Ok(Prepared {
        plan,
        src: image.range.start,
        module,
        generation,
    })
}

/// The loader's RSDP tags, copied out before the new information may overwrite the old.
fn rsdp_tags(boot: &BootSummary) -> Vec<Vec<u8, 64>, 2> {
    let mut tags = Vec::new();
    let Some(at) = boot.rsdp else {
        return tags;
    };
    // `boot.rsdp` points just past the tag header (`bootinfo`); the header says the size.
    let tag = at - 8;
    let virt = crate::mm::phys_to_virt(tag) as *const u8;
    // SAFETY: the tag lies in the loader's structure (or the previous generation's, in the
    // hand-off's low pages), which no frame allocator hands out; the size word is clamped to
    // what a copy can hold.
    let size = unsafe { virt.add(4).cast::<u32>().read_unaligned() } as usize;
    let mut copy = Vec::new();
    for i in 0..size.min(64) {
        // SAFETY: as above, within the tag.
        let _ = copy.push(unsafe { virt.add(i).read() });
    }
    let _ = tags.push(copy);
    tags
}

fn write_boot_information(
    boot: &BootSummary,
    generation: u32,
    reason: KexecReason,
) -> Result<(), Refusal> {
    let rsdp = rsdp_tags(boot);
    // SAFETY: `BUSY` is held: nothing else uses the scratch line.
    let line = unsafe { &mut *NEXT_CMDLINE.get() };
    next_cmdline(&boot.cmdline, generation, reason, line);
    let len = (KEXEC_RESERVED.end - KEXEC_MBI_PHYS) as usize;
    // SAFETY: the hand-off's low pages after the trampoline's four (`layout`), kept from every
    // frame allocator and mapped by the direct map; `BUSY` is held, so only this writes them.
    let buf = unsafe {
        core::slice::from_raw_parts_mut(crate::mm::phys_to_virt(KEXEC_MBI_PHYS) as *mut u8, len)
    };
    let mut mbi = MbiWriter::new(buf);
    mbi.cmdline(line);
    for m in &boot.modules {
        mbi.module(m.range.start as u32, m.range.end as u32, &m.name);
    }
    mbi.memory_map(boot.regions.iter().map(|r| {
        let typ = match r.kind {
            RegionKind::Usable => memory_type::AVAILABLE,
            RegionKind::Reserved => memory_type::RESERVED,
            RegionKind::AcpiReclaimable => memory_type::ACPI_RECLAIMABLE,
            RegionKind::AcpiNvs => memory_type::NVS,
            RegionKind::Defective => memory_type::DEFECTIVE,
        };
        (r.range.start, r.range.end - r.range.start, typ)
    }));
    for tag in &rsdp {
        mbi.raw_tag(tag);
    }
    mbi.finish().map(|_| ()).map_err(Refusal::Mbi)
}

/// Hands the machine to the prepared image. Interrupts go off first; from the shootdown on
/// nothing of this generation runs on any other CPU.
pub fn execute(prepared: Prepared) -> ! {
    // SAFETY: CPL 0; this CPU runs nothing of this generation after the hand-off.
    unsafe { bsp_x86_64::insn::cli() };
    let cpu = crate::cpu::percpu::current();
    println!(
        "nucleus: kexec: cpu {} hands the machine to module {} (generation {}): {} segment(s), entry {:#x}",
        cpu.index(),
        prepared.module,
        prepared.generation,
        prepared.plan.segments.len(),
        prepared.plan.entry
    );
    shootdown::stop_other_cpus();
    // A parked CPU may have held the console: this CPU is the only writer now.
    crate::console::force_unlock();
    crate::timer::mask_all();
    crate::cpu::apic::quiesce_for_handoff();
    trampoline::install(&prepared.plan, prepared.src, KEXEC_MBI_PHYS);
    if cpu.fred_enabled() {
        fred_off();
        println!(
            "nucleus: kexec: FRED off on cpu {} (IDT reloaded, CR4.FRED clear)",
            cpu.index()
        );
    }
    println!("nucleus: kexec: jumping to the trampoline");
    crate::console::drain();
    // SAFETY: installed above; interrupts are off, FRED is off here and the other CPUs are
    // parked (or reported as not answering).
    unsafe { trampoline::jump() }
}

/// Back to IDT delivery on this CPU, on its own stack: the shared IDT (kept loaded, its
/// gates final) reloaded, then CR4.FRED cleared.
fn fred_off() {
    crate::cpu::tables::load_idt();
    // SAFETY: CPL 0, interrupts off; the IDT just loaded handles every event IDT-style, so
    // clearing CR4.FRED loses no event path. Nothing else in CR4 changes.
    unsafe {
        let cr4 = bsp_x86_64::insn::read_cr4();
        bsp_x86_64::insn::write_cr4(cr4 & !Cr4::FRED.bits());
    }
    crate::cpu::percpu::current().set_fred_disabled();
}

/// `crashkernel`: a panic or `#DF` hands the machine to the kexec image instead of halting.
/// Returns only if it cannot (no `crashkernel`, no image, or the image is refused: one line
/// says why), and the caller halts as before.
pub fn crash(reason: KexecReason) {
    let Some((_, options)) = crate::boot_state::boot_state() else {
        return;
    };
    if !options.crashkernel {
        return;
    }
    crash_with(options, reason);
}

fn crash_with(options: &Options, reason: KexecReason) {
    let Some(module) = kexec_image() else {
        println!("nucleus: crashkernel: no kexec image; halting");
        return;
    };
    let generation = options.generation.0.saturating_add(1);
    println!(
        "nucleus: crashkernel: {} in generation {}: kexec into module {module} (generation {generation})",
        reason.as_str(),
        options.generation.0
    );
    match prepare(module, generation, reason) {
        Ok(prepared) => execute(prepared),
        Err(why) => println!("nucleus: crashkernel: kexec refused: {why}; halting"),
    }
}
