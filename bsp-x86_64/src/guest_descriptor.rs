//! Guest segment descriptors (pv64-abi.md §5.6, issue 16 point 6): what a PV64 guest may put
//! in its GDT or LDT, and the frames that hold them. A descriptor frame takes type
//! [`PageType::SegDesc`], which no writable mapping can coexist with (I1), and is validated
//! whole before it counts as one: every descriptor passes [`check`], which also applies
//! Xen's fix-ups (code/data DPL raised to 3, call gates stored with DPL 0 and their DPL in
//! the target selector's RPL, so that any use traps to the hypervisor as `#GP(sel)`).
//!
//! Anything else a descriptor could be (a TSS, an LDT, an interrupt or trap gate) is
//! refused: with one of those the guest could reach CPL < 3. The hypervisor's own entries
//! (from [`xen_abi::layout::selector::FIRST_RESERVED_GDT_ENTRY`]) are never in a guest frame; the
//! caller refuses a GDT that would reach them.

use xen_abi::Mfn;

use crate::frame_owner::{Acquired, FrameInfo, OwnershipError, PageType};
use crate::guest_tables::{GuestTables, TableError, TableMemory};

/// Descriptors in one 4 KiB frame.
pub const PER_FRAME: usize = 512;
/// Xen's flat 64-bit kernel code selector, the one reserved selector a gate may name.
const FLAT_KERNEL_CS: u16 = 0xe033;

const PRESENT: u64 = 1 << 47;
const CODE_OR_DATA: u64 = 1 << 44;
const DPL_SHIFT: u32 = 45;
const DPL: u64 = 3 << DPL_SHIFT;
const TYPE_SHIFT: u32 = 40;
const TYPE: u64 = 0xf << TYPE_SHIFT;
const CALL_GATE: u64 = 0xc;
/// Bits 32-39: the IST/reserved byte of a 64-bit gate, which must be zero.
const GATE_RESERVED: u64 = 0xff << 32;

/// Why a descriptor was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorRefused {
    /// A system descriptor other than a call gate (TSS, LDT, interrupt or trap gate).
    SystemSegment { kind: u8 },
    /// A call gate whose target selector the guest may not name.
    GateSelector(u16),
    /// A call gate with its reserved byte set.
    GateReserved,
}

impl core::fmt::Display for DescriptorRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SystemSegment { kind } => write!(f, "system descriptor of type {kind:#x}"),
            Self::GateSelector(sel) => write!(f, "call gate to selector {sel:#x}"),
            Self::GateReserved => f.write_str("call gate with reserved bits set"),
        }
    }
}

/// A call gate may lead to the guest's own GDT entries, its LDT, or Xen's flat kernel CS.
const fn gate_target_ok(sel: u16) -> bool {
    let guest_gdt =
        sel >> 3 != 0 && (sel >> 3) < xen_abi::layout::selector::FIRST_RESERVED_GDT_ENTRY;
    guest_gdt || sel & 4 != 0 || sel == FLAT_KERNEL_CS
}

/// Checks one descriptor (8 bytes, little-endian) and returns it as it is to be stored.
pub const fn check(raw: u64) -> Result<u64, DescriptorRefused> {
    if raw & PRESENT == 0 {
        return Ok(raw);
    }
    if raw & CODE_OR_DATA != 0 {
        // Xen's fix-up rather than a refusal: a guest kernel runs at CPL 3, so DPL < 3
        // only makes the segment unusable to it; raising it keeps the guest working.
        return Ok(raw | DPL);
    }
    let kind = (raw & TYPE) >> TYPE_SHIFT;
    if kind == 0 {
        // The upper half of a 16-byte gate.
        return Ok(raw);
    }
    if kind != CALL_GATE {
        return Err(DescriptorRefused::SystemSegment { kind: kind as u8 });
    }
    let target = (raw >> 16) as u16;
    if !gate_target_ok(target) {
        return Err(DescriptorRefused::GateSelector(target));
    }
    if raw & GATE_RESERVED != 0 {
        return Err(DescriptorRefused::GateReserved);
    }
    let dpl = ((raw & DPL) >> DPL_SHIFT) as u16;
    let target = (target & !3) | dpl;
    Ok((raw & !DPL & !(0xffff << 16)) | (target as u64) << 16)
}

