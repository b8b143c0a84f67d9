//! Per-CPU descriptor tables: the GDT, the TSS and the IDT (architecture.md §2 step 3, §4).
//!
//! The IDT is installed first of all, on the boot GDT (whose code selector is the same
//! `KERNEL_CS`), so exceptions are reported from the first Rust instruction on. The final
//! GDT with its TSS follows before the boot page tables go away, and the IST entries once the
//! stack block exists.
use crate::racy::RacyCell;
use bsp_x86_64::entry::IDT_STUB_SIZE;
use bsp_x86_64::gdt::{self, Gdt};
use bsp_x86_64::idt::{Gate, Idt, Vector};
use bsp_x86_64::insn;
use bsp_x86_64::stack_block::StackBlock;
use bsp_x86_64::tss::TaskStateSegment;
use bsp_x86_64::tss::{IST_DB, IST_DF, IST_MC, IST_NMI};

unsafe extern "C" {
    /// First of the 256 IDT vector stubs (`bsp_x86_64::entry_stubs!`).
    static idt_vector_stubs: [u8; 256 * IDT_STUB_SIZE];
}

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
    // SAFETY: the null selector is always loadable into LDTR at CPL 0. LDTR's reset value is
    // a "present" LDT at linear address 0: an LDT selector would read descriptors there, in
    // a server's half (issue 13: a far call through selector 0x07 read address 0).
    unsafe { insn::lldt(gdt::Selector::NULL) };
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
