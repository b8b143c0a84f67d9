//! The control registers, EFER and segment bases a register dump shows.
use bsp_x86_64::insn;

/// What the CPU's control state was when read.
pub struct ControlState {
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
}

/// Reads them all (no side effects; allocation- and lock-free, so safe on `#DF`).
pub fn read() -> ControlState {
    ControlState {
        // SAFETY: CPL 0 (the nucleus runs only there); reading CR0 has no side effects.
        cr0: unsafe { insn::read_cr0() },
        // SAFETY: as above, CR2.
        cr2: unsafe { insn::read_cr2() },
        // SAFETY: as above, CR3.
        cr3: unsafe { insn::read_cr3() },
        // SAFETY: as above, CR4.
        cr4: unsafe { insn::read_cr4() },
        efer: bsp_x86_64::msr::read::<bsp_x86_64::regs::Efer>().bits(),
        // SAFETY: CPL 0; IA32_FS_BASE exists on every 64-bit CPU and reading it is harmless.
        fs_base: unsafe { insn::read_fs_base() },
        // SAFETY: as above, IA32_GS_BASE.
        gs_base: unsafe { insn::read_gs_base() },
        // SAFETY: as above, IA32_KERNEL_GS_BASE.
        kernel_gs_base: unsafe { insn::read_kernel_gs_base() },
    }
}