/// Why a descriptor operation failed; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorError {
    /// Descriptor `index` of frame `mfn` (or the update's descriptor) was refused.
    Refused {
        mfn: Mfn,
        index: usize,
        refused: DescriptorRefused,
    },
    /// An update address that is not 8-aligned.
    Misaligned(u64),
    /// The frame table refused (not the domain's, another type in force, a count).
    Ownership(OwnershipError),
}

impl DescriptorError {
    /// What the hypercall answers: Xen gives `-EINVAL` for every one of these.
    pub const fn errno(&self) -> xen_abi::Errno {
        xen_abi::Errno::Einval
    }
}

impl From<OwnershipError> for DescriptorError {
    fn from(error: OwnershipError) -> Self {
        Self::Ownership(error)
    }
}

impl From<TableError> for DescriptorError {
    fn from(error: TableError) -> Self {
        match error {
            TableError::Ownership(e) => Self::Ownership(e),
            // Table errors other than ownership do not arise on descriptor frames.
            _ => Self::Misaligned(0),
        }
    }
}

impl core::fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Refused {
                mfn,
                index,
                refused,
            } => write!(f, "{mfn} descriptor {index}: {refused}"),
            Self::Misaligned(at) => write!(f, "descriptor address {at:#x} is not 8-aligned"),
            Self::Ownership(error) => write!(f, "{error}"),
        }
    }
}

