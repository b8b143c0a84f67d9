//! 4-level page tables: addresses, entries, and a mapper that the host can test.
//!
//! Owns the entry format (SDM vol. 3 §4.5), the `PhysAddr`/`VirtAddr` newtypes with their
//! canonical-form rule, and `Mapper`, which creates, walks and clears mappings. The mapper never
//! dereferences a physical address itself: it asks a [`TableAccess`] for each table. The
//! nucleus implements that trait over its direct map; the host tests over a `Vec` of boxed
//! tables, so every walk and error path runs under `cargo test`.
//!
//! Does not own frames (`frame_alloc`), CR3 or TLB flushes (`insn::write_cr3`, `insn::invlpg`):
//! after `unmap_4k` or any change to a live mapping the caller flushes, on every CPU that may
//! have the old translation cached.

use core::fmt;
use core::ops::{Index, IndexMut};

use bitflags::bitflags;

/// Bytes in a 4 KiB page, a 2 MiB page and a 1 GiB page.
pub const SIZE_4K: u64 = 1 << 12;
pub const SIZE_2M: u64 = 1 << 21;
pub const SIZE_1G: u64 = 1 << 30;

/// Entries per table at every level.
pub const ENTRIES: usize = 512;

bitflags! {
    /// Page-table entry bits the nucleus sets or checks (SDM vol. 3 §4.5, tables 4-14 to 4-20).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PageTableFlags: u64 {
        /// The entry is valid; every other bit is ignored when this is clear.
        const PRESENT = 1 << 0;
        /// Writes allowed (subject to CR0.WP for supervisor accesses).
        const WRITABLE = 1 << 1;
        /// Ring 3 may access (subject to SMAP/SMEP for supervisor accesses).
        const USER = 1 << 2;
        /// PWT: write-through caching.
        const WRITE_THROUGH = 1 << 3;
        /// PCD: caching disabled (device memory).
        const NO_CACHE = 1 << 4;
        /// Set by the CPU on any access through this entry.
        const ACCESSED = 1 << 5;
        /// Set by the CPU on a write through a leaf entry.
        const DIRTY = 1 << 6;
        /// PS: in a PD (PDPT) entry, maps a 2 MiB (1 GiB) page instead of pointing at a table.
        const HUGE = 1 << 7;
        /// The translation survives CR3 writes (needs CR4.PGE).
        const GLOBAL = 1 << 8;
        /// XD: instruction fetches fault (needs EFER.NXE).
        const NO_EXECUTE = 1 << 63;
    }
}

/// Bits 51:12 of an entry: the physical address of the next table or of a 4 KiB page.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Physical addresses have at most 52 bits (MAXPHYADDR ≤ 52).
const PHYS_BITS: u32 = 52;

/// A physical address below 2^52.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Panics (a compile error in `const` context) if `addr` has bits above 51.
    pub const fn new(addr: u64) -> Self {
        assert!(addr >> PHYS_BITS == 0, "physical addresses have 52 bits");
        Self(addr)
    }

    /// `None` if `addr` has bits above 51 (use for addresses from boot info or servers).
    pub const fn try_new(addr: u64) -> Option<Self> {
        if addr >> PHYS_BITS == 0 {
            Some(Self(addr))
        } else {
            None
        }
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `align` must be a power of two.
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The address was not canonical: bits 63:47 were not all equal (4-level paging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonCanonicalAddr {
    pub addr: u64,
}

impl fmt::Display for NonCanonicalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} is not a canonical address", self.addr)
    }
}

/// A canonical virtual address under 4-level paging: bits 63:48 copy bit 47. Any access to a
/// non-canonical address raises `#GP` (or `#SS` for stack accesses), never `#PF`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// Checks the canonical form (use for addresses from boot info, ELF headers or servers).
    pub const fn try_new(addr: u64) -> Result<Self, NonCanonicalAddr> {
        if Self::new_truncate(addr).0 == addr {
            Ok(Self(addr))
        } else {
            Err(NonCanonicalAddr { addr })
        }
    }

    /// Makes `addr` canonical by copying bit 47 into bits 63:48.
    pub const fn new_truncate(addr: u64) -> Self {
        Self((((addr << 16) as i64) >> 16) as u64)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `align` must be a power of two.
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    /// The 9-bit index this address selects in a table of `level`.
    pub const fn index(self, level: Level) -> usize {
        ((self.0 >> level.shift()) & 0x1ff) as usize
    }

    pub const fn pml4_index(self) -> usize {
        self.index(Level::Pml4)
    }

    pub const fn pdpt_index(self) -> usize {
        self.index(Level::Pdpt)
    }

    pub const fn pd_index(self) -> usize {
        self.index(Level::Pd)
    }

    pub const fn pt_index(self) -> usize {
        self.index(Level::Pt)
    }

    /// Offset within the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (SIZE_4K - 1)
    }

    /// `self + bytes`, refusing overflow and results in the non-canonical hole.
    pub const fn checked_add(self, bytes: u64) -> Result<Self, NonCanonicalAddr> {
        match self.0.checked_add(bytes) {
            Some(sum) => Self::try_new(sum),
            None => Err(NonCanonicalAddr {
                addr: self.0.wrapping_add(bytes),
            }),
        }
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A level of the 4-level hierarchy, named after the table at that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Page table: entries map 4 KiB pages.
    Pt = 1,
    /// Page directory: entries point at a PT or map a 2 MiB page.
    Pd = 2,
    /// Page-directory-pointer table: entries point at a PD or map a 1 GiB page.
    Pdpt = 3,
    /// Top level, the table CR3 points at.
    Pml4 = 4,
}

