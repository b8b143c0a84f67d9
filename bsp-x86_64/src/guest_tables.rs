//! Guest page tables as the nucleus keeps them (pv64-abi.md §5.1, rules I2/I3): taking a
//! table type validates the whole table, recursively; dropping the last one releases what
//! its entries held; an entry update takes the new entry's references before it drops the
//! old one's. Host-tested over a fake frame memory; the nucleus implements [`TableMemory`]
//! over its direct map.
//!
//! Every entry goes through [`guest_pte::check`]: a table only ever holds entries that passed
//! it, so the references an entry holds can be recomputed from the entry itself when it goes
//! (hardware changes only the A and D bits). A failure anywhere rolls back every reference
//! taken for it: the frame table is exactly as before, and the table frame is untyped again.
//!
//! Recursion is bounded by the levels: a table of level n only ever takes tables of level
//! n-1, and a frame takes a table type only once (later uses find it `Existing`), so a cycle
//! in the guest's tables shows up as a type conflict, not as a loop.

use xen_abi::{Errno, Mfn};

use crate::frame_owner::{
    Acquired, DomainId, FrameInfo, FrameTable, OwnershipError, PageType, TableLevel,
};
use crate::guest_pte::{self, CpuLimits, Needs, Refused, Slot, is_guest_l4_slot};

/// Raw access to the entries of table frames.
pub trait TableMemory {
    /// Entry `index` (0-511) of the table in frame `table`.
    fn read(&self, table: Mfn, index: usize) -> u64;
    /// Stores entry `index` of the table in frame `table`.
    fn write(&mut self, table: Mfn, index: usize, entry: u64);
    /// The nucleus' own entry for L4 slot `slot` (256-271), copied into every guest L4.
    fn hypervisor_l4_entry(&self, slot: usize) -> u64;
}

/// Why a table operation failed. Nothing changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Entry `index` of table `table` failed the entry check.
    Refused {
        table: Mfn,
        index: usize,
        refused: Refused,
    },
    /// The frame table refused a reference (ownership, a type in force, a count).
    Ownership(OwnershipError),
    /// The frame is not a validated table of that level (an update into a non-table).
    NotATable { mfn: Mfn, level: TableLevel },
}

impl TableError {
    /// What the hypercall returns (pv64-abi.md §4.2, §4.7, §4.15).
    pub const fn errno(&self) -> Errno {
        match self {
            Self::Refused { refused, .. } => refused.errno(),
            Self::Ownership(OwnershipError::NotRam(_)) => Errno::Eperm,
            Self::Ownership(OwnershipError::TypeConflict { .. }) => Errno::Ebusy,
            Self::Ownership(_) | Self::NotATable { .. } => Errno::Einval,
        }
    }
}

impl From<OwnershipError> for TableError {
    fn from(error: OwnershipError) -> Self {
        Self::Ownership(error)
    }
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused {
                table,
                index,
                refused,
            } => write!(f, "{table} entry {index}: {refused}"),
            Self::Ownership(error) => write!(f, "{error}"),
            Self::NotATable { mfn, level } => write!(f, "{mfn} is not a validated {level:?} table"),
        }
    }
}

/// One domain's page tables, over the frame table and the frames' memory.
pub struct GuestTables<'a, S, M> {
    pub frames: &'a mut FrameTable<S>,
    pub memory: &'a mut M,
    pub cpu: CpuLimits,
    pub domain: DomainId,
}

