//! The CPU's protections against Ring3 code (issue 13), switched on once at boot.
use bsp_x86_64::insn;

/// Turns on the CPU's protections against Ring3 code (`bsp_x86_64::protection`): SMEP,
/// SMAP, UMIP and PGE where CPUID has them, and CR0.EM|MP|TS so every x87/MMX/SSE
/// instruction faults. Runs once the nucleus' own (global) mappings are live, before any
/// server starts; prints which protections are on.
// Once at boot: not worth inlining into the boot sequence, whose frame it would grow.
#[inline(never)]
pub fn protect() {
    let found = apply();
    println!("cpu: {found}");
    println!("cpu: x87, MMX and SSE fault in servers (CR0.EM, TS)");
}

/// What [`protect`] does, without the lines: for every CPU (APs say nothing).
pub fn apply() -> bsp_x86_64::protection::Protections {
    use bsp_x86_64::protection::{self, Protections};
    use bsp_x86_64::regs::{Cr0, Cr4};
    let found = Protections::probe();
    // SAFETY: ring 0, boot, interrupts off. SMEP/SMAP: the nucleus runs only on its own
    // supervisor pages and reaches server memory through the direct map; UMIP affects CPL 3
    // only; PGE keeps the (global) nucleus mappings across CR3 loads, and nothing remaps them
    // after boot; the bits are set only where CPUID reports them, so the write cannot #GP.
    // CR0.EM|MP|TS: nothing in the nucleus executes an FPU instruction (soft-float target).
    unsafe {
        let cr4 = Cr4::from_bits_retain(insn::read_cr4()) | found.cr4();
        insn::write_cr4(cr4.bits());
        let cr0 = Cr0::from_bits_retain(insn::read_cr0()) | protection::NO_FPU;
        insn::write_cr0(cr0.bits());
    }
    found
}