impl<S, M> GuestTables<'_, S, M>
where
    S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>,
    M: TableMemory,
{
    /// Takes a descriptor-page type reference on `mfn` (a GDT or LDT frame); the first one
    /// checks all 512 descriptors and stores their fix-ups. Refused while the frame is
    /// mapped writable or is a page table.
    pub fn get_descriptor_page(&mut self, mfn: Mfn) -> Result<(), DescriptorError> {
        let acquired = self.frames.get_type(mfn, self.domain, PageType::SegDesc)?;
        if acquired == Acquired::Existing {
            return Ok(());
        }
        // Check every descriptor first (nothing stored if one is refused), then store the
        // fix-ups; no 4 KiB copy on the stack (the nucleus' is 8 KiB).
        for index in 0..PER_FRAME {
            if let Err(refused) = check(self.memory.read(mfn, index)) {
                let _ = self.frames.put_type(mfn);
                return Err(DescriptorError::Refused {
                    mfn,
                    index,
                    refused,
                });
            }
        }
        for index in 0..PER_FRAME {
            let raw = self.memory.read(mfn, index);
            if let Ok(value) = check(raw)
                && value != raw
            {
                self.memory.write(mfn, index, value);
            }
        }
        self.frames.mark_validated(mfn)?;
        Ok(())
    }

    /// Drops a descriptor-page type reference taken by [`Self::get_descriptor_page`].
    pub fn put_descriptor_page(&mut self, mfn: Mfn) -> Result<(), DescriptorError> {
        let info = self.frames.info(mfn).ok_or(OwnershipError::NotRam(mfn))?;
        if info.current_type() != PageType::SegDesc {
            return Err(OwnershipError::CountMismatch(mfn).into());
        }
        self.frames.put_type(mfn)?;
        Ok(())
    }

    /// `update_descriptor`: the descriptor at machine address `maddr` becomes `raw` (checked
    /// and fixed up). The frame must be the domain's own and either a descriptor page or
    /// one that could be mapped writable (never a page table).
    pub fn update_descriptor(&mut self, maddr: u64, raw: u64) -> Result<(), DescriptorError> {
        if !maddr.is_multiple_of(8) {
            return Err(DescriptorError::Misaligned(maddr));
        }
        let mfn = Mfn(maddr >> 12);
        let index = ((maddr & 0xfff) >> 3) as usize;
        let value = check(raw).map_err(|refused| DescriptorError::Refused {
            mfn,
            index,
            refused,
        })?;
        let owner = self.frames.check_owner(mfn, self.domain)?;
        if !matches!(owner, crate::frame_owner::Owner::Domain(_)) {
            return Err(OwnershipError::NotOwner {
                mfn,
                domain: self.domain,
                owner,
            }
            .into());
        }
        let info = self.frames.info(mfn).ok_or(OwnershipError::NotRam(mfn))?;
        match info.current_type() {
            PageType::SegDesc | PageType::None | PageType::Writable => {}
            has => {
                return Err(OwnershipError::TypeConflict {
                    mfn,
                    has,
                    wanted: PageType::SegDesc,
                }
                .into());
            }
        }
        self.memory.write(mfn, index, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::frame_owner::{DomainId, FrameTable, TableLevel};
    use crate::guest_pte::CpuLimits;

    const GUEST: DomainId = DomainId(2);

    /// Flat 64-bit code, DPL 0 / DPL 3, and flat data DPL 3.
    const CODE64_DPL0: u64 = 0x00af_9a00_0000_ffff;
    const CODE64_DPL3: u64 = 0x00af_fa00_0000_ffff;
    const DATA_DPL3: u64 = 0x00cf_f200_0000_ffff;
    /// A present 64-bit TSS, an interrupt gate.
    const TSS: u64 = 0x0000_8900_0000_0067;
    const INTERRUPT_GATE: u64 = 0x0000_ee00_0008_0000;
    /// A call gate, DPL 3, to selector 0x0010 (guest GDT entry 2), offset 0x1234.
    const CALL_GATE_DPL3: u64 = 0x0000_ec00_0010_1234;

    #[derive(Default)]
    struct Memory(HashMap<u64, [u64; 512]>);

    impl TableMemory for Memory {
        fn read(&self, table: Mfn, index: usize) -> u64 {
            self.0.get(&table.0).map_or(0, |t| t[index])
        }
        fn write(&mut self, table: Mfn, index: usize, entry: u64) {
            self.0.entry(table.0).or_insert([0; 512])[index] = entry;
        }
        fn hypervisor_l4_entry(&self, _slot: usize) -> u64 {
            0
        }
    }

    type Frames = FrameTable<std::vec::Vec<FrameInfo>>;

    fn world() -> (Frames, Memory) {
        let mut frames = FrameTable::new(Mfn(0x100), std::vec![FrameInfo::FREE; 8]);
        for i in 0..6 {
            frames.assign(Mfn(0x100 + i), GUEST).unwrap();
        }
        frames.assign(Mfn(0x106), DomainId(7)).unwrap();
        frames.share(Mfn(0x107), GUEST).unwrap();
        (frames, Memory::default())
    }

    fn tables<'a>(
        frames: &'a mut Frames,
        memory: &'a mut Memory,
    ) -> GuestTables<'a, std::vec::Vec<FrameInfo>, Memory> {
        GuestTables {
            frames,
            memory,
            cpu: CpuLimits { phys_addr_bits: 40 },
            domain: GUEST,
        }
    }

    #[test]
    fn code_and_data_get_dpl_3_and_not_present_stays() {
        assert_eq!(check(CODE64_DPL0), Ok(CODE64_DPL3));
        assert_eq!(check(DATA_DPL3), Ok(DATA_DPL3));
        assert_eq!(check(0x1234), Ok(0x1234), "not present: anything");
        assert_eq!(check(0), Ok(0));
    }

    #[test]
    fn system_segments_are_refused_call_gates_stored_with_dpl_0() {
        assert_eq!(
            check(TSS),
            Err(DescriptorRefused::SystemSegment { kind: 9 })
        );
        assert_eq!(
            check(INTERRUPT_GATE),
            Err(DescriptorRefused::SystemSegment { kind: 0xe })
        );
        // DPL 3 moved into the target's RPL, the gate itself DPL 0.
        assert_eq!(check(CALL_GATE_DPL3), Ok(0x0000_8c00_0013_1234));
        // To the hypervisor's ring-0 code: refused; to Xen's flat kernel CS: allowed.
        assert_eq!(
            check(0x0000_ec00_e008_0000),
            Err(DescriptorRefused::GateSelector(0xe008))
        );
        assert_eq!(check(0x0000_ec00_e033_0000), Ok(0x0000_8c00_e033_0000));
        assert_eq!(
            check(0x0000_ec00_0000_0000),
            Err(DescriptorRefused::GateSelector(0)),
            "null target"
        );
        assert_eq!(
            check(CALL_GATE_DPL3 | 1 << 32),
            Err(DescriptorRefused::GateReserved)
        );
    }

    #[test]
    fn a_descriptor_page_is_validated_whole_and_fixed_up() {
        let (mut frames, mut memory) = world();
        memory.write(Mfn(0x100), 1, CODE64_DPL0);
        memory.write(Mfn(0x100), 4, CALL_GATE_DPL3);
        let mut t = tables(&mut frames, &mut memory);
        t.get_descriptor_page(Mfn(0x100)).unwrap();
        assert_eq!(t.memory.read(Mfn(0x100), 1), CODE64_DPL3);
        assert_eq!(t.memory.read(Mfn(0x100), 4), 0x0000_8c00_0013_1234);
        let info = t.frames.info(Mfn(0x100)).unwrap();
        assert_eq!(
            (info.page_type(), info.type_count()),
            (PageType::SegDesc, 1)
        );
        assert!(info.is_validated());
        // A second reference finds it validated; two puts release it.
        t.get_descriptor_page(Mfn(0x100)).unwrap();
        t.put_descriptor_page(Mfn(0x100)).unwrap();
        t.put_descriptor_page(Mfn(0x100)).unwrap();
        assert_eq!(t.frames.info(Mfn(0x100)).unwrap().type_count(), 0);
        assert!(t.put_descriptor_page(Mfn(0x100)).is_err());
    }

    #[test]
    fn a_bad_descriptor_refuses_the_page_and_changes_nothing() {
        let (mut frames, mut memory) = world();
        memory.write(Mfn(0x101), 1, CODE64_DPL0);
        memory.write(Mfn(0x101), 300, TSS);
        let mut t = tables(&mut frames, &mut memory);
        assert_eq!(
            t.get_descriptor_page(Mfn(0x101)),
            Err(DescriptorError::Refused {
                mfn: Mfn(0x101),
                index: 300,
                refused: DescriptorRefused::SystemSegment { kind: 9 }
            })
        );
        assert_eq!(
            t.memory.read(Mfn(0x101), 1),
            CODE64_DPL0,
            "no fix-up stored"
        );
        assert_eq!(t.frames.info(Mfn(0x101)).unwrap().type_count(), 0);
    }

    #[test]
    fn writable_tables_foreign_and_shared_frames_never_become_descriptor_pages() {
        let (mut frames, mut memory) = world();
        frames
            .get_type(Mfn(0x102), GUEST, PageType::Writable)
            .unwrap();
        frames
            .get_type(Mfn(0x103), GUEST, PageType::PageTable(TableLevel::L1))
            .unwrap();
        let mut t = tables(&mut frames, &mut memory);
        for mfn in [0x102, 0x103, 0x106, 0x107, 0x200] {
            assert!(t.get_descriptor_page(Mfn(mfn)).is_err(), "{mfn:#x}");
        }
        // And a descriptor page never becomes writable.
        t.get_descriptor_page(Mfn(0x104)).unwrap();
        assert!(
            t.frames
                .get_type(Mfn(0x104), GUEST, PageType::Writable)
                .is_err()
        );
    }

    #[test]
    fn update_descriptor_checks_the_value_the_alignment_and_the_frame() {
        let (mut frames, mut memory) = world();
        frames
            .get_type(Mfn(0x103), GUEST, PageType::PageTable(TableLevel::L1))
            .unwrap();
        let mut t = tables(&mut frames, &mut memory);
        t.get_descriptor_page(Mfn(0x100)).unwrap();
        t.update_descriptor(0x100_010, CODE64_DPL0).unwrap();
        assert_eq!(t.memory.read(Mfn(0x100), 2), CODE64_DPL3);
        t.update_descriptor(0x105_008, DATA_DPL3).unwrap();
        assert_eq!(t.memory.read(Mfn(0x105), 1), DATA_DPL3);
        assert_eq!(
            t.update_descriptor(0x100_004, DATA_DPL3),
            Err(DescriptorError::Misaligned(0x100_004))
        );
        assert!(matches!(
            t.update_descriptor(0x100_018, TSS),
            Err(DescriptorError::Refused { index: 3, .. })
        ));
        for maddr in [0x103_000, 0x106_000, 0x107_000, 0x300_000] {
            assert!(t.update_descriptor(maddr, DATA_DPL3).is_err(), "{maddr:#x}");
        }
        assert_eq!(
            t.memory.read(Mfn(0x103), 0),
            0,
            "the page table is untouched"
        );
    }
}
