//! Per-CPU descriptor tables: the GDT, the TSS and the IDT (architecture.md §2 step 3, §4).
//!
//! The IDT is installed first of all, on the boot GDT (whose code selector is the same
//! `KERNEL_CS`), so exceptions are reported from the first Rust instruction on. The final
//! GDT with its TSS follows before the boot page tables go away, and the IST entries once the
//! stack block exists.
use crate::racy::RacyCell;
use bsp_x86_64::entry::IDT_STUB_SIZE;
use bsp_x86_64::gdt::{self, Gdt, TaskStateSegment};
use bsp_x86_64::idt::{Gate, Idt, IstIndex, Vector};
use bsp_x86_64::insn;
use bsp_x86_64::stack_block::StackBlock;

unsafe extern "C" {
    /// First of the 256 IDT vector stubs (`bsp_x86_64::entry_stubs!`).
    static idt_vector_stubs: [u8; 256 * IDT_STUB_SIZE];
}

/// IST slots (architecture.md §4): one per event that must not trust the current stack.
pub const IST_DF: IstIndex = IstIndex::IST1;
pub const IST_DB: IstIndex = IstIndex::IST2;
pub const IST_NMI: IstIndex = IstIndex::IST3;
pub const IST_MC: IstIndex = IstIndex::IST4;

static IDT: RacyCell<Idt> = RacyCell::new(Idt::new());
static TSS: RacyCell<TaskStateSegment> = RacyCell::new(TaskStateSegment::new());
static GDT: RacyCell<Gdt> = RacyCell::new(Gdt::new(0));

fn stub_address(vector: u8) -> u64 {
    let base = core::ptr::addr_of!(idt_vector_stubs) as u64;
    base + u64::from(vector) * IDT_STUB_SIZE as u64
}

/// Installs the IDT with all 256 vectors, no IST yet: the early IDT.
pub fn install_early_idt() {
    // SAFETY: boot, interrupts off, single CPU: nothing else references the IDT yet.
    let idt = unsafe { &mut *IDT.get() };
    for vector in 0..=255u8 {
        let mut gate = Gate::interrupt(stub_address(vector), gdt::KERNEL_CS);
        if vector == Vector::BP.raw() {
            // `int3` from Ring3 servers is forwarded to fred-server (a debugging aid).
            gate = gate.with_dpl(3);
        }
        idt.set(vector, gate);
    }
    // SAFETY: the IDT is a static that lives forever and every gate points at a stub.
    unsafe { insn::lidt(&idt.pointer()) };
}

/// Loads the final GDT with the TSS and reloads every segment register.
pub fn install_gdt() {
    // SAFETY: boot, single CPU, interrupts off: no other reference to TSS or GDT exists.
    let gdt = unsafe {
        *GDT.get() = Gdt::with_tss(&*TSS.get());
        &*GDT.get()
    };
    // SAFETY: the GDT is a static with the descriptors the selectors below name.
    unsafe { insn::lgdt(&gdt.pointer()) };
    // SAFETY: KERNEL_CS is a 64-bit ring-0 code descriptor in the GDT just loaded.
    unsafe { insn::reload_cs(gdt::KERNEL_CS) };
    // SAFETY: KERNEL_DS is a ring-0 data descriptor; SS must hold it before FRED is enabled.
    unsafe { insn::load_ss(gdt::KERNEL_DS) };
    // SAFETY: as above.
    unsafe { insn::load_ds_es(gdt::KERNEL_DS) };
    // SAFETY: the TSS descriptor is present and not busy (loaded once per boot).
    unsafe { insn::ltr(gdt::TSS) };
}

/// Points TSS.RSP0 and the IST slots into the stack block and switches the IDT's `#DF`,
/// `#DB`, NMI and `#MC` gates onto them.
pub fn use_stack_block(block: &StackBlock) {
    // SAFETY: single CPU with interrupts off; the TSS is only read by the CPU at delivery.
    let tss = unsafe { &mut *TSS.get() };
    tss.set_rsp0(block.primary_top());
    tss.set_ist(IST_DF, block.df_top());
    tss.set_ist(IST_DB, block.db_top());
    tss.set_ist(IST_NMI, block.nmi_top());
    tss.set_ist(IST_MC, block.mc_top());
    // SAFETY: as above for the IDT.
    let idt = unsafe { &mut *IDT.get() };
    for (vector, ist) in [
        (Vector::DF, IST_DF),
        (Vector::DB, IST_DB),
        (Vector::NMI, IST_NMI),
        (Vector::MC, IST_MC),
    ] {
        idt.set(
            vector,
            Gate::interrupt(stub_address(vector.raw()), gdt::KERNEL_CS).with_ist(ist),
        );
    }
}

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

/// Turns on the CPU's protections against Ring3 code (`bsp_x86_64::protection`): SMEP,
/// SMAP, UMIP and PGE where CPUID has them, and CR0.EM|MP|TS so every x87/MMX/SSE
/// instruction faults. Runs once the nucleus' own (global) mappings are live, before any
/// server starts; prints which protections are on.
pub fn protect() {
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
    println!("cpu: {found}");
    println!("cpu: x87, MMX and SSE fault in servers (CR0.EM, TS)");
}