impl Level {
    /// Bit position of this level's index in a virtual address.
    pub const fn shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }

    /// Bytes one entry covers (the page size if it is a leaf).
    pub const fn page_size(self) -> u64 {
        1 << self.shift()
    }

    /// The level the entries of this one point at (`None` for the PT).
    pub const fn next_lower(self) -> Option<Self> {
        match self {
            Self::Pml4 => Some(Self::Pdpt),
            Self::Pdpt => Some(Self::Pd),
            Self::Pd => Some(Self::Pt),
            Self::Pt => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Pml4 => "PML4",
            Self::Pdpt => "PDPT",
            Self::Pd => "PD",
            Self::Pt => "PT",
        }
    }
}

/// One 8-byte paging-structure entry: address bits 51:12 plus [`PageTableFlags`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct PageTableEntry(u64);

impl PageTableEntry {
    pub const EMPTY: Self = Self(0);

    /// An entry pointing at `addr`. Flag bits that would land in the address field are dropped,
    /// and address bits below 4 KiB are ignored (the mapper checks alignment before).
    pub const fn new(addr: PhysAddr, flags: PageTableFlags) -> Self {
        Self((addr.as_u64() & ADDR_MASK) | (flags.bits() & !ADDR_MASK))
    }

    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 51:12. For a 2 MiB or 1 GiB leaf, bit 12 is PAT: use [`Self::leaf_addr`].
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 & ADDR_MASK)
    }

    /// The page base of a leaf at `level`: bits below the page size (PAT, reserved) are cleared.
    pub const fn leaf_addr(self, level: Level) -> PhysAddr {
        PhysAddr(self.0 & ADDR_MASK & !(level.page_size() - 1))
    }

    /// Every non-address bit, named or not (AVL and protection-key bits are kept).
    pub const fn flags(self) -> PageTableFlags {
        PageTableFlags::from_bits_retain(self.0 & !ADDR_MASK)
    }

    pub const fn is_present(self) -> bool {
        self.0 & PageTableFlags::PRESENT.bits() != 0
    }

    pub const fn is_huge(self) -> bool {
        self.0 & PageTableFlags::HUGE.bits() != 0
    }
}

impl fmt::Debug for PageTableEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageTableEntry({:#018x})", self.0)
    }
}

/// One 4 KiB paging structure, at any level.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct PageTable([PageTableEntry; ENTRIES]);

const _: () = assert!(size_of::<PageTable>() == 4096 && align_of::<PageTable>() == 4096);

impl Default for PageTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PageTable {
    /// All entries empty.
    pub const fn new() -> Self {
        Self([PageTableEntry::EMPTY; ENTRIES])
    }

    pub fn zero(&mut self) {
        self.0 = [PageTableEntry::EMPTY; ENTRIES];
    }

    pub fn entries(&self) -> &[PageTableEntry; ENTRIES] {
        &self.0
    }
}

impl Index<usize> for PageTable {
    type Output = PageTableEntry;

    /// Panics if `index` ≥ 512; [`VirtAddr::index`] always yields a valid one.
    fn index(&self, index: usize) -> &PageTableEntry {
        &self.0[index]
    }
}

impl IndexMut<usize> for PageTable {
    fn index_mut(&mut self, index: usize) -> &mut PageTableEntry {
        &mut self.0[index]
    }
}

/// How the mapper reaches page tables by physical address and gets new ones.
pub trait TableAccess {
    /// The table at `phys` (4 KiB aligned, previously returned by `alloc_table` or the root).
    fn table(&self, phys: PhysAddr) -> &PageTable;
    /// The same table, writable.
    fn table_mut(&mut self, phys: PhysAddr) -> &mut PageTable;
    /// A 4 KiB frame for a new table, or `None` when out of memory. Its contents do not
    /// matter: the mapper zeroes it before linking it in.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
}

