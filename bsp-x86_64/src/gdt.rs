//! GDT, selectors and the TSS: the segment state long mode still consults.
//!
//! Owns the GDT layout, the descriptor encoder and the `Selector` newtype. The layout is
//! Xen's (pv64-abi.md §2.3, issue 16): entries 0-7167 (pages 0-13, below
//! [`FIRST_RESERVED_INDEX`]) are a PV64 guest's own (`set_gdt`), and everything the
//! hypervisor needs lives in the reserved page from 0xe000 up ([`HypervisorEntries`]): its
//! ring-0 code and data, Xen's flat ring-3 selectors, the CPU's TSS and the running vCPU's
//! LDT. Servers run on the same selectors with nothing below 0xe000, so one layout serves
//! both and no IDT gate, STAR value or frame selector changes with the thread. The TSS the
//! GDT describes is `tss`'s. Does not load anything: `insn::{lgdt, ltr, lldt, reload_cs,
//! load_ss, load_ds_es}` do that, and the nucleus decides when.
//!
//! The order of the reserved entries is not free (fred-facts.md §11 point 2, SDM vol. 3
//! §5.8.8): SYSCALL and FRED's ring-3 delivery load CS from STAR\[47:32\] and SS from +8, and
//! SYSRET/FRED's ERETU fast path load the user compat CS from STAR\[63:48\], user SS from +8
//! and the user 64-bit CS from +16. Hence kernel CS, kernel DS, (Xen's reserved 0xe018),
//! user CS32, user DS, user CS64: exactly Xen's `XEN_MSR_STAR` arithmetic.
//!
//! The user CS32 entry (0xe023) is Xen's usable 32-bit DPL-3 code segment: a compat-mode
//! SYSCALL lands in `syscall_compat_entry`, which turns it into the caller's #UD, and
//! SYSENTER_CS is 0 (issue 13's protections do not rest on the slot being null).

use core::mem::size_of;

pub use crate::tss::TaskStateSegment;

/// Which descriptor table a selector indexes (selector bit 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableIndicator {
    Gdt = 0,
    Ldt = 1,
}

/// A segment selector: index (bits 15:3), table indicator (bit 2), RPL (bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selector(u16);

impl Selector {
    /// The null selector (index 0 of the GDT, RPL 0).
    pub const NULL: Self = Self(0);

    /// Builds a selector. Panics (a compile error in `const` context) if `index` does not fit
    /// in 13 bits or `rpl` is above 3.
    pub const fn new(index: u16, ti: TableIndicator, rpl: u8) -> Self {
        assert!(index < 8192, "selector index has 13 bits");
        assert!(rpl <= 3, "RPL is 0..=3");
        Self((index << 3) | ((ti as u16) << 2) | rpl as u16)
    }

    /// Takes a selector as the CPU stores it (CS/SS fields of a frame, segment registers).
    pub const fn from_raw(raw: u16) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Descriptor index within its table.
    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    pub const fn ti(self) -> TableIndicator {
        if self.0 & 0b100 == 0 {
            TableIndicator::Gdt
        } else {
            TableIndicator::Ldt
        }
    }

    /// Requested privilege level, 0..=3 (for CS: the privilege the code runs at).
    pub const fn rpl(self) -> u8 {
        (self.0 & 0b11) as u8
    }

    /// Null selectors (index 0 in the GDT, any RPL) load without a descriptor check.
    pub const fn is_null(self) -> bool {
        self.0 & !0b11 == 0
    }
}

