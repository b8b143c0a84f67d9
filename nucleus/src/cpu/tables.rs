//! Descriptor tables: each CPU's GDT and TSS ([`CpuTables`], in its `PerCpu`) and the one
//! IDT all CPUs share (architecture.md §2 step 3, §4).
//!
//! The IDT is installed first of all, on the boot GDT (whose code selector is the same
//! `KERNEL_CS`), so exceptions are reported from the first Rust instruction on. The final
//! GDT with its TSS follows before the boot page tables go away, and the IST entries once the
//! stack block exists. The IDT's IST indices are the same on every CPU; each CPU's TSS points
//! them into its own block.
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

/// One CPU's GDT and TSS (the TSS descriptor names its own TSS, and is busy once loaded).
pub struct CpuTables {
    gdt: FullGdt,
    tss: TaskStateSegment,
}

impl CpuTables {
    pub const fn new() -> Self {
        Self {
            gdt: FullGdt {
                head: Gdt::new(0),
                rest: [0; XEN_GDT_ENTRIES - 8],
            },
            tss: TaskStateSegment::new(),
        }
    }
}

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

/// Loads the shared IDT on an AP (`install_early_idt` built it on the boot CPU).
pub fn load_idt() {
    // SAFETY: the IDT is a static that lives forever, fully built before any AP starts
    // (every gate points at a stub, the IST gates are final).
    unsafe { insn::lidt(&(*IDT.get()).pointer()) };
}

/// IST slot `index` of the TSS this CPU's TR names, read back through SGDT and STR from the
/// tables the hardware uses (the AP stack self-check); `None` if TR names no TSS.
pub fn loaded_tss_ist(index: bsp_x86_64::tss::IstIndex) -> Option<u64> {
    let mut gdtr = [0u8; 10];
    let tr: u16;
    // SAFETY: SGDT stores 10 bytes into the buffer; STR reads TR. Neither changes state.
    unsafe {
        core::arch::asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags));
        core::arch::asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags));
    }
    let base = u64::from_le_bytes(gdtr[2..10].try_into().ok()?);
    let limit = u64::from(u16::from_le_bytes([gdtr[0], gdtr[1]]));
    let at = u64::from(tr & !7);
    if at == 0 || at + 15 > limit {
        return None;
    }
    // SAFETY: `[base + at, base + at + 16)` lies inside the loaded GDT (checked against its
    // limit), which is mapped nucleus memory; descriptors are plain words.
    let (low, high) = unsafe {
        let descriptor = (base + at) as *const u64;
        (
            descriptor.read_volatile(),
            descriptor.add(1).read_volatile(),
        )
    };
    let tss =
        ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32);
    let ist = tss + 0x24 + 8 * (u64::from(index.get()) - 1);
    // SAFETY: the TSS descriptor the CPU loaded names a mapped TSS (one in a `PerCpu`);
    // the IST slots lie at 0x24.. (`TaskStateSegment`'s asserted layout); unaligned read.
    Some(unsafe { (ist as *const u64).read_unaligned() })
}

/// Loads a CPU's final GDT (from its `PerCpu`'s `tables`) with its TSS and reloads every
/// segment register. Runs on the CPU the tables belong to, once.
pub fn install_gdt(tables: &RacyCell<CpuTables>) {
    // SAFETY: the CPU's own tables, during its bring-up with interrupts off: no other
    // reference to them exists (the CPU reads them only once loaded, below).
    let gdt = unsafe {
        let own = &mut *tables.get();
        own.gdt.head = Gdt::with_tss(&own.tss);
        use xen_abi::layout::selector::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};
        for (selector, descriptor) in [
            (FLAT_RING3_CS32, gdt::Descriptor::code32(3)),
            (FLAT_RING3_SS64, gdt::Descriptor::data(3)),
            (FLAT_RING3_CS64, gdt::Descriptor::code64(3)),
        ] {
            own.gdt.rest[(selector as usize >> 3) - 8] = descriptor.raw();
        }
        &(*tables.get()).gdt
    };
    let pointer = gdt::DescriptorTablePointer {
        limit: (core::mem::size_of::<FullGdt>() - 1) as u16,
        base: core::ptr::from_ref(gdt) as u64,
    };
    // SAFETY: the GDT lives in a static `PerCpu` with the descriptors the selectors below name.
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

/// Points a CPU's TSS.RSP0 and IST slots (in its `PerCpu`'s `tables`) into its stack block
/// `block`.
pub fn use_stack_block(tables: &RacyCell<CpuTables>, block: &StackBlock) {
    // SAFETY: the CPU's own TSS, with interrupts off; the CPU only reads it at delivery.
    let tss = unsafe { &mut (*tables.get()).tss };
    tss.set_rsp0(block.primary_top());
    tss.set_ist(IST_DF, block.df_top());
    tss.set_ist(IST_DB, block.db_top());
    tss.set_ist(IST_NMI, block.nmi_top());
    tss.set_ist(IST_MC, block.mc_top());
}

/// Switches the shared IDT's `#DF`, `#DB`, NMI and `#MC` gates onto their IST stacks. Once,
/// on the boot CPU, before any other CPU is started.
pub fn use_ist_gates() {
    // SAFETY: boot CPU, interrupts off, no other CPU running yet: nothing else writes the
    // IDT, and the CPU reads a gate only at delivery.
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