impl<T: TableAccess + ?Sized> TableAccess for &mut T {
    fn table(&self, phys: PhysAddr) -> &PageTable {
        (**self).table(phys)
    }

    fn table_mut(&mut self, phys: PhysAddr) -> &mut PageTable {
        (**self).table_mut(phys)
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        (**self).alloc_table()
    }
}

/// Why a mapping change was refused. Nothing is changed when one is returned, except that
/// intermediate tables created before an `OutOfFrames` stay linked (empty, harmless).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A present entry already sits where the new leaf would go (`level` is the leaf's level;
    /// at `Pd` for a 2 MiB mapping this may be a page table of 4 KiB mappings).
    AlreadyMapped {
        virt: VirtAddr,
        level: Level,
        existing: PageTableEntry,
    },
    /// `TableAccess::alloc_table` returned `None`.
    OutOfFrames,
    /// A 2 MiB or 1 GiB page covers `virt` at `level`, where a table was needed.
    HugePageInTheWay { virt: VirtAddr, level: Level },
    /// `addr` (virtual or physical) is not a multiple of `align`.
    Misaligned { addr: u64, align: u64 },
    /// A range ran into the non-canonical hole (or past the end of the address space).
    NonCanonical { addr: u64 },
    /// Nothing is mapped at `virt` (unmap).
    NotMapped { virt: VirtAddr },
}

impl From<NonCanonicalAddr> for MapError {
    fn from(error: NonCanonicalAddr) -> Self {
        Self::NonCanonical { addr: error.addr }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyMapped {
                virt,
                level,
                existing,
            } => {
                write!(
                    f,
                    "{virt}: already mapped ({} entry {:#x})",
                    level.name(),
                    existing.raw()
                )
            }
            Self::OutOfFrames => f.write_str("out of frames for page tables"),
            Self::HugePageInTheWay { virt, level } => {
                write!(f, "{virt}: inside a huge page at {}", level.name())
            }
            Self::Misaligned { addr, align } => write!(f, "{addr:#x}: not aligned to {align:#x}"),
            Self::NonCanonical { addr } => write!(f, "{addr:#x}: not canonical"),
            Self::NotMapped { virt } => write!(f, "{virt}: not mapped"),
        }
    }
}

/// Flags of intermediate entries. The CPU combines the levels: a page is writable only if
/// every level has R/W, user-accessible only if every level has U/S, executable only if no
/// level has XD. So intermediate entries grant the most (PRESENT|WRITABLE, no XD) and the
/// leaf alone decides W^X. USER is the exception: it is added only on the path to a USER leaf,
/// so the kernel half (whose PML4 entries every address space shares) never carries USER and
/// a kernel subtree cannot become reachable from ring 3 by a single wrong leaf bit.
const INTERMEDIATE: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

/// Where a walk stopped.
enum Lookup {
    /// A present leaf at `level`, held in slot `index` of the table at `table`.
    Leaf {
        table: PhysAddr,
        index: usize,
        level: Level,
        entry: PageTableEntry,
    },
    /// No valid translation.
    Missing,
}

/// Creates, removes and resolves mappings in the hierarchies rooted at any PML4 that `tables`
/// can reach.
pub struct Mapper<A> {
    tables: A,
}

impl<A: TableAccess> Mapper<A> {
    pub const fn new(tables: A) -> Self {
        Self { tables }
    }

    pub fn tables(&self) -> &A {
        &self.tables
    }

    pub fn into_inner(self) -> A {
        self.tables
    }

    /// Maps the 4 KiB page at `virt` to `phys`. `PRESENT` is implied; `HUGE` is ignored (at the
    /// PT level that bit means PAT).
    pub fn map_4k(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        phys: PhysAddr,
        flags: PageTableFlags,
    ) -> Result<(), MapError> {
        check_aligned(virt.as_u64(), SIZE_4K)?;
        check_aligned(phys.as_u64(), SIZE_4K)?;
        let leaf_flags = flags
            .difference(PageTableFlags::HUGE)
            .union(PageTableFlags::PRESENT);
        self.install_leaf(root, virt, Level::Pt, PageTableEntry::new(phys, leaf_flags))
    }