/// The first entry the hypervisor keeps (Xen's `FIRST_RESERVED_GDT_ENTRY`: page 14, byte
/// 0xe000). A guest's `set_gdt` frames fill the entries below it.
pub const FIRST_RESERVED_INDEX: u16 = 7168;
/// GDT index of each reserved entry; the selectors below are derived from these.
pub const KERNEL_CS_INDEX: u16 = FIRST_RESERVED_INDEX + 1;
pub const KERNEL_DS_INDEX: u16 = FIRST_RESERVED_INDEX + 2;
pub const USER_CS32_INDEX: u16 = FIRST_RESERVED_INDEX + 4;
pub const USER_DS_INDEX: u16 = FIRST_RESERVED_INDEX + 5;
pub const USER_CS64_INDEX: u16 = FIRST_RESERVED_INDEX + 6;
/// The TSS descriptor is 16 bytes and takes two entries (Xen's `TSS_ENTRY`).
pub const TSS_INDEX: u16 = FIRST_RESERVED_INDEX + 8;
/// The running vCPU's LDT descriptor, 16 bytes (Xen's `LDT_ENTRY`).
pub const LDT_INDEX: u16 = FIRST_RESERVED_INDEX + 10;
/// Entries of the reserved page.
pub const RESERVED_ENTRIES: usize = 512;
/// The GDT limit every CPU loads: the guest's pages and the reserved page (0xefff).
pub const GDT_LIMIT: u16 = ((FIRST_RESERVED_INDEX as usize + RESERVED_ENTRIES) * 8 - 1) as u16;

pub const KERNEL_CS: Selector = Selector::new(KERNEL_CS_INDEX, TableIndicator::Gdt, 0);
pub const KERNEL_DS: Selector = Selector::new(KERNEL_DS_INDEX, TableIndicator::Gdt, 0);
pub const USER_CS32: Selector = Selector::new(USER_CS32_INDEX, TableIndicator::Gdt, 3);
pub const USER_DS: Selector = Selector::new(USER_DS_INDEX, TableIndicator::Gdt, 3);
pub const USER_CS64: Selector = Selector::new(USER_CS64_INDEX, TableIndicator::Gdt, 3);
pub const TSS: Selector = Selector::new(TSS_INDEX, TableIndicator::Gdt, 0);
pub const LDT: Selector = Selector::new(LDT_INDEX, TableIndicator::Gdt, 0);
/// The boot GDT's (`boot.rs`) 64-bit code selector, which the early IDT names until the
/// final GDT is loaded.
pub const BOOT_CS: Selector = Selector::new(1, TableIndicator::Gdt, 0);

// The SYSCALL/SYSRET (and FRED) arithmetic of the module header, on Xen's numbers.
const _: () = assert!(KERNEL_CS.raw() == 0xe008 && KERNEL_DS.raw() == KERNEL_CS.raw() + 8);
const _: () = assert!(USER_CS32.raw() == 0xe023 && USER_DS.raw() == USER_CS32.raw() + 8);
const _: () = assert!(USER_CS64.raw() == USER_CS32.raw() + 16 && USER_CS64.raw() == 0xe033);
const _: () = assert!(TSS.raw() == 0xe040 && LDT.raw() == 0xe050);
const _: () = {
    use xen_abi::layout::selector as xen;
    assert!(FIRST_RESERVED_INDEX == xen::FIRST_RESERVED_GDT_ENTRY);
    assert!(USER_CS32.raw() == xen::FLAT_RING3_CS32);
    assert!(USER_DS.raw() == xen::FLAT_RING3_DS32);
    assert!(USER_CS64.raw() == xen::FLAT_RING3_CS64);
    assert!(GDT_LIMIT == 0xefff);
};

/// One 8-byte code or data segment descriptor (SDM vol. 3 §3.4.5).
///
/// In long mode base and limit of code/data segments are ignored, but compat-mode code and
/// the data segments of 32-bit guests still use them, so every segment is flat: base 0,
/// limit 0xfffff in 4 KiB units. The accessed bit is preset so the CPU never has to write
/// it back (the GDT may then live in read-only memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor(u64);

/// Access byte (bits 47:40) and flags nibble (bits 55:52).
const ACCESSED: u64 = 1 << 40;
const READ_WRITE: u64 = 1 << 41; // readable for code, writable for data
const EXECUTABLE: u64 = 1 << 43;
const CODE_OR_DATA: u64 = 1 << 44; // S bit: 0 for system descriptors such as the TSS
const DPL_SHIFT: u32 = 45;
const PRESENT: u64 = 1 << 47;
const LONG_MODE: u64 = 1 << 53;
const DEFAULT_32: u64 = 1 << 54; // D/B; must be 0 when L is set
const GRANULARITY_4K: u64 = 1 << 55;
const FLAT_LIMIT: u64 = 0xffff | (0xf << 48);

