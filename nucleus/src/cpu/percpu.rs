//! This CPU's `cpu_info` block (GS_BASE in ring 0) and the SYSCALL/SYSENTER MSRs that lead
//! to it (or, for SYSENTER and compat-mode SYSCALL, nowhere).
use bsp_x86_64::gdt;
use bsp_x86_64::stack_block::StackBlock;

unsafe extern "C" {
    /// The IDT path's SYSCALL entry (`bsp_x86_64::entry_stubs!`).
    static syscall_entry: u8;
    /// Its compat-mode twin, which turns the SYSCALL into the caller's #UD.
    static syscall_compat_entry: u8;
}

/// Programs SYSCALL (STAR, LSTAR, CSTAR, FMASK, EFER.SCE), parks SYSENTER, and fills the
/// per-CPU `cpu_info` block that GS_BASE points at in ring 0. Under FRED, LSTAR, CSTAR,
/// FMASK and the SYSENTER MSRs are unused but harmless, and EFER.SCE still gates SYSCALL
/// (fred-facts.md §1.3 point 7).
pub fn init_syscall(block: &StackBlock) {
    use bsp_x86_64::cpu_info::CpuInfo;
    use bsp_x86_64::msr::{
        self, Cstar, Fmask, GsBase, KernelGsBase, Lstar, Star, SysenterCs, SysenterEip, SysenterEsp,
    };
    use bsp_x86_64::regs::Efer;
    let info = CpuInfo {
        kernel_rsp: block.primary_top(),
        scratch_rsp: 0,
        cpu: 0,
        reserved: [0; 5],
    };
    // SAFETY: `cpu_info()` is the 64-byte block at the top of the mapped primary stack page,
    // reserved for it (the stack starts below it).
    unsafe { core::ptr::write(block.cpu_info() as *mut CpuInfo, info) };
    let entry = core::ptr::addr_of!(syscall_entry) as u64;
    let compat_entry = core::ptr::addr_of!(syscall_compat_entry) as u64;
    // SAFETY: each write runs at CPL 0 during boot with interrupts off. STAR names the GDT's
    // selectors; LSTAR and CSTAR are mapped syscall stubs (canonical, kernel half); FMASK
    // clears IF, TF, DF, AC and NT so the stubs run like an interrupt gate; SYSENTER_CS = 0
    // makes SYSENTER fault (#GP) in whoever executes it; GS_BASE/KERNEL_GS_BASE set the
    // ring-0/ring-3 halves the stubs swap; EFER keeps LME/LMA/NXE and adds SCE.
    unsafe {
        msr::write(Star::new(gdt::KERNEL_CS, gdt::USER_CS32));
        msr::write(Lstar::new(entry).unwrap_or_else(|_| panic!("syscall stub not canonical")));
        msr::write(
            Cstar::new(compat_entry).unwrap_or_else(|_| panic!("syscall stub not canonical")),
        );
        msr::write(SysenterCs::DISABLED);
        msr::write(SysenterEsp::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(SysenterEip::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(Fmask::nucleus());
        msr::write(
            GsBase::new(block.cpu_info()).unwrap_or_else(|_| panic!("cpu_info not canonical")),
        );
        msr::write(KernelGsBase::new(0).unwrap_or_else(|_| panic!("0 is canonical")));
        msr::write(msr::read::<Efer>() | Efer::SCE);
    }
}