    /// Maps the 2 MiB page at `virt` to `phys`. `PRESENT` and `HUGE` are implied.
    pub fn map_2m(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        phys: PhysAddr,
        flags: PageTableFlags,
    ) -> Result<(), MapError> {
        check_aligned(virt.as_u64(), SIZE_2M)?;
        check_aligned(phys.as_u64(), SIZE_2M)?;
        let leaf_flags = flags.union(PageTableFlags::PRESENT | PageTableFlags::HUGE);
        self.install_leaf(root, virt, Level::Pd, PageTableEntry::new(phys, leaf_flags))
    }

    /// Maps `len` bytes (rounded up to whole pages) from `virt` to `phys` with 4 KiB pages.
    /// On error, the pages before the failing one stay mapped.
    pub fn map_range_4k(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: PageTableFlags,
    ) -> Result<(), MapError> {
        check_aligned(virt.as_u64(), SIZE_4K)?;
        check_aligned(phys.as_u64(), SIZE_4K)?;
        for page in 0..len.div_ceil(SIZE_4K) {
            let offset = page * SIZE_4K;
            let page_virt = virt.checked_add(offset)?;
            let page_phys = phys
                .as_u64()
                .checked_add(offset)
                .and_then(PhysAddr::try_new)
                .ok_or(MapError::NonCanonical {
                    addr: phys.as_u64().wrapping_add(offset),
                })?;
            self.map_4k(root, page_virt, page_phys, flags)?;
        }
        Ok(())
    }

    /// Removes the 4 KiB mapping at `virt` and returns the frame it mapped. Tables that become
    /// empty are kept. The caller flushes the TLB (`insn::invlpg`) before reusing the frame.
    pub fn unmap_4k(&mut self, root: PhysAddr, virt: VirtAddr) -> Result<PhysAddr, MapError> {
        check_aligned(virt.as_u64(), SIZE_4K)?;
        match self.lookup(root, virt) {
            Lookup::Leaf {
                table,
                index,
                level: Level::Pt,
                entry,
            } => {
                self.tables.table_mut(table)[index] = PageTableEntry::EMPTY;
                Ok(entry.addr())
            }
            Lookup::Leaf { level, .. } => Err(MapError::HugePageInTheWay { virt, level }),
            Lookup::Missing => Err(MapError::NotMapped { virt }),
        }
    }

    /// Resolves `virt` through 4 KiB, 2 MiB and 1 GiB pages: the physical address of that very
    /// byte and the leaf entry's flags (the upper levels' R/W and U/S are not folded in; the
    /// mapper keeps them permissive, see `INTERMEDIATE`).
    pub fn translate(&self, root: PhysAddr, virt: VirtAddr) -> Option<(PhysAddr, PageTableFlags)> {
        match self.lookup(root, virt) {
            Lookup::Leaf { level, entry, .. } => {
                let offset = virt.as_u64() & (level.page_size() - 1);
                Some((
                    PhysAddr(entry.leaf_addr(level).as_u64() + offset),
                    entry.flags(),
                ))
            }
            Lookup::Missing => None,
        }
    }

    /// Walks down from `root` to the leaf for `virt`, without changing anything.
    fn lookup(&self, root: PhysAddr, virt: VirtAddr) -> Lookup {
        let mut table = root;
        let mut level = Level::Pml4;
        loop {
            let index = virt.index(level);
            let entry = self.tables.table(table)[index];
            if !entry.is_present() {
                return Lookup::Missing;
            }
            // PS is reserved in a PML4 entry (the CPU raises a reserved-bit #PF), so nothing
            // translates there; in a PT entry bit 7 is PAT, not PS.
            if entry.is_huge() && level == Level::Pml4 {
                return Lookup::Missing;
            }
            let huge_leaf = entry.is_huge() && level != Level::Pt;
            match level.next_lower() {
                Some(lower) if !huge_leaf => {
                    table = entry.addr();
                    level = lower;
                }
                _ => {
                    return Lookup::Leaf {
                        table,
                        index,
                        level,
                        entry,
                    };
                }
            }
        }
    }

    /// Walks down to the table at `leaf_level`, creating missing tables, then stores `leaf`.
    fn install_leaf(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        leaf_level: Level,
        leaf: PageTableEntry,
    ) -> Result<(), MapError> {
        let user = leaf.flags().contains(PageTableFlags::USER);
        let mut table = root;
        let mut level = Level::Pml4;
        while level != leaf_level {
            let index = virt.index(level);
            let entry = self.tables.table(table)[index];
            let next = if !entry.is_present() {
                let new = self.tables.alloc_table().ok_or(MapError::OutOfFrames)?;
                self.tables.table_mut(new).zero();
                let flags = if user {
                    INTERMEDIATE.union(PageTableFlags::USER)
                } else {
                    INTERMEDIATE
                };
                self.tables.table_mut(table)[index] = PageTableEntry::new(new, flags);
                new
            } else if entry.is_huge() {
                return Err(MapError::HugePageInTheWay { virt, level });
            } else {
                if user && !entry.flags().contains(PageTableFlags::USER) {
                    let widened = entry.flags().union(PageTableFlags::USER);
                    self.tables.table_mut(table)[index] =
                        PageTableEntry::new(entry.addr(), widened);
                }
                entry.addr()
            };
            table = next;
            // `leaf_level` is below `level`, so a lower level exists.
            level = level.next_lower().unwrap_or(Level::Pt);
        }
        let index = virt.index(leaf_level);
        let existing = self.tables.table(table)[index];
        if existing.is_present() {
            return Err(MapError::AlreadyMapped {
                virt,
                level: leaf_level,
                existing,
            });
        }
        self.tables.table_mut(table)[index] = leaf;
        Ok(())
    }
}