impl<S, M> GuestTables<'_, S, M>
where
    S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>,
    M: TableMemory,
{
    /// Takes a type reference of table `level` on `mfn`, validating every entry (and the
    /// tables they name) if this is its first. An L4 gets the hypervisor's slots.
    pub fn get_table(&mut self, mfn: Mfn, level: TableLevel) -> Result<(), TableError> {
        let acquired = self
            .frames
            .get_type(mfn, self.domain, PageType::PageTable(level))?;
        if acquired != Acquired::NeedsValidation {
            return Ok(());
        }
        for index in 0..512 {
            if level == TableLevel::L4 && !is_guest_l4_slot(index) {
                continue;
            }
            if let Err(error) = self.take_entry(mfn, level, index) {
                self.release_entries(mfn, level, 0..index);
                let _ = self.frames.put_type(mfn);
                return Err(error);
            }
        }
        if level == TableLevel::L4 {
            for slot in xen_abi::layout::HYPERVISOR_L4_SLOTS {
                let entry = self.memory.hypervisor_l4_entry(slot);
                self.memory.write(mfn, slot, entry);
            }
        }
        self.frames.mark_validated(mfn)?;
        Ok(())
    }

    /// Drops a table type reference; the last one releases what every entry held.
    pub fn put_table(&mut self, mfn: Mfn) -> Result<(), TableError> {
        let info = self.frames.info(mfn).ok_or(OwnershipError::NotRam(mfn))?;
        // Dropping a table reference that was never taken is a caller bug, as in put_type.
        let PageType::PageTable(level) = info.current_type() else {
            return Err(OwnershipError::CountMismatch(mfn).into());
        };
        if self.frames.put_type(mfn)? {
            self.release_entries(mfn, level, 0..512);
            if level == TableLevel::L4 {
                // No longer a table, the frame may be mapped and read by the guest: the
                // hypervisor's entries (where the nucleus' tables live) go with the type.
                for slot in xen_abi::layout::HYPERVISOR_L4_SLOTS {
                    self.memory.write(mfn, slot, 0);
                }
            }
        }
        Ok(())
    }

    /// Replaces entry `index` of the validated table `table` (mmu_update's normal update,
    /// update_va_mapping): checks `new`, takes its references, writes it, drops the old
    /// entry's. Returns the old entry; the caller flushes the TLB as the hypercall asks.
    pub fn update_entry(
        &mut self,
        table: Mfn,
        level: TableLevel,
        index: usize,
        new: u64,
    ) -> Result<u64, TableError> {
        let info = self
            .frames
            .info(table)
            .ok_or(OwnershipError::NotRam(table))?;
        let owned = self.frames.check_owner(table, self.domain).is_ok();
        if !owned
            || info.current_type() != PageType::PageTable(level)
            || !info.is_validated()
            || index >= 512
        {
            return Err(TableError::NotATable { mfn: table, level });
        }
        let accepted = self.check(table, level, index, new)?;
        self.take(accepted.needs)?;
        let old = self.memory.read(table, index);
        self.memory.write(table, index, accepted.entry);
        self.release(level, old);
        Ok(old)
    }

    fn check(
        &self,
        table: Mfn,
        level: TableLevel,
        index: usize,
        raw: u64,
    ) -> Result<guest_pte::Accepted, TableError> {
        let slot = Slot {
            domain: self.domain,
            level,
            table,
            index,
        };
        guest_pte::check(self.frames, self.cpu, slot, raw).map_err(|refused| TableError::Refused {
            table,
            index,
            refused,
        })
    }

    /// Validates entry `index` of a table being promoted, takes its references and stores
    /// the adjusted value.
    fn take_entry(
        &mut self,
        table: Mfn,
        level: TableLevel,
        index: usize,
    ) -> Result<(), TableError> {
        let raw = self.memory.read(table, index);
        let accepted = self.check(table, level, index, raw)?;
        self.take(accepted.needs)?;
        if accepted.entry != raw {
            self.memory.write(table, index, accepted.entry);
        }
        Ok(())
    }

    fn take(&mut self, needs: Needs) -> Result<(), TableError> {
        match needs {
            Needs::Nothing => Ok(()),
            Needs::Reference(mfn) => Ok(self.frames.get_ref(mfn, self.domain)?),
            Needs::Type(mfn, PageType::PageTable(level)) => self.get_table(mfn, level),
            Needs::Type(mfn, kind) => self
                .frames
                .get_type(mfn, self.domain, kind)
                .map(|_| ())
                .map_err(Into::into),
        }
    }

    fn release_entries(&mut self, table: Mfn, level: TableLevel, indices: core::ops::Range<usize>) {
        for index in indices {
            if level == TableLevel::L4 && !is_guest_l4_slot(index) {
                continue;
            }
            let entry = self.memory.read(table, index);
            self.release(level, entry);
        }
    }

    /// Drops what an accepted entry holds (the inverse of [`Self::take`] for it).
    fn release(&mut self, level: TableLevel, entry: u64) {
        const PRESENT: u64 = 1;
        const WRITABLE: u64 = 2;
        if entry & PRESENT == 0 {
            return;
        }
        let target = Mfn((entry & 0x000f_ffff_ffff_f000) >> 12);
        // The entry passed the check when it was stored, so its references exist: a failure
        // here would be a bookkeeping bug, and there is nothing better to do than go on.
        let _ = match level {
            TableLevel::L1 if entry & WRITABLE != 0 => self.frames.put_type(target).map(|_| ()),
            TableLevel::L1 => self.frames.put_ref(target),
            _ => self
                .put_table(target)
                .map_err(|_| OwnershipError::CountMismatch(target)),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::frame_owner::Owner;
    use crate::guest_pte::GUEST_KERNEL;

    const GUEST: DomainId = DomainId(3);
    const CPU: CpuLimits = CpuLimits { phys_addr_bits: 40 };
    const HV_ENTRY: u64 = 0x8000_0000_0abc_d063;

    #[derive(Default)]
    struct Memory {
        tables: HashMap<u64, [u64; 512]>,
    }

    impl TableMemory for Memory {
        fn read(&self, table: Mfn, index: usize) -> u64 {
            self.tables.get(&table.0).map_or(0, |t| t[index])
        }
        fn write(&mut self, table: Mfn, index: usize, entry: u64) {
            self.tables.entry(table.0).or_insert([0; 512])[index] = entry;
        }
        fn hypervisor_l4_entry(&self, slot: usize) -> u64 {
            HV_ENTRY + ((slot as u64) << 12)
        }
    }

    type Frames = FrameTable<std::vec::Vec<FrameInfo>>;

    /// Frames 0x200..0x240, 0x200..0x230 the guest's, 0x230 someone else's.
    fn world() -> (Frames, Memory) {
        let mut frames = FrameTable::new(Mfn(0x200), std::vec![FrameInfo::FREE; 0x40]);
        for i in 0..0x30 {
            frames.assign(Mfn(0x200 + i), GUEST).unwrap();
        }
        frames.assign(Mfn(0x230), DomainId(9)).unwrap();
        (frames, Memory::default())
    }

    /// L4 0x200 → L3 0x201 → L2 0x202 → L1 0x203 → pages 0x210.. (kernel RW) and the
    /// tables themselves read-only, as the domain builder makes them.
    fn bootstrap(memory: &mut Memory) {
        memory.write(Mfn(0x200), 0, 0x201_000 | 0x67);
        memory.write(Mfn(0x201), 0, 0x202_000 | 0x67);
        memory.write(Mfn(0x202), 0, 0x203_000 | 0x67);
        for i in 0..8 {
            memory.write(Mfn(0x203), i, (0x210 + i as u64) << 12 | 0x23);
        }
        for (i, table) in (0x200..0x204).enumerate() {
            memory.write(Mfn(0x203), 8 + i, table << 12 | 0x21);
        }
        // Junk the guest left in a hypervisor slot: overwritten, never validated.
        memory.write(Mfn(0x200), 260, 0x230_000 | 0x67);
    }

    fn tables<'a>(
        frames: &'a mut Frames,
        memory: &'a mut Memory,
    ) -> GuestTables<'a, std::vec::Vec<FrameInfo>, Memory> {
        GuestTables {
            frames,
            memory,
            cpu: CPU,
            domain: GUEST,
        }
    }

    fn ty(frames: &Frames, mfn: u64) -> (PageType, u32, u32) {
        let info = frames.info(Mfn(mfn)).unwrap();
        (info.current_type(), info.type_count(), info.general_count())
    }

    const L1: PageType = PageType::PageTable(TableLevel::L1);

    #[test]
    fn promoting_the_bootstrap_tables_and_back() {
        let (mut frames, mut memory) = world();
        bootstrap(&mut memory);
        let before = frames.infos().to_vec();
        tables(&mut frames, &mut memory)
            .get_table(Mfn(0x200), TableLevel::L4)
            .unwrap();
        // Each table: one type reference from the level above (the caller's, for the L4)
        // and one general reference from its read-only mapping in the L1.
        assert_eq!(
            ty(&frames, 0x200),
            (PageType::PageTable(TableLevel::L4), 1, 1)
        );
        assert_eq!(
            ty(&frames, 0x201),
            (PageType::PageTable(TableLevel::L3), 1, 1)
        );
        assert_eq!(
            ty(&frames, 0x202),
            (PageType::PageTable(TableLevel::L2), 1, 1)
        );
        assert_eq!(ty(&frames, 0x203), (L1, 1, 1));
        assert_eq!(ty(&frames, 0x210), (PageType::Writable, 1, 0));
        assert!(frames.info(Mfn(0x203)).unwrap().is_validated());
        // Entries were adjusted and written back; hypervisor slots copied in.
        assert_eq!(memory.read(Mfn(0x203), 0), GUEST_KERNEL | 0x210_000 | 0x27);
        assert_eq!(memory.read(Mfn(0x203), 8), GUEST_KERNEL | 0x200_000 | 0x25);
        assert_eq!(memory.read(Mfn(0x200), 256), HV_ENTRY + (256 << 12));
        assert_eq!(memory.read(Mfn(0x200), 260), HV_ENTRY + (260 << 12));
        assert_eq!(memory.read(Mfn(0x200), 0), 0x201_000 | 0x67);

        tables(&mut frames, &mut memory)
            .put_table(Mfn(0x200))
            .unwrap();
        assert_eq!(frames.infos(), &before[..], "every reference went back");
        // No longer a table, the frame is the guest's to map and read again: the
        // hypervisor's entries (where the nucleus' tables are) leave with the type.
        for slot in xen_abi::layout::HYPERVISOR_L4_SLOTS {
            assert_eq!(memory.read(Mfn(0x200), slot), 0, "slot {slot}");
        }
    }

    #[test]
    fn a_bad_entry_deep_down_rolls_everything_back() {
        let (mut frames, mut memory) = world();
        bootstrap(&mut memory);
        memory.write(Mfn(0x203), 100, 0x230_000 | 0x23); // someone else's frame
        let before = frames.infos().to_vec();
        let error = tables(&mut frames, &mut memory)
            .get_table(Mfn(0x200), TableLevel::L4)
            .unwrap_err();
        assert_eq!(
            error,
            TableError::Refused {
                table: Mfn(0x203),
                index: 100,
                refused: Refused::NotOwned {
                    mfn: Mfn(0x230),
                    owner: Owner::Domain(DomainId(9))
                }
            }
        );
        assert_eq!(error.errno(), Errno::Einval);
        assert_eq!(frames.infos(), &before[..]);
    }

    #[test]
    fn tables_mapped_writable_are_refused() {
        // The L1 maps its own L2 read-write: -EBUSY, nothing kept.
        let (mut frames, mut memory) = world();
        bootstrap(&mut memory);
        memory.write(Mfn(0x203), 9, 0x201_000 | 0x23);
        let before = frames.infos().to_vec();
        let error = tables(&mut frames, &mut memory)
            .get_table(Mfn(0x200), TableLevel::L4)
            .unwrap_err();
        assert_eq!(error.errno(), Errno::Ebusy);
        assert_eq!(frames.infos(), &before[..]);

        // A frame mapped writable elsewhere cannot become a table.
        let (mut frames, mut memory) = world();
        bootstrap(&mut memory);
        frames
            .get_type(Mfn(0x203), GUEST, PageType::Writable)
            .unwrap();
        let error = tables(&mut frames, &mut memory)
            .get_table(Mfn(0x200), TableLevel::L4)
            .unwrap_err();
        assert!(
            matches!(
                error,
                TableError::Refused {
                    refused: Refused::TypeConflict { .. },
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_cycle_is_a_type_conflict() {
        let (mut frames, mut memory) = world();
        memory.write(Mfn(0x200), 0, 0x201_000 | 0x67);
        memory.write(Mfn(0x201), 0, 0x200_000 | 0x67); // the L3 names the L4 as an L2
        let before = frames.infos().to_vec();
        let error = tables(&mut frames, &mut memory)
            .get_table(Mfn(0x200), TableLevel::L4)
            .unwrap_err();
        assert!(
            matches!(
                error,
                TableError::Refused {
                    table: Mfn(0x201),
                    index: 0,
                    refused: Refused::TypeConflict { .. }
                }
            ),
            "{error}"
        );
        assert_eq!(frames.infos(), &before[..]);
    }

    #[test]
    fn updates_map_remap_and_unmap() {
        let (mut frames, mut memory) = world();
        bootstrap(&mut memory);
        let mut t = tables(&mut frames, &mut memory);
        t.get_table(Mfn(0x200), TableLevel::L4).unwrap();
        // Map page 0x220 RW at L1 slot 20.
        assert_eq!(
            t.update_entry(Mfn(0x203), TableLevel::L1, 20, 0x220_000 | 0x67),
            Ok(0)
        );
        assert_eq!(ty(t.frames, 0x220), (PageType::Writable, 1, 0));
        // Remap the slot read-only to 0x221: 0x220 is free again.
        let old = t
            .update_entry(Mfn(0x203), TableLevel::L1, 20, 0x221_000 | 0x65)
            .unwrap();
        assert_eq!(old, 0x220_000 | 0x67);
        assert_eq!(ty(t.frames, 0x220), (PageType::None, 0, 0));
        assert_eq!(ty(t.frames, 0x221), (PageType::None, 0, 1));
        // Writable mapping of a table: -EBUSY, the slot keeps its entry.
        let error = t
            .update_entry(Mfn(0x203), TableLevel::L1, 20, 0x202_000 | 0x67)
            .unwrap_err();
        assert_eq!(error.errno(), Errno::Ebusy);
        assert_eq!(t.memory.read(Mfn(0x203), 20), 0x221_000 | 0x65);
        // Unmap.
        t.update_entry(Mfn(0x203), TableLevel::L1, 20, 0).unwrap();
        assert_eq!(ty(t.frames, 0x221), (PageType::None, 0, 0));
        // A new L1 under the L2 (slot 1): validated on the way in.
        t.memory.write(Mfn(0x204), 0, 0x222_000 | 0x23);
        t.update_entry(Mfn(0x202), TableLevel::L2, 1, 0x204_000 | 0x67)
            .unwrap();
        assert_eq!(ty(t.frames, 0x204), (L1, 1, 0));
        assert_eq!(ty(t.frames, 0x222), (PageType::Writable, 1, 0));
        // Replacing that L2 entry releases the whole L1.
        t.update_entry(Mfn(0x202), TableLevel::L2, 1, 0).unwrap();
        assert_eq!(ty(t.frames, 0x204), (PageType::None, 0, 0));
        assert_eq!(ty(t.frames, 0x222), (PageType::None, 0, 0));
        // Not a table / wrong level / hypervisor slot.
        assert_eq!(
            t.update_entry(Mfn(0x210), TableLevel::L1, 0, 0),
            Err(TableError::NotATable {
                mfn: Mfn(0x210),
                level: TableLevel::L1
            })
        );
        assert!(matches!(
            t.update_entry(Mfn(0x203), TableLevel::L2, 0, 0),
            Err(TableError::NotATable { .. })
        ));
        let error = t
            .update_entry(Mfn(0x200), TableLevel::L4, 256, 0)
            .unwrap_err();
        assert_eq!(
            error,
            TableError::Refused {
                table: Mfn(0x200),
                index: 256,
                refused: Refused::HypervisorSlot { slot: 256 }
            }
        );
        assert_eq!(t.memory.read(Mfn(0x200), 256), HV_ENTRY + (256 << 12));
    }

    fn entry() -> impl Strategy<Value = u64> {
        // Empty slots often; otherwise frames around the guest's range with the builder's
        // flags, or anything.
        let flags = prop_oneof![
            Just(0x67u64),
            Just(0x23),
            Just(0x21),
            any::<u16>().prop_map(u64::from)
        ];
        prop_oneof![
            2 => Just(0u64),
            3 => (0x1f8u64..0x234, flags).prop_map(|(frame, flags)| (frame << 12) | flags),
        ]
    }

    static PROMOTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the guest wrote into its frames: promotion either succeeds and is undone
        /// exactly by the matching put, or fails and changes nothing; and while the tables
        /// are in use no table frame is writable.
        #[test]
        fn promote_then_release_is_exact(
            writes in prop::collection::vec((0x200u64..0x210, 0usize..4, entry()), 0..48),
            root in 0x200u64..0x204,
        ) {
            let (mut frames, mut memory) = world();
            for (table, index, value) in writes {
                memory.write(Mfn(table), index, value);
            }
            let before = frames.infos().to_vec();
            let result = tables(&mut frames, &mut memory).get_table(Mfn(root), TableLevel::L4);
            match result {
                Err(_) => prop_assert_eq!(frames.infos(), &before[..]),
                Ok(()) => {
                    PROMOTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    for info in frames.infos() {
                        prop_assert!(info.type_count() == 0 || info.page_type() != PageType::None);
                    }
                    tables(&mut frames, &mut memory).put_table(Mfn(root)).unwrap();
                    prop_assert_eq!(frames.infos(), &before[..]);
                }
            }
        }
    }

    #[test]
    fn the_property_test_sees_successful_promotions() {
        promote_then_release_is_exact();
        let promoted = PROMOTED.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("promoted {promoted}");
        assert!(
            promoted > 20,
            "only {promoted} of the random table sets were valid"
        );
    }
}
