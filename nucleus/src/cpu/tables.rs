//! Descriptor tables: each CPU's GDT and TSS ([`CpuTables`], in its `PerCpu`) and the one
//! IDT all CPUs share (architecture.md §2 step 3, §4).
//!
//! The IDT is installed first of all, on the boot GDT's code selector (`BOOT_CS`), so
//! exceptions are reported from the first Rust instruction on. The final GDT (Xen's layout,
//! `KERNEL_CS` at 0xe008) with its TSS follows before the boot page tables go away, and moves
//! the gates onto it; the IST entries once the stack block exists. The IDT's IST indices are the same on every CPU; each CPU's TSS points
//! them into its own block.
use crate::racy::RacyCell;
use bsp_x86_64::entry::IDT_STUB_SIZE;
use bsp_x86_64::gdt::{self, DescriptorView, HypervisorEntries};
use bsp_x86_64::idt::{Gate, Idt, Vector};
use bsp_x86_64::insn;
use bsp_x86_64::stack_block::StackBlock;
use bsp_x86_64::tss::TaskStateSegment;
use bsp_x86_64::tss::{IST_DB, IST_DF, IST_MC, IST_NMI};
use core::sync::atomic::{AtomicBool, Ordering};

unsafe extern "C" {
    /// First of the 256 IDT vector stubs (`bsp_x86_64::entry_stubs!`).
    static idt_vector_stubs: [u8; 256 * IDT_STUB_SIZE];
}

static IDT: RacyCell<Idt> = RacyCell::new(Idt::new());
/// Set once the IDT's gates name the final GDT's `KERNEL_CS` (the boot CPU's `install_gdt`).
static IDT_FINAL: AtomicBool = AtomicBool::new(false);

/// A CPU's own GDT in Xen's layout (`bsp_x86_64::gdt`): nothing below 0xe000 (a guest's
/// entries would be there), the hypervisor's page above. Servers and guests without
/// descriptor tables run on it; a guest with some runs on its domain's window
/// (`domains::descriptors`), whose reserved page has the same flat entries.
#[repr(C, align(4096))]
struct OwnGdt {
    guest_area: [u64; gdt::FIRST_RESERVED_INDEX as usize],
    reserved: HypervisorEntries,
}

const _: () = assert!(core::mem::size_of::<OwnGdt>() == gdt::GDT_LIMIT as usize + 1);

/// What the CPU's GDTR and LDTR hold (so a switch that changes nothing loads nothing).
#[derive(Clone, Copy)]
struct Loaded {
    gdt: u64,
    ldt: bool,
}

/// One CPU's GDT and TSS (the TSS descriptor names its own TSS, and is busy once loaded).
pub struct CpuTables {
    gdt: OwnGdt,
    tss: TaskStateSegment,
    loaded: Loaded,
}

impl CpuTables {
    /// All zeros, so that the `PerCpu` pool stays in `.bss` and out of the image's file
    /// (its 8 × 68 KiB of tables made the nucleus ELF 1.2 MiB, read twice by GRUB at every
    /// boot); [`init`] fills in the non-zero parts when the CPU's `PerCpu` is claimed.
    pub const fn zeroed() -> Self {
        Self {
            gdt: OwnGdt {
                guest_area: [0; gdt::FIRST_RESERVED_INDEX as usize],
                reserved: HypervisorEntries::zeroed(),
            },
            tss: TaskStateSegment::zeroed(),
            loaded: Loaded { gdt: 0, ldt: false },
        }
    }
}

/// Turns zeroed tables ([`CpuTables::zeroed`]) into a CPU's initial ones where they lie:
/// the reserved page's flat segments, a TSS that denies every port and names no stack. The
/// guest area and `loaded` stay zero. Once per `PerCpu`, when it is claimed, before the CPU
/// uses them.
pub fn init(tables: &RacyCell<CpuTables>) {
    // SAFETY: called by `percpu::claim` on a `PerCpu` nobody else has a reference to yet
    // (the claim made it this caller's alone); no temporary of the 68 KiB is made.
    let own = unsafe { &mut *tables.get() };
    own.gdt.reserved.set_flat();
    own.tss.reset();
}

fn stub_address(vector: u8) -> u64 {
    let base = core::ptr::addr_of!(idt_vector_stubs) as u64;
    base + u64::from(vector) * IDT_STUB_SIZE as u64
}

/// Points all 256 gates at their stubs through code selector `cs`, no IST.
fn fill_idt(idt: &mut Idt, cs: gdt::Selector) {
    for vector in 0..=255u8 {
        let mut gate = Gate::interrupt(stub_address(vector), cs);
        if vector == Vector::BP.raw() {
            // `int3` from Ring3 servers is forwarded to fred-server (a debugging aid).
            gate = gate.with_dpl(3);
        }
        idt.set(vector, gate);
    }
}