const fn check_aligned(addr: u64, align: u64) -> Result<(), MapError> {
    if addr & (align - 1) == 0 {
        Ok(())
    } else {
        Err(MapError::Misaligned { addr, align })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables live in boxes; "physical" addresses start at `TABLE_BASE`, far from the frames
    /// the tests map, so a table address can never be confused with a mapped frame.
    struct FakeTables {
        tables: Vec<Box<PageTable>>,
        limit: usize,
    }

    const TABLE_BASE: u64 = 0x40_0000_0000;

    impl FakeTables {
        fn new(limit: usize) -> (Self, PhysAddr) {
            let mut fake = Self {
                tables: Vec::new(),
                limit,
            };
            let root = fake.alloc_table().unwrap();
            fake.table_mut(root).zero();
            (fake, root)
        }

        fn slot(phys: PhysAddr) -> usize {
            assert!(phys.is_aligned(SIZE_4K), "table address {phys} misaligned");
            usize::try_from((phys.as_u64() - TABLE_BASE) / SIZE_4K).unwrap()
        }
    }

    impl TableAccess for FakeTables {
        fn table(&self, phys: PhysAddr) -> &PageTable {
            &self.tables[Self::slot(phys)]
        }

        fn table_mut(&mut self, phys: PhysAddr) -> &mut PageTable {
            &mut self.tables[Self::slot(phys)]
        }

        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.tables.len() == self.limit {
                return None;
            }
            // Garbage on purpose: the mapper must zero new tables itself.
            let mut table = Box::new(PageTable::new());
            table
                .0
                .fill(PageTableEntry::from_raw(0xdead_beef_0000_0fff));
            self.tables.push(table);
            Some(PhysAddr::new(
                TABLE_BASE + (self.tables.len() as u64 - 1) * SIZE_4K,
            ))
        }
    }

    fn virt(addr: u64) -> VirtAddr {
        VirtAddr::try_new(addr).unwrap()
    }

    fn phys(addr: u64) -> PhysAddr {
        PhysAddr::new(addr)
    }

    use PageTableFlags as F;

    #[test]
    fn virt_addr_canonical() {
        assert!(VirtAddr::try_new(0x0000_7fff_ffff_ffff).is_ok());
        assert!(VirtAddr::try_new(0xffff_8000_0000_0000).is_ok());
        assert_eq!(
            VirtAddr::try_new(0x0000_8000_0000_0000),
            Err(NonCanonicalAddr {
                addr: 0x0000_8000_0000_0000
            })
        );
        assert_eq!(
            VirtAddr::try_new(0xfff7_0000_0000_0000),
            Err(NonCanonicalAddr {
                addr: 0xfff7_0000_0000_0000
            })
        );
        assert_eq!(
            VirtAddr::new_truncate(0x0000_8000_0000_1000).as_u64(),
            0xffff_8000_0000_1000
        );
        assert_eq!(
            VirtAddr::new_truncate(0x1234_7fff_0000_0000).as_u64(),
            0x0000_7fff_0000_0000
        );
        assert_eq!(
            virt(0x0000_7fff_ffff_f000).checked_add(0x1000),
            Err(NonCanonicalAddr {
                addr: 0x0000_8000_0000_0000
            })
        );
        assert_eq!(
            virt(0xffff_ffff_ffff_f000).checked_add(0x1000),
            Err(NonCanonicalAddr { addr: 0 })
        );
        assert_eq!(
            NonCanonicalAddr {
                addr: 0x8000_0000_0000
            }
            .to_string(),
            "0x800000000000 is not a canonical address"
        );
    }

    #[test]
    fn phys_addr_width() {
        assert_eq!(
            PhysAddr::try_new(0x000f_ffff_ffff_ffff).map(PhysAddr::as_u64),
            Some(0x000f_ffff_ffff_ffff)
        );
        assert_eq!(PhysAddr::try_new(0x0010_0000_0000_0000), None);
        assert!(phys(0x20_0000).is_aligned(SIZE_2M));
        assert!(!phys(0x20_1000).is_aligned(SIZE_2M));
    }

    #[test]
    fn indices() {
        let addr = virt(0xffff_8000_4020_3abc);
        assert_eq!(
            (
                addr.pml4_index(),
                addr.pdpt_index(),
                addr.pd_index(),
                addr.pt_index()
            ),
            (256, 1, 1, 3)
        );
        assert_eq!(addr.page_offset(), 0xabc);
        let top = virt(0xffff_ffff_ffff_ffff);
        assert_eq!(
            [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt].map(|l| top.index(l)),
            [511; 4]
        );
        assert_eq!(
            (
                Level::Pt.page_size(),
                Level::Pd.page_size(),
                Level::Pdpt.page_size()
            ),
            (SIZE_4K, SIZE_2M, SIZE_1G)
        );
        assert_eq!(Level::Pml4.shift(), 39);
    }

    #[test]
    fn entry_encoding() {
        let entry =
            PageTableEntry::new(phys(0x1234_5000), F::PRESENT | F::WRITABLE | F::NO_EXECUTE);
        assert_eq!(entry.raw(), 0x8000_0000_1234_5003);
        assert_eq!(entry.addr(), phys(0x1234_5000));
        assert_eq!(entry.flags(), F::PRESENT | F::WRITABLE | F::NO_EXECUTE);
        // Stray flag bits cannot corrupt the address and vice versa.
        let sneaky = PageTableEntry::new(
            phys(0x1234_5fff),
            F::from_bits_retain(0x0000_0000_0010_0001),
        );
        assert_eq!(sneaky.raw(), 0x1234_5001);
        // 2 MiB leaf with PAT (bit 12) set: the page base ignores it.
        let huge = PageTableEntry::from_raw(0x0020_1000 | 0x81);
        assert_eq!(huge.leaf_addr(Level::Pd), phys(0x20_0000));
        assert!(huge.is_huge() && huge.is_present());
    }

    #[test]
    fn map_4k_w_xor_x_and_translate() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        let text = virt(0xffff_ffff_8000_0000);
        let data = virt(0xffff_ffff_8000_1000);
        mapper
            .map_4k(root, text, phys(0x20_0000), F::GLOBAL)
            .unwrap();
        mapper
            .map_4k(
                root,
                data,
                phys(0x30_5000),
                F::WRITABLE | F::NO_EXECUTE | F::GLOBAL,
            )
            .unwrap();

        let (text_phys, text_flags) = mapper.translate(root, virt(text.as_u64() + 0x123)).unwrap();
        assert_eq!(text_phys, phys(0x20_0123));
        assert_eq!(text_flags, F::PRESENT | F::GLOBAL);
        assert!(!text_flags.contains(F::WRITABLE) && !text_flags.contains(F::NO_EXECUTE));
        let (data_phys, data_flags) = mapper.translate(root, data).unwrap();
        assert_eq!(data_phys, phys(0x30_5000));
        assert_eq!(
            data_flags,
            F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL
        );

        assert_eq!(mapper.translate(root, virt(0xffff_ffff_8000_2000)), None);
        assert_eq!(mapper.translate(root, virt(0x1000)), None);
        // Root + PDPT + PD + PT, shared by both pages.
        assert_eq!(mapper.tables().tables.len(), 4);
    }

    #[test]
    fn intermediate_tables_are_zeroed_and_permissive() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        let addr = virt(0xffff_8000_0000_0000);
        mapper
            .map_4k(root, addr, phys(0x1000), F::NO_EXECUTE)
            .unwrap();
        let tables = mapper.tables();
        let pml4e = tables.table(root)[256];
        assert_eq!(pml4e.flags(), F::PRESENT | F::WRITABLE);
        let pdpt = tables.table(pml4e.addr());
        assert_eq!(pdpt.entries().iter().filter(|e| e.raw() != 0).count(), 1);
        assert_eq!(pdpt[0].flags(), F::PRESENT | F::WRITABLE);
        // Only the indices used are set in the fresh root too (it came back garbage-filled).
        assert_eq!(
            tables
                .table(root)
                .entries()
                .iter()
                .filter(|e| e.raw() != 0)
                .count(),
            1
        );
    }

    #[test]
    fn user_leaf_sets_user_on_its_path_only() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        // A kernel page first creates a supervisor-only path ...
        mapper
            .map_4k(root, virt(0x40_0000), phys(0x10_0000), F::WRITABLE)
            .unwrap();
        let pml4e = mapper.tables().table(root)[0];
        assert!(!pml4e.flags().contains(F::USER));
        // ... a user page below the same PML4/PDPT/PD entries widens exactly that path.
        mapper
            .map_4k(
                root,
                virt(0x40_1000),
                phys(0x10_1000),
                F::USER | F::WRITABLE | F::NO_EXECUTE,
            )
            .unwrap();
        let tables = mapper.tables();
        let pml4e = tables.table(root)[0];
        let pdpte = tables.table(pml4e.addr())[0];
        let pde = tables.table(pdpte.addr())[2];
        for e in [pml4e, pdpte, pde] {
            assert_eq!(e.flags(), F::PRESENT | F::WRITABLE | F::USER);
        }
        let pt = tables.table(pde.addr());
        assert!(
            !pt[0].flags().contains(F::USER),
            "kernel leaf stays supervisor"
        );
        assert!(pt[1].flags().contains(F::USER));
        assert_eq!(tables.tables.len(), 4);
    }

    #[test]
    fn map_2m_and_translate_inside() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        let base = virt(0xffff_8000_0020_0000);
        mapper
            .map_2m(root, base, phys(0x4000_0000), F::WRITABLE | F::NO_EXECUTE)
            .unwrap();
        let (p, flags) = mapper
            .translate(root, virt(base.as_u64() + 0x1f_f123))
            .unwrap();
        assert_eq!(p, phys(0x401f_f123));
        assert_eq!(flags, F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::HUGE);
        // Root + PDPT + PD: no PT for a 2 MiB page.
        assert_eq!(mapper.tables().tables.len(), 3);
    }

    #[test]
    fn translate_1g_page() {
        let (mut fake, root) = FakeTables::new(16);
        let pdpt = fake.alloc_table().unwrap();
        fake.table_mut(pdpt).zero();
        fake.table_mut(root)[0] = PageTableEntry::new(pdpt, INTERMEDIATE);
        fake.table_mut(pdpt)[1] = PageTableEntry::new(phys(0x8000_0000), F::PRESENT | F::HUGE);
        let mapper = Mapper::new(fake);
        assert_eq!(
            mapper.translate(root, virt(0x4abc_def0)),
            Some((phys(0x8abc_def0), F::PRESENT | F::HUGE))
        );
    }

    #[test]
    fn unmap_then_remap() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        let page = virt(0x7fff_ffff_f000);
        mapper.map_4k(root, page, phys(0x5000), F::USER).unwrap();
        assert_eq!(mapper.unmap_4k(root, page), Ok(phys(0x5000)));
        assert_eq!(mapper.translate(root, page), None);
        assert_eq!(
            mapper.unmap_4k(root, page),
            Err(MapError::NotMapped { virt: page })
        );
        mapper.map_4k(root, page, phys(0x6000), F::USER).unwrap();
        assert_eq!(
            mapper.translate(root, page),
            Some((phys(0x6000), F::PRESENT | F::USER))
        );
        assert_eq!(
            mapper.unmap_4k(root, virt(0x1000)),
            Err(MapError::NotMapped { virt: virt(0x1000) })
        );
    }

    #[test]
    fn already_mapped() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        let page = virt(0x20_0000);
        mapper.map_4k(root, page, phys(0x1000), F::empty()).unwrap();
        let existing = PageTableEntry::new(phys(0x1000), F::PRESENT);
        assert_eq!(
            mapper.map_4k(root, page, phys(0x2000), F::WRITABLE),
            Err(MapError::AlreadyMapped {
                virt: page,
                level: Level::Pt,
                existing
            })
        );
        // The original mapping is untouched.
        assert_eq!(
            mapper.translate(root, page),
            Some((phys(0x1000), F::PRESENT))
        );
        // A 2 MiB mapping over the page table holding that 4 KiB page.
        match mapper.map_2m(root, page, phys(0x20_0000), F::empty()) {
            Err(MapError::AlreadyMapped {
                level: Level::Pd,
                existing,
                ..
            }) => assert!(!existing.is_huge()),
            other => panic!("{other:?}"),
        }
        let huge = virt(0x40_0000);
        mapper
            .map_2m(root, huge, phys(0x20_0000), F::empty())
            .unwrap();
        assert!(matches!(
            mapper.map_2m(root, huge, phys(0x40_0000), F::empty()),
            Err(MapError::AlreadyMapped {
                level: Level::Pd,
                ..
            })
        ));
    }

    #[test]
    fn huge_page_in_the_way() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        mapper
            .map_2m(root, virt(0x60_0000), phys(0x60_0000), F::WRITABLE)
            .unwrap();
        let inside = virt(0x60_3000);
        assert_eq!(
            mapper.map_4k(root, inside, phys(0x1000), F::empty()),
            Err(MapError::HugePageInTheWay {
                virt: inside,
                level: Level::Pd
            })
        );
        assert_eq!(
            mapper.unmap_4k(root, inside),
            Err(MapError::HugePageInTheWay {
                virt: inside,
                level: Level::Pd
            })
        );
        assert_eq!(
            mapper.translate(root, inside),
            Some((phys(0x60_3000), F::PRESENT | F::WRITABLE | F::HUGE))
        );
    }

    #[test]
    fn misaligned() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        assert_eq!(
            mapper.map_4k(root, virt(0x1234), phys(0x1000), F::empty()),
            Err(MapError::Misaligned {
                addr: 0x1234,
                align: SIZE_4K
            })
        );
        assert_eq!(
            mapper.map_4k(root, virt(0x1000), phys(0x1001), F::empty()),
            Err(MapError::Misaligned {
                addr: 0x1001,
                align: SIZE_4K
            })
        );
        assert_eq!(
            mapper.map_2m(root, virt(0x1000), phys(0), F::empty()),
            Err(MapError::Misaligned {
                addr: 0x1000,
                align: SIZE_2M
            })
        );
        assert_eq!(
            mapper.map_2m(root, virt(0x20_0000), phys(0x10_0000), F::empty()),
            Err(MapError::Misaligned {
                addr: 0x10_0000,
                align: SIZE_2M
            })
        );
        assert_eq!(
            mapper.unmap_4k(root, virt(0x10)),
            Err(MapError::Misaligned {
                addr: 0x10,
                align: SIZE_4K
            })
        );
        // Nothing was allocated by the refused calls.
        assert_eq!(mapper.tables().tables.len(), 1);
    }

    #[test]
    fn out_of_frames() {
        // Root plus two tables: the PT cannot be allocated.
        let (fake, root) = FakeTables::new(3);
        let mut mapper = Mapper::new(fake);
        assert_eq!(
            mapper.map_4k(root, virt(0x1000), phys(0x1000), F::empty()),
            Err(MapError::OutOfFrames)
        );
        assert_eq!(mapper.translate(root, virt(0x1000)), None);
        // A 2 MiB page needs no PT, so it still fits.
        mapper
            .map_2m(root, virt(0x20_0000), phys(0x20_0000), F::empty())
            .unwrap();
    }

    #[test]
    fn map_range_4k_and_canonical_hole() {
        let (fake, root) = FakeTables::new(16);
        let mut mapper = Mapper::new(fake);
        mapper
            .map_range_4k(root, virt(0x40_0000), phys(0x80_0000), 0x2001, F::USER)
            .unwrap();
        for (offset, expected) in [(0, 0x80_0000), (0x1000, 0x80_1000), (0x2fff, 0x80_2fff)] {
            assert_eq!(
                mapper
                    .translate(root, virt(0x40_0000 + offset))
                    .map(|(p, _)| p),
                Some(phys(expected))
            );
        }
        assert_eq!(mapper.translate(root, virt(0x40_3000)), None);

        let last = virt(0x7fff_ffff_f000);
        assert_eq!(
            mapper.map_range_4k(root, last, phys(0x1000), 2 * SIZE_4K, F::USER),
            Err(MapError::NonCanonical {
                addr: 0x8000_0000_0000
            })
        );
        // The page below the hole was mapped before the error.
        assert!(mapper.translate(root, last).is_some());
        assert_eq!(
            MapError::from(NonCanonicalAddr { addr: 5 }),
            MapError::NonCanonical { addr: 5 }
        );
    }

    #[test]
    fn error_display() {
        let virt = virt(0xffff_8000_0000_1000);
        let cases = [
            (
                MapError::AlreadyMapped {
                    virt,
                    level: Level::Pt,
                    existing: PageTableEntry::from_raw(0x5003),
                },
                "0xffff800000001000: already mapped (PT entry 0x5003)",
            ),
            (MapError::OutOfFrames, "out of frames for page tables"),
            (
                MapError::HugePageInTheWay {
                    virt,
                    level: Level::Pd,
                },
                "0xffff800000001000: inside a huge page at PD",
            ),
            (
                MapError::Misaligned {
                    addr: 0x1234,
                    align: 0x1000,
                },
                "0x1234: not aligned to 0x1000",
            ),
            (
                MapError::NonCanonical {
                    addr: 0x8000_0000_0000,
                },
                "0x800000000000: not canonical",
            ),
            (
                MapError::NotMapped { virt },
                "0xffff800000001000: not mapped",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
