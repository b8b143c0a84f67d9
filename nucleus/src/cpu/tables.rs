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
/// The GDT with room for Xen's flat selectors at their Xen indices (pv64-abi.md §2.3): a
/// PV64 guest runs with 0xe033/0xe02b (and may name 0xe023), so the table reaches entry
/// 7174 (0xe038 bytes). Entries 8-7171 are null.
#[repr(C, align(16))]
struct FullGdt {
    head: Gdt,
    rest: [u64; XEN_GDT_ENTRIES - 8],
}

const XEN_GDT_ENTRIES: usize = (xen_abi::layout::selector::FLAT_RING3_CS64 as usize >> 3) + 1;
const _: () = assert!(core::mem::size_of::<FullGdt>() >= 0xe038);
const _: () = assert!(core::mem::size_of::<Gdt>() == 64);

static GDT: RacyCell<FullGdt> = RacyCell::new(FullGdt {
    head: Gdt::new(0),
    rest: [0; XEN_GDT_ENTRIES - 8],
});

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
        let full = &mut *GDT.get();
        full.head = Gdt::with_tss(&*TSS.get());
        use xen_abi::layout::selector::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};
        for (selector, descriptor) in [
            (FLAT_RING3_CS32, gdt::Descriptor::code32(3)),
            (FLAT_RING3_SS64, gdt::Descriptor::data(3)),
            (FLAT_RING3_CS64, gdt::Descriptor::code64(3)),
        ] {
            full.rest[(selector as usize >> 3) - 8] = descriptor.raw();
        }
        &*GDT.get()
    };
    let pointer = gdt::DescriptorTablePointer {
        limit: (core::mem::size_of::<FullGdt>() - 1) as u16,
        base: core::ptr::from_ref(gdt) as u64,
    };
    // SAFETY: the GDT is a static with the descriptors the selectors below name.
    unsafe { insn::lgdt(&pointer) };
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