impl Descriptor {
    pub const NULL: Self = Self(0);

    const fn flat(dpl: u8, kind: u64) -> Self {
        assert!(dpl <= 3, "DPL is 0..=3");
        Self(
            FLAT_LIMIT
                | ACCESSED
                | CODE_OR_DATA
                | PRESENT
                | GRANULARITY_4K
                | ((dpl as u64) << DPL_SHIFT)
                | kind,
        )
    }

    /// A 64-bit code segment (L=1, D=0), execute/read.
    pub const fn code64(dpl: u8) -> Self {
        Self::flat(dpl, EXECUTABLE | READ_WRITE | LONG_MODE)
    }

    /// A 32-bit compatibility-mode code segment (L=0, D=1), execute/read.
    pub const fn code32(dpl: u8) -> Self {
        Self::flat(dpl, EXECUTABLE | READ_WRITE | DEFAULT_32)
    }

    /// A read/write data segment (B=1, so 32-bit stack operations in compat mode).
    pub const fn data(dpl: u8) -> Self {
        Self::flat(dpl, READ_WRITE | DEFAULT_32)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn dpl(self) -> u8 {
        ((self.0 >> DPL_SHIFT) & 0b11) as u8
    }

    pub const fn is_present(self) -> bool {
        self.0 & PRESENT != 0
    }
}

/// System descriptor type 0x9: available 64-bit TSS (0xb once `ltr` marks it busy).
const TSS_AVAILABLE: u64 = 0x9 << 40;
/// Type bit that `ltr` sets: a busy TSS cannot be loaded again.
pub const TSS_BUSY_BIT: u64 = 1 << 41;

/// Encodes the 16-byte TSS descriptor for a TSS at `base` with byte limit `limit`
/// (SDM vol. 3 §8.2.3): base bits 23:0 at 39:16, 31:24 at 63:56, 63:32 in the second qword.
pub const fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    assert!(limit <= 0xf_ffff, "byte-granular TSS limit has 20 bits");
    let limit = limit as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | TSS_AVAILABLE
        | PRESENT
        | ((limit >> 16) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// Reassembles the base address of a TSS descriptor (the inverse of [`tss_descriptor`]).
pub const fn tss_descriptor_base(descriptor: [u64; 2]) -> u64 {
    ((descriptor[0] >> 16) & 0xff_ffff)
        | (((descriptor[0] >> 56) & 0xff) << 24)
        | (descriptor[1] << 32)
}

/// System descriptor type 0x2: an LDT.
const LDT_TYPE: u64 = 0x2 << 40;

/// Encodes the 16-byte LDT descriptor for `entries` descriptors at `base` (1..=8192 entries;
/// byte-granular limit `entries * 8 - 1`, DPL 0: only LLDT at CPL 0 uses it).
pub const fn ldt_descriptor(base: u64, entries: u32) -> [u64; 2] {
    assert!(
        entries >= 1 && entries <= 8192,
        "an LDT has 1..=8192 entries"
    );
    let limit = (entries as u64) * 8 - 1;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | LDT_TYPE
        | PRESENT
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// The hypervisor's reserved GDT page (entries 7168-7679, selectors 0xe000-0xeff8): what
/// every GDT a CPU loads has from 0xe000 up, whether the entries below are a guest's or null.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct HypervisorEntries([u64; RESERVED_ENTRIES]);

const _: () = assert!(size_of::<HypervisorEntries>() == 4096);

impl HypervisorEntries {
    /// The flat segments, no TSS and no LDT yet.
    pub const fn new() -> Self {
        let mut page = Self([0; RESERVED_ENTRIES]);
        page.set_flat();
        page
    }

    /// All zeros (no flat segments yet): for a page in a static that should take no room in
    /// the image's file (`.bss`); [`HypervisorEntries::set_flat`] fills it before use.
    pub const fn zeroed() -> Self {
        Self([0; RESERVED_ENTRIES])
    }

    /// Writes the flat segments into a page that is all zeros (a fresh frame: no 4 KiB
    /// temporary on a small stack).
    pub const fn set_flat(&mut self) {
        let base = FIRST_RESERVED_INDEX as usize;
        self.0[KERNEL_CS_INDEX as usize - base] = Descriptor::code64(0).raw();
        self.0[KERNEL_DS_INDEX as usize - base] = Descriptor::data(0).raw();
        self.0[USER_CS32_INDEX as usize - base] = Descriptor::code32(3).raw();
        self.0[USER_DS_INDEX as usize - base] = Descriptor::data(3).raw();
        self.0[USER_CS64_INDEX as usize - base] = Descriptor::code64(3).raw();
    }

    fn set_pair(&mut self, index: u16, pair: [u64; 2]) {
        let at = usize::from(index - FIRST_RESERVED_INDEX);
        self.0[at] = pair[0];
        self.0[at + 1] = pair[1];
    }

    /// Describes the TSS at `tss_base` (not busy: for one `ltr`).
    pub fn set_tss(&mut self, tss_base: u64) {
        self.set_pair(TSS_INDEX, tss_descriptor(tss_base, TaskStateSegment::LIMIT));
    }

    /// Describes an LDT of `entries` descriptors at `base`, or none (`entries` 0).
    pub fn set_ldt(&mut self, base: u64, entries: u32) {
        let pair = if entries == 0 {
            [0, 0]
        } else {
            ldt_descriptor(base, entries)
        };
        self.set_pair(LDT_INDEX, pair);
    }

    /// The entry for `selector` (a reserved one), for tests and dumps.
    pub fn entry(&self, selector: Selector) -> u64 {
        self.0[usize::from(selector.index() - FIRST_RESERVED_INDEX) % RESERVED_ENTRIES]
    }

    /// The TSS descriptor.
    pub fn tss_descriptor(&self) -> [u64; 2] {
        let at = usize::from(TSS_INDEX - FIRST_RESERVED_INDEX);
        [self.0[at], self.0[at + 1]]
    }
}

impl Default for HypervisorEntries {
    fn default() -> Self {
        Self::new()
    }
}

/// The descriptor tables a thread runs ring 3 on: its CPU's own GDT (`gdt_base` 0: servers,
/// and guests that installed none) or a guest's window (the guest's `set_gdt` frames below
/// 0xe000, a reserved page above), with the window's LDT (`ldt`) or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorView {
    pub gdt_base: u64,
    pub ldt: bool,
}

/// The operand for `lgdt` of a GDT in Xen's layout whose entry 0 is at `base`.
pub const fn gdt_pointer(base: u64) -> DescriptorTablePointer {
    DescriptorTablePointer {
        limit: GDT_LIMIT,
        base,
    }
}

/// The memory operand of `lgdt`/`lidt`: a 16-bit byte limit (size − 1) and a 64-bit base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    pub limit: u16,
    pub base: u64,
}

const _: () = assert!(size_of::<DescriptorTablePointer>() == 10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_page_with_the_flat_segments_is_a_new_one() {
        let mut page = Box::new(HypervisorEntries::zeroed());
        assert!(page.0.iter().all(|&entry| entry == 0));
        page.set_flat();
        assert_eq!(*page, HypervisorEntries::new());
    }

    #[test]
    fn selector_fields() {
        let sel = Selector::new(5, TableIndicator::Gdt, 3);
        assert_eq!(sel.raw(), 0x2b);
        assert_eq!(sel.index(), 5);
        assert_eq!(sel.rpl(), 3);
        assert_eq!(sel.ti(), TableIndicator::Gdt);
        let ldt = Selector::from_raw(0x0f);
        assert_eq!(
            (ldt.index(), ldt.ti(), ldt.rpl()),
            (1, TableIndicator::Ldt, 3)
        );
        assert_eq!(Selector::new(8191, TableIndicator::Ldt, 2).raw(), 0xfffe);
        assert!(Selector::from_raw(3).is_null());
        assert!(!KERNEL_CS.is_null());
    }

    #[test]
    #[should_panic(expected = "selector index has 13 bits")]
    fn selector_index_overflow_panics() {
        let index = std::hint::black_box(8192);
        let _ = Selector::new(index, TableIndicator::Gdt, 0);
    }

    #[test]
    fn fixed_selectors() {
        assert_eq!(
            [
                KERNEL_CS, KERNEL_DS, USER_CS32, USER_DS, USER_CS64, TSS, LDT
            ]
            .map(Selector::raw),
            [0xe008, 0xe010, 0xe023, 0xe02b, 0xe033, 0xe040, 0xe050]
        );
        assert_eq!(BOOT_CS.raw(), 0x08);
    }

    #[test]
    fn descriptor_bits() {
        assert_eq!(Descriptor::code64(0).raw(), 0x00af_9b00_0000_ffff);
        assert_eq!(Descriptor::data(0).raw(), 0x00cf_9300_0000_ffff);
        assert_eq!(Descriptor::code64(3).raw(), 0x00af_fb00_0000_ffff);
        assert_eq!(Descriptor::code32(3).raw(), 0x00cf_fb00_0000_ffff);
        assert_eq!(Descriptor::data(3).raw(), 0x00cf_f300_0000_ffff);
        assert_eq!(Descriptor::code64(3).dpl(), 3);
        assert!(Descriptor::data(0).is_present());
        assert!(!Descriptor::NULL.is_present());
    }

    #[test]
    fn reserved_page_layout() {
        let page = HypervisorEntries::new();
        assert_eq!(page.0[0], 0, "0xe000 is null");
        assert_eq!(page.entry(KERNEL_CS), 0x00af_9b00_0000_ffff);
        assert_eq!(page.entry(KERNEL_DS), 0x00cf_9300_0000_ffff);
        assert_eq!(page.0[3], 0, "Xen's 0xe018 is null");
        assert_eq!(page.entry(USER_CS32), 0x00cf_fb00_0000_ffff);
        assert_eq!(page.entry(USER_DS), 0x00cf_f300_0000_ffff);
        assert_eq!(page.entry(USER_CS64), 0x00af_fb00_0000_ffff);
        assert_eq!(page.tss_descriptor(), [0, 0]);
        assert_eq!(page.entry(LDT), 0);
        assert_eq!({ gdt_pointer(0x1000).limit }, 0xefff);
    }

    #[test]
    fn ldt_descriptor_encodes_base_and_limit() {
        let base = 0xffff_8200_0012_3000;
        let [low, high] = ldt_descriptor(base, 512);
        // limit 0xfff | base 23:0 | type 2, P, DPL 0 | base 31:24
        assert_eq!(low, 0x0000_8212_3000_0fff);
        assert_eq!(high, 0xffff_8200);
        let mut page = HypervisorEntries::new();
        page.set_ldt(base, 8192);
        assert_eq!(page.entry(LDT) & 0xffff, 0xffff);
        page.set_ldt(base, 0);
        assert_eq!(page.entry(LDT), 0);
    }

    #[test]
    fn tss_descriptor_splits_base() {
        let base = 0xffff_8000_1234_5678;
        let d = tss_descriptor(base, 0x2067);
        // limit 15:0 | base 23:0 | type 9, P | limit 19:16 = 0 | base 31:24
        assert_eq!(d[0], 0x1200_8934_5678_2067);
        assert_eq!(d[1], 0xffff_8000);
        assert_eq!(tss_descriptor_base(d), base);
        assert_eq!(d[0] & TSS_BUSY_BIT, 0);

        let mut page = HypervisorEntries::new();
        page.set_tss(base);
        assert_eq!(tss_descriptor_base(page.tss_descriptor()), base);
        assert_eq!(
            page.tss_descriptor()[0] & 0xffff,
            u64::from(TaskStateSegment::LIMIT)
        );
        assert_eq!(TaskStateSegment::LIMIT, 0x206b);
    }
}
