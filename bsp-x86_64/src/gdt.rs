//! GDT, selectors and the TSS: the segment state long mode still consults.
//!
//! Owns the fixed GDT layout (one table for every CPU, plus that CPU's TSS descriptor), the
//! descriptor encoder and the `Selector` newtype. The TSS the GDT describes is `tss`'s.
//! Does not load anything: `insn::{lgdt, ltr, reload_cs, load_ss, load_ds_es}` do that, and
//! the nucleus decides when (after the TSS address is known).
//!
//! The order of the entries is not free (fred-facts.md §11 point 2, SDM vol. 3 §5.8.8):
//! SYSCALL loads CS from STAR\[47:32\] and SS from STAR\[47:32\] + 8, and SYSRET/FRED's ERETU
//! fast path load the user compat CS from STAR\[63:48\], user SS from +8 and the user 64-bit CS
//! from +16. Hence kernel CS, kernel DS, user CS32, user DS, user CS64, in that order.
//!
//! The user CS32 slot is only a place in that arithmetic: it holds a null descriptor, so no
//! server can enter compatibility mode (a far transfer to 0x1b raises #GP(0x18)). Nothing
//! needs it: SYSRET is never used (servers return with IRETQ or ERETU to [`USER_CS64`]), and
//! SYSRET and ERETU's fast paths load CS from STAR with fixed attributes, never from the
//! GDT. With a usable 32-bit DPL-3 segment, a compat-mode SYSCALL entered ring 0 through
//! IA32_CSTAR on the server's own stack (issue 13 finding 1).

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

/// GDT index of each entry; the selectors below are derived from these.
pub const KERNEL_CS_INDEX: u16 = 1;
pub const KERNEL_DS_INDEX: u16 = 2;
pub const USER_CS32_INDEX: u16 = 3;
pub const USER_DS_INDEX: u16 = 4;
pub const USER_CS64_INDEX: u16 = 5;
/// The TSS descriptor is 16 bytes and takes indices 6 and 7.
pub const TSS_INDEX: u16 = 6;
/// Number of 8-byte slots in [`Gdt`].
pub const GDT_ENTRIES: usize = 8;

pub const KERNEL_CS: Selector = Selector::new(KERNEL_CS_INDEX, TableIndicator::Gdt, 0);
pub const KERNEL_DS: Selector = Selector::new(KERNEL_DS_INDEX, TableIndicator::Gdt, 0);
pub const USER_CS32: Selector = Selector::new(USER_CS32_INDEX, TableIndicator::Gdt, 3);
pub const USER_DS: Selector = Selector::new(USER_DS_INDEX, TableIndicator::Gdt, 3);
pub const USER_CS64: Selector = Selector::new(USER_CS64_INDEX, TableIndicator::Gdt, 3);
pub const TSS: Selector = Selector::new(TSS_INDEX, TableIndicator::Gdt, 0);

// The SYSCALL/SYSRET (and ERETU fast path) arithmetic of the module header.
const _: () = assert!(KERNEL_CS.raw() == 0x08 && KERNEL_DS.raw() == KERNEL_CS.raw() + 8);
const _: () = assert!(USER_CS32.raw() == 0x1b && USER_DS.raw() == USER_CS32.raw() + 8);
const _: () = assert!(USER_CS64.raw() == USER_CS32.raw() + 16 && USER_CS64.raw() == 0x2b);
const _: () = assert!(TSS.raw() == 0x30);

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

/// The GDT: null, the five flat segments and this CPU's TSS (architecture.md: one GDT per CPU,
/// because the TSS descriptor's busy bit and base are per CPU).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Gdt([u64; GDT_ENTRIES]);

const _: () = assert!(size_of::<Gdt>() == 64);

impl Gdt {
    /// Builds the table for a TSS at `tss_base`. `const`, so a GDT whose TSS lives at a link-time
    /// address could even be a plain `static`; usually the nucleus calls it once per CPU at boot.
    pub const fn new(tss_base: u64) -> Self {
        let tss = tss_descriptor(tss_base, TaskStateSegment::LIMIT);
        let mut entries = [0; GDT_ENTRIES];
        entries[KERNEL_CS_INDEX as usize] = Descriptor::code64(0).raw();
        entries[KERNEL_DS_INDEX as usize] = Descriptor::data(0).raw();
        // No compatibility mode for anyone (module header).
        entries[USER_CS32_INDEX as usize] = Descriptor::NULL.raw();
        entries[USER_DS_INDEX as usize] = Descriptor::data(3).raw();
        entries[USER_CS64_INDEX as usize] = Descriptor::code64(3).raw();
        entries[TSS_INDEX as usize] = tss[0];
        entries[TSS_INDEX as usize + 1] = tss[1];
        Self(entries)
    }

    /// Builds the table for `tss`, which must stay at its address for as long as the GDT is loaded.
    pub fn with_tss(tss: &TaskStateSegment) -> Self {
        Self::new(core::ptr::from_ref(tss) as u64)
    }

    /// The raw 8-byte slots, for tests and dumps.
    pub const fn entries(&self) -> &[u64; GDT_ENTRIES] {
        &self.0
    }

    /// The TSS descriptor (slots 6 and 7).
    pub const fn tss_descriptor(&self) -> [u64; 2] {
        [self.0[TSS_INDEX as usize], self.0[TSS_INDEX as usize + 1]]
    }

    /// The operand for `lgdt`. Only meaningful while `self` stays where it is.
    pub fn pointer(&self) -> DescriptorTablePointer {
        DescriptorTablePointer {
            limit: (size_of::<Self>() - 1) as u16,
            base: core::ptr::from_ref(self) as u64,
        }
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
            [KERNEL_CS, KERNEL_DS, USER_CS32, USER_DS, USER_CS64, TSS].map(Selector::raw),
            [0x08, 0x10, 0x1b, 0x23, 0x2b, 0x30]
        );
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
    fn gdt_layout() {
        let gdt = Gdt::new(0);
        let e = gdt.entries();
        assert_eq!(e[0], 0);
        assert_eq!(e[usize::from(KERNEL_CS.index())], 0x00af_9b00_0000_ffff);
        assert_eq!(e[usize::from(KERNEL_DS.index())], 0x00cf_9300_0000_ffff);
        assert_eq!(
            e[usize::from(USER_CS32.index())],
            0,
            "no usable 32-bit user code segment"
        );
        assert_eq!(e[usize::from(USER_DS.index())], 0x00cf_f300_0000_ffff);
        assert_eq!(e[usize::from(USER_CS64.index())], 0x00af_fb00_0000_ffff);
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

        let gdt = Gdt::new(base);
        assert_eq!(tss_descriptor_base(gdt.tss_descriptor()), base);
        assert_eq!(
            gdt.tss_descriptor()[0] & 0xffff,
            u64::from(TaskStateSegment::LIMIT)
        );
        assert_eq!(TaskStateSegment::LIMIT, 0x206b);
    }

    #[test]
    fn gdt_with_tss_uses_its_address() {
        let tss = Box::new(TaskStateSegment::new());
        let gdt = Box::new(Gdt::with_tss(&tss));
        assert_eq!(
            tss_descriptor_base(gdt.tss_descriptor()),
            core::ptr::from_ref(&*tss) as u64
        );
        let ptr = gdt.pointer();
        assert_eq!({ ptr.limit }, 63);
        assert_eq!({ ptr.base }, core::ptr::from_ref(&*gdt) as u64);
        assert_eq!({ ptr.base } % 16, 0);
    }
}