/// Installs the IDT with all 256 vectors, no IST yet: the early IDT, on the boot GDT's code
/// selector until [`install_gdt`] loads the final one.
pub fn install_early_idt() {
    // SAFETY: boot, interrupts off, single CPU: nothing else references the IDT yet.
    let idt = unsafe { &mut *IDT.get() };
    fill_idt(idt, gdt::BOOT_CS);
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
/// segment register; the first call (the boot CPU's) also moves the IDT's gates onto its
/// code selector. Runs on the CPU the tables belong to, once, before the shared IDT is
/// loaded there (APs) or any AP starts (the boot CPU).
pub fn install_gdt(tables: &RacyCell<CpuTables>) {
    // SAFETY: the CPU's own tables, during its bring-up with interrupts off: no other
    // reference to them exists (the CPU reads them only once loaded, below).
    let own = unsafe { &mut *tables.get() };
    let tss = core::ptr::from_ref(&own.tss) as u64;
    own.gdt.reserved.set_tss(tss);
    let base = core::ptr::from_ref(&own.gdt) as u64;
    own.loaded = Loaded {
        gdt: base,
        ldt: false,
    };
    // SAFETY: the GDT lives in a static `PerCpu` with the descriptors the selectors below name.
    unsafe { insn::lgdt(&gdt::gdt_pointer(base)) };
    // SAFETY: KERNEL_CS is a 64-bit ring-0 code descriptor in the GDT just loaded.
    unsafe { insn::reload_cs(gdt::KERNEL_CS) };
    if !IDT_FINAL.swap(true, Ordering::Relaxed) {
        // SAFETY: the boot CPU, interrupts off, no AP started: nobody else reads or writes
        // the IDT; each gate is rewritten whole (the CPU reads a gate only at delivery).
        fill_idt(unsafe { &mut *IDT.get() }, gdt::KERNEL_CS);
    }
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

/// Makes `view` the GDT and LDT this CPU runs ring 3 on (`sched::switch`, when another
/// thread comes in): a guest's window with its LDT, or this CPU's own GDT and no LDT.
/// LDTR caches its descriptor, so a guest's LDT is reloaded each time it comes in and
/// dropped before anyone else runs. Inlined: both switches test it on every switch.
#[inline(always)]
pub fn load_descriptor_tables(tables: &RacyCell<CpuTables>, view: DescriptorView) {
    // SAFETY: this CPU's own tables, on the switch path with interrupts off; no reference
    // outlives the call.
    let own = unsafe { &mut *tables.get() };
    let base = if view.gdt_base == 0 {
        core::ptr::from_ref(&own.gdt) as u64
    } else {
        view.gdt_base
    };
    if own.loaded.gdt != base {
        // SAFETY: `base` is this CPU's own GDT or a domain's window, both mapped in every
        // address space (the nucleus' slots) with the reserved page at 0xe000 holding the
        // selectors the nucleus runs on (KERNEL_CS/DS, whose cached descriptors stay live).
        unsafe { insn::lgdt(&gdt::gdt_pointer(base)) };
        own.loaded.gdt = base;
    }
    let ldt = view.ldt && view.gdt_base != 0;
    if ldt || own.loaded.ldt {
        let selector = if ldt { gdt::LDT } else { gdt::Selector::NULL };
        // SAFETY: CPL 0; a window with `ldt` has a present LDT descriptor at `gdt::LDT`
        // (`domains::descriptors` writes it before it hands out such a view), and null is
        // always loadable.
        unsafe { insn::lldt(selector) };
        own.loaded.ldt = ldt;
    }
}

/// The descriptor `selector` names for a thread on `view` (`None`: outside its tables or one
/// of the hypervisor's entries a guest may not load), read where the CPU would read it: the
/// guest's window (its frames, or the zero frame), the LDT the window's LDT descriptor names.
/// The flat reserved entries answer with their own descriptors.
pub fn guest_descriptor(view: DescriptorView, selector: u16) -> Option<u64> {
    use bsp_x86_64::guest_selectors::{Place, ldt_of, place, reserved_loadable};
    match place(selector) {
        Place::Reserved(sel) => reserved_loadable(sel).then(|| {
            if sel == gdt::USER_CS32.raw() & !3 {
                gdt::Descriptor::code32(3).raw()
            } else if sel == gdt::USER_CS64.raw() & !3 {
                gdt::Descriptor::code64(3).raw()
            } else {
                gdt::Descriptor::data(3).raw()
            }
        }),
        _ if view.gdt_base == 0 => None,
        Place::Gdt(offset) => {
            // SAFETY: every page of a window below 0xe000 is mapped (a guest frame or the zero
            // frame, `domains::window`), in every address space; `offset` < 0xe000.
            Some(unsafe { ((view.gdt_base + offset) as *const u64).read_volatile() })
        }
        Place::Ldt(offset) => {
            if !view.ldt {
                return None;
            }
            let at = (view.gdt_base + u64::from(gdt::LDT.raw())) as *const u64;
            // SAFETY: the window's reserved page is mapped; the LDT descriptor is its 16 bytes
            // at 0xe050.
            let descriptor = unsafe { [at.read_volatile(), at.add(1).read_volatile()] };
            let (base, limit) = ldt_of(descriptor)?;
            if offset + 7 > limit {
                return None;
            }
            // SAFETY: within the LDT's limit, whose pages the window maps (`domains::window`
            // maps a frame for every 512 entries it describes).
            Some(unsafe { ((base + offset) as *const u64).read_volatile() })
        }
    }
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
