//! The control registers, EFER and segment bases a register dump shows.
use bsp_x86_64::insn;
use ipc::dump::RegisterDump;

/// Reads them into `dump` (no side effects; allocation- and lock-free, so safe on `#DF`).
pub fn fill(dump: &mut RegisterDump) {
    // SAFETY: CPL 0 (the nucleus runs only there); reading CR0 has no side effects.
    dump.cr0 = unsafe { insn::read_cr0() };
    // SAFETY: as above, CR2.
    dump.cr2 = unsafe { insn::read_cr2() };
    // SAFETY: as above, CR3.
    dump.cr3 = unsafe { insn::read_cr3() };
    // SAFETY: as above, CR4.
    dump.cr4 = unsafe { insn::read_cr4() };
    dump.efer = bsp_x86_64::msr::read::<bsp_x86_64::regs::Efer>().bits();
    // SAFETY: CPL 0; IA32_FS_BASE exists on every 64-bit CPU and reading it is harmless.
    dump.fs_base = unsafe { insn::read_fs_base() };
    // SAFETY: as above, IA32_GS_BASE.
    dump.gs_base = unsafe { insn::read_gs_base() };
    // SAFETY: as above, IA32_KERNEL_GS_BASE.
    dump.kernel_gs_base = unsafe { insn::read_kernel_gs_base() };
}

/// True if CR4.FRED is set on this CPU now (a kexec'd generation checks it is clear at entry).
pub fn cr4_fred() -> bool {
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    let cr4 = unsafe { bsp_x86_64::insn::read_cr4() };
    cr4 & bsp_x86_64::regs::Cr4::FRED.bits() != 0
}
