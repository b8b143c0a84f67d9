//! The check every guest page-table entry passes before hardware may use it (issue 15
//! point 2; pv64-abi.md §5.2-§5.5). Pure: it reads the frame-ownership table and returns a
//! verdict, and the caller takes the references the verdict names and writes the entry.
//!
//! The rules, as implemented:
//!
//! * L4 slots 256-271 are the hypervisor's ([`is_guest_l4_slot`]): no guest entry is ever
//!   accepted there; the nucleus copies its own entries in.
//! * A non-present entry is stored as given (guests keep swap entries there), unless its
//!   address bits name managed RAM: such an entry could feed L1TF speculation, so it is
//!   refused. Linux inverts the address of non-present entries, so it never trips this.
//! * A present entry must name a frame the domain owns, or one shared with it (its
//!   shared_info, grant frames); anything else in RAM is `-EINVAL`, anything outside RAM
//!   (MMIO, holes) `-EPERM`. Address bits at or above the CPU's physical-address width are
//!   reserved.
//! * L1: no PWT, PCD or PAT (no cache-attribute games), no bit 62 (Xen's grant marker).
//!   A writable mapping needs the target to take type *writable*, which a page-table or
//!   descriptor frame cannot (`-EBUSY`). U is forced on (the guest kernel runs at CPL3); a
//!   guest-kernel page (guest U=0) is marked with bit 52 (`_PAGE_GUEST_KERNEL`). G is always
//!   stripped: the nucleus switches between guests and servers without flushing global
//!   translations, so a global guest mapping could outlive its address space (stricter
//!   than Xen, which forces G on user pages and only warns about kernel ones).
//! * L2-L4: no PS (no superpages), no G, PWT or PCD; U forced (and A at L4). The target must
//!   be one of the domain's own frames (a shared frame never becomes a table), not the table
//!   itself (no linear self-maps, §5.5), and able to take type L(n-1).

use bitflags::bitflags;
use xen_abi::layout::HYPERVISOR_L4_SLOTS;
use xen_abi::{Errno, Mfn};

use crate::frame_owner::{DomainId, FrameInfo, FrameTable, Owner, PageType, TableLevel};

/// Bits 51:12: the frame address.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const U: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
/// PAT in an L1 entry, PS above.
const BIT7: u64 = 1 << 7;
const G: u64 = 1 << 8;
/// Xen's grant-mapping marker in L1 entries.
const GNTTAB: u64 = 1 << 62;
/// Marks an L1 entry the guest made without U: a guest-kernel page.
pub const GUEST_KERNEL: u64 = 1 << 52;

/// True for the L4 slots a guest owns (all but the hypervisor's 256-271).
pub fn is_guest_l4_slot(slot: usize) -> bool {
    slot < 512 && !HYPERVISOR_L4_SLOTS.contains(&slot)
}

/// Writes the hypervisor's slots 256-271 of `nucleus_l4` into a guest L4 (raw entries),
/// leaving every guest slot as it is. Done whenever a frame becomes an L4.
pub fn copy_hypervisor_slots(guest_l4: &mut [u64; 512], nucleus_l4: &[u64; 512]) {
    guest_l4[HYPERVISOR_L4_SLOTS].copy_from_slice(&nucleus_l4[HYPERVISOR_L4_SLOTS]);
}

bitflags! {
    /// What the check changed in an accepted entry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Adjustments: u8 {
        /// U was added.
        const FORCED_USER = 1 << 0;
        /// Bit 52 was added: a guest-kernel page.
        const MARKED_GUEST_KERNEL = 1 << 1;
        /// G was cleared.
        const STRIPPED_GLOBAL = 1 << 2;
        /// A was added (L4).
        const FORCED_ACCESSED = 1 << 3;
    }
}

/// The references the caller must take before writing the entry, on the frame it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Non-present: nothing.
    Nothing,
    /// A read-only mapping: a general reference.
    Reference(Mfn),
    /// A type reference: writable for an RW L1 entry, L(n-1) for an Ln entry.
    Type(Mfn, PageType),
}

/// An entry that may be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The value to write (the guest's, with the [`Adjustments`] applied).
    pub entry: u64,
    pub needs: Needs,
    pub adjustments: Adjustments,
}

/// Why an entry was refused; [`Refused::errno`] is what the hypercall returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// L4 slot 256-271.
    HypervisorSlot { slot: usize },
    /// A non-present entry whose address names managed RAM (L1TF).
    NonPresentNamesRam { mfn: Mfn },
    /// Address bits at or above the physical-address width.
    ReservedBits { entry: u64 },
    /// Flags this level does not allow (the offending bits).
    ForbiddenFlags { bits: u64 },
    /// The frame is not RAM the nucleus manages.
    NotRam { mfn: Mfn },
    /// The frame belongs to someone else.
    NotOwned { mfn: Mfn, owner: Owner },
    /// A writable mapping of a page-table or descriptor frame.
    ProtectedFrameWritable { mfn: Mfn, has: PageType },
    /// An Ln entry naming a frame shared with the guest (not its own).
    SharedFrameAsTable { mfn: Mfn },
    /// An Ln entry naming the table it is written into.
    LinearMapping { mfn: Mfn },
    /// An Ln entry naming a frame in use as something other than an L(n-1) table.
    TypeConflict {
        mfn: Mfn,
        has: PageType,
        wanted: PageType,
    },
}

impl Refused {
    /// The errno Xen gives for the same refusal (pv64-abi.md §4.2, §4.7, §5.1, §5.3).
    pub const fn errno(&self) -> Errno {
        match self {
            Self::NotRam { .. } => Errno::Eperm,
            Self::ProtectedFrameWritable { .. } => Errno::Ebusy,
            Self::HypervisorSlot { .. }
            | Self::NonPresentNamesRam { .. }
            | Self::ReservedBits { .. }
            | Self::ForbiddenFlags { .. }
            | Self::NotOwned { .. }
            | Self::SharedFrameAsTable { .. }
            | Self::LinearMapping { .. }
            | Self::TypeConflict { .. } => Errno::Einval,
        }
    }
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::HypervisorSlot { slot } => write!(f, "L4 slot {slot} is the hypervisor's"),
            Self::NonPresentNamesRam { mfn } => {
                write!(f, "non-present entry names RAM ({mfn})")
            }
            Self::ReservedBits { entry } => write!(f, "entry {entry:#x} sets reserved bits"),
            Self::ForbiddenFlags { bits } => write!(f, "flags {bits:#x} not allowed here"),
            Self::NotRam { mfn } => write!(f, "{mfn} is not RAM"),
            Self::NotOwned { mfn, owner } => write!(f, "{mfn} is not the guest's ({owner:?})"),
            Self::ProtectedFrameWritable { mfn, has } => {
                write!(f, "{mfn} is a {has:?} frame and cannot be mapped writable")
            }
            Self::SharedFrameAsTable { mfn } => {
                write!(f, "{mfn} is a shared frame and cannot be a page table")
            }
            Self::LinearMapping { mfn } => write!(f, "{mfn} would map its own table"),
            Self::TypeConflict { mfn, has, wanted } => {
                write!(f, "{mfn} is {has:?}, not usable as {wanted:?}")
            }
        }
    }
}

/// Where an entry is being written.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub domain: DomainId,
    pub level: TableLevel,
    /// The table frame the entry goes into.
    pub table: Mfn,
    /// Its index in that table (0-511).
    pub index: usize,
}

/// CPU facts the check depends on.
#[derive(Clone, Copy, Debug)]
pub struct CpuLimits {
    /// MAXPHYADDR: address bits at or above it are reserved.
    pub phys_addr_bits: u8,
}

/// Checks `raw` for `slot`. Reads `frames`, changes nothing.
pub fn check<S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>>(
    frames: &FrameTable<S>,
    cpu: CpuLimits,
    slot: Slot,
    raw: u64,
) -> Result<Accepted, Refused> {
    if slot.level == TableLevel::L4 && !is_guest_l4_slot(slot.index) {
        return Err(Refused::HypervisorSlot { slot: slot.index });
    }
    let mfn = Mfn((raw & ADDR_MASK) >> 12);
    if raw & P == 0 {
        if mfn.0 != 0 && frames.info(mfn).is_some() {
            return Err(Refused::NonPresentNamesRam { mfn });
        }
        return Ok(Accepted {
            entry: raw,
            needs: Needs::Nothing,
            adjustments: Adjustments::empty(),
        });
    }
    let width = u32::from(cpu.phys_addr_bits.clamp(12, 52));
    if (raw & ADDR_MASK) >> width != 0 {
        return Err(Refused::ReservedBits { entry: raw });
    }
    let forbidden = match slot.level {
        TableLevel::L1 => PWT | PCD | BIT7 | GNTTAB,
        _ => PWT | PCD | BIT7 | G,
    };
    if raw & forbidden != 0 {
        return Err(Refused::ForbiddenFlags {
            bits: raw & forbidden,
        });
    }
    let info = frames.info(mfn).ok_or(Refused::NotRam { mfn })?;
    let owner = info.owner();
    let shared = match owner {
        Owner::Domain(d) if d == slot.domain => false,
        Owner::SharedWith(d) if d == slot.domain => true,
        _ => return Err(Refused::NotOwned { mfn, owner }),
    };
    let has = info.current_type();
    let mut entry = raw;
    let mut adjustments = Adjustments::empty();
    let needs = match slot.level.below() {
        None => {
            if raw & U == 0 {
                entry |= U | GUEST_KERNEL;
                adjustments |= Adjustments::FORCED_USER | Adjustments::MARKED_GUEST_KERNEL;
            }
            if raw & G != 0 {
                entry &= !G;
                adjustments |= Adjustments::STRIPPED_GLOBAL;
            }
            if raw & RW == 0 {
                Needs::Reference(mfn)
            } else if has.is_protected() {
                return Err(Refused::ProtectedFrameWritable { mfn, has });
            } else {
                Needs::Type(mfn, PageType::Writable)
            }
        }
        Some(below) => {
            if shared {
                return Err(Refused::SharedFrameAsTable { mfn });
            }
            if mfn == slot.table {
                return Err(Refused::LinearMapping { mfn });
            }
            let wanted = PageType::PageTable(below);
            if has != PageType::None && has != wanted {
                return Err(Refused::TypeConflict { mfn, has, wanted });
            }
            if raw & U == 0 {
                entry |= U;
                adjustments |= Adjustments::FORCED_USER;
            }
            if slot.level == TableLevel::L4 && raw & A == 0 {
                entry |= A;
                adjustments |= Adjustments::FORCED_ACCESSED;
            }
            Needs::Type(mfn, wanted)
        }
    };
    Ok(Accepted {
        entry,
        needs,
        adjustments,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame_owner::FrameInfo;

    const GUEST: DomainId = DomainId(1);
    const OTHER: DomainId = DomainId(2);
    const CPU: CpuLimits = CpuLimits { phys_addr_bits: 39 };

    /// Frames 0x100..0x120: 0x100-0x10f the guest's, 0x110 shared with it, 0x111 the other
    /// domain's, 0x112 nobody's; 0x101 is an L1 table, 0x102 an L2, 0x103 a descriptor
    /// page, 0x104 mapped writable.
    fn frames() -> FrameTable<std::vec::Vec<FrameInfo>> {
        let mut t = FrameTable::new(Mfn(0x100), std::vec![FrameInfo::FREE; 0x20]);
        for i in 0..0x10 {
            t.assign(Mfn(0x100 + i), GUEST).unwrap();
        }
        t.share(Mfn(0x110), GUEST).unwrap();
        t.assign(Mfn(0x111), OTHER).unwrap();
        t.get_type(Mfn(0x101), GUEST, PageType::PageTable(TableLevel::L1))
            .unwrap();
        t.get_type(Mfn(0x102), GUEST, PageType::PageTable(TableLevel::L2))
            .unwrap();
        t.get_type(Mfn(0x103), GUEST, PageType::SegDesc).unwrap();
        t.get_type(Mfn(0x104), GUEST, PageType::Writable).unwrap();
        t
    }

    fn at(level: TableLevel, index: usize) -> Slot {
        Slot {
            domain: GUEST,
            level,
            table: Mfn(0x10f),
            index,
        }
    }

    fn l1(raw: u64) -> Result<Accepted, Refused> {
        check(&frames(), CPU, at(TableLevel::L1, 0), raw)
    }

    #[test]
    fn l1_kernel_and_user_pages() {
        // Kernel page, RW: U and bit 52 added; needs a writable type.
        assert_eq!(
            l1(0x105_000 | 0x23),
            Ok(Accepted {
                entry: GUEST_KERNEL | 0x105_000 | 0x27,
                needs: Needs::Type(Mfn(0x105), PageType::Writable),
                adjustments: Adjustments::FORCED_USER | Adjustments::MARKED_GUEST_KERNEL,
            })
        );
        // User page, read-only, NX, with G and AVAIL bits: G goes, the rest stays.
        let raw = (1 << 63) | (0x7 << 9) | 0x106_000 | G | 0x25;
        assert_eq!(
            l1(raw),
            Ok(Accepted {
                entry: raw & !G,
                needs: Needs::Reference(Mfn(0x106)),
                adjustments: Adjustments::STRIPPED_GLOBAL,
            })
        );
        // The shared frame (shared_info) may be mapped RW.
        assert_eq!(
            l1(0x110_000 | 0x27).map(|a| a.needs),
            Ok(Needs::Type(Mfn(0x110), PageType::Writable))
        );
        // An already-writable frame, again RW.
        assert!(l1(0x104_000 | 0x27).is_ok());
    }

    #[test]
    fn l1_refusals_and_their_errnos() {
        let cases = [
            (
                0x101_000 | 0x27,
                Refused::ProtectedFrameWritable {
                    mfn: Mfn(0x101),
                    has: PageType::PageTable(TableLevel::L1),
                },
                Errno::Ebusy,
            ),
            (
                0x102_000 | 0x23,
                Refused::ProtectedFrameWritable {
                    mfn: Mfn(0x102),
                    has: PageType::PageTable(TableLevel::L2),
                },
                Errno::Ebusy,
            ),
            (
                0x103_000 | 0x23,
                Refused::ProtectedFrameWritable {
                    mfn: Mfn(0x103),
                    has: PageType::SegDesc,
                },
                Errno::Ebusy,
            ),
            (
                0x111_000 | 0x25,
                Refused::NotOwned {
                    mfn: Mfn(0x111),
                    owner: Owner::Domain(OTHER),
                },
                Errno::Einval,
            ),
            (
                0x112_000 | 0x25,
                Refused::NotOwned {
                    mfn: Mfn(0x112),
                    owner: Owner::Nobody,
                },
                Errno::Einval,
            ),
            (
                0xfee0_0000 | 0x25,
                Refused::NotRam { mfn: Mfn(0xfee00) },
                Errno::Eperm,
            ),
            (
                0x105_000 | PWT | 1,
                Refused::ForbiddenFlags { bits: PWT },
                Errno::Einval,
            ),
            (
                0x105_000 | PCD | 1,
                Refused::ForbiddenFlags { bits: PCD },
                Errno::Einval,
            ),
            (
                0x105_000 | BIT7 | 1,
                Refused::ForbiddenFlags { bits: BIT7 },
                Errno::Einval,
            ),
            (
                0x105_000 | GNTTAB | 1,
                Refused::ForbiddenFlags { bits: GNTTAB },
                Errno::Einval,
            ),
            (
                (1 << 39) | 0x105_000 | 1,
                Refused::ReservedBits {
                    entry: (1 << 39) | 0x105_000 | 1,
                },
                Errno::Einval,
            ),
            (
                0x105_000,
                Refused::NonPresentNamesRam { mfn: Mfn(0x105) },
                Errno::Einval,
            ),
        ];
        for (raw, refused, errno) in cases {
            assert_eq!(l1(raw), Err(refused), "{raw:#x}");
            assert_eq!(refused.errno(), errno, "{refused}");
        }
        // Read-only mappings of page tables and descriptor pages are fine.
        assert_eq!(
            l1(0x101_000 | 0x21).map(|a| a.needs),
            Ok(Needs::Reference(Mfn(0x101)))
        );
        assert_eq!(
            l1(0x103_000 | 0x25).map(|a| a.needs),
            Ok(Needs::Reference(Mfn(0x103)))
        );
    }

    #[test]
    fn non_present_entries() {
        // Empty, a swap-style entry with bits but no address, and an inverted (high) address.
        for raw in [0, 0x7fe, 0x000f_ffff_ffff_f000 | 0x40] {
            assert_eq!(
                l1(raw),
                Ok(Accepted {
                    entry: raw,
                    needs: Needs::Nothing,
                    adjustments: Adjustments::empty()
                })
            );
        }
    }

    #[test]
    fn upper_levels() {
        let t = frames();
        // An L2 entry to the L1 table 0x101: U forced.
        assert_eq!(
            check(&t, CPU, at(TableLevel::L2, 3), 0x101_000 | 0x63),
            Ok(Accepted {
                entry: 0x101_000 | 0x67,
                needs: Needs::Type(Mfn(0x101), PageType::PageTable(TableLevel::L1)),
                adjustments: Adjustments::FORCED_USER,
            })
        );
        // An L3 entry to an untyped frame: it will become an L2 (validated then).
        assert_eq!(
            check(&t, CPU, at(TableLevel::L3, 0), 0x105_000 | 0x67).map(|a| a.needs),
            Ok(Needs::Type(Mfn(0x105), PageType::PageTable(TableLevel::L2)))
        );
        // L4: A forced too; the entry pointing at the L2 table 0x102 as an L3 is a conflict.
        assert_eq!(
            check(&t, CPU, at(TableLevel::L4, 511), 0x106_000 | 0x07)
                .map(|a| (a.entry, a.adjustments)),
            Ok((0x106_000 | 0x27, Adjustments::FORCED_ACCESSED))
        );
        let refusals = [
            (
                at(TableLevel::L4, 1),
                0x102_000 | 0x67,
                Refused::TypeConflict {
                    mfn: Mfn(0x102),
                    has: PageType::PageTable(TableLevel::L2),
                    wanted: PageType::PageTable(TableLevel::L3),
                },
            ),
            (
                at(TableLevel::L2, 0),
                0x104_000 | 0x67,
                Refused::TypeConflict {
                    mfn: Mfn(0x104),
                    has: PageType::Writable,
                    wanted: PageType::PageTable(TableLevel::L1),
                },
            ),
            (
                at(TableLevel::L2, 0),
                0x103_000 | 0x67,
                Refused::TypeConflict {
                    mfn: Mfn(0x103),
                    has: PageType::SegDesc,
                    wanted: PageType::PageTable(TableLevel::L1),
                },
            ),
            (
                at(TableLevel::L2, 0),
                0x105_000 | BIT7 | 0x67,
                Refused::ForbiddenFlags { bits: BIT7 },
            ),
            (
                at(TableLevel::L3, 0),
                0x105_000 | G | 0x67,
                Refused::ForbiddenFlags { bits: G },
            ),
            (
                at(TableLevel::L4, 0),
                0x105_000 | PCD | 0x67,
                Refused::ForbiddenFlags { bits: PCD },
            ),
            (
                at(TableLevel::L2, 0),
                0x110_000 | 0x67,
                Refused::SharedFrameAsTable { mfn: Mfn(0x110) },
            ),
            (
                at(TableLevel::L2, 0),
                0x10f_000 | 0x67,
                Refused::LinearMapping { mfn: Mfn(0x10f) },
            ),
            (
                at(TableLevel::L3, 0),
                0x111_000 | 0x67,
                Refused::NotOwned {
                    mfn: Mfn(0x111),
                    owner: Owner::Domain(OTHER),
                },
            ),
        ];
        for (slot, raw, refused) in refusals {
            assert_eq!(check(&t, CPU, slot, raw), Err(refused), "{raw:#x}");
            assert_eq!(refused.errno(), Errno::Einval);
        }
    }

    #[test]
    fn hypervisor_slots_are_untouchable() {
        let t = frames();
        for index in [256, 260, 271] {
            for raw in [0, 0x105_000 | 0x67] {
                let refused = Refused::HypervisorSlot { slot: index };
                assert_eq!(check(&t, CPU, at(TableLevel::L4, index), raw), Err(refused));
                assert_eq!(refused.errno(), Errno::Einval);
            }
        }
        assert!(check(&t, CPU, at(TableLevel::L4, 255), 0).is_ok());
        assert!(check(&t, CPU, at(TableLevel::L4, 272), 0).is_ok());
        // Slot 256 of an L1 is just an entry.
        assert!(check(&t, CPU, at(TableLevel::L1, 256), 0).is_ok());
        assert!(!is_guest_l4_slot(512));
        assert_eq!((0..512).filter(|&s| !is_guest_l4_slot(s)).count(), 16);
    }

    #[test]
    fn hypervisor_slots_are_copied_and_nothing_else() {
        let nucleus: [u64; 512] = core::array::from_fn(|i| (0x1000 * i as u64) | 3);
        let mut guest = [0x55u64; 512];
        copy_hypervisor_slots(&mut guest, &nucleus);
        for (i, &e) in guest.iter().enumerate() {
            let expected = if (256..272).contains(&i) {
                nucleus[i]
            } else {
                0x55
            };
            assert_eq!(e, expected, "slot {i}");
        }
    }

    fn level() -> impl Strategy<Value = TableLevel> {
        prop_oneof![
            Just(TableLevel::L1),
            Just(TableLevel::L2),
            Just(TableLevel::L3),
            Just(TableLevel::L4),
        ]
    }

    proptest! {
        #[test]
        fn accepted_entries_obey_the_rules(
            level in level(),
            index in 0usize..512,
            frame in 0xf0u64..0x130,
            flags in any::<u64>(),
            phys_addr_bits in 32u8..=52,
        ) {
            let t = frames();
            let raw = (flags & !ADDR_MASK) | (frame << 12);
            let slot = at(level, index);
            let verdict = check(&t, CpuLimits { phys_addr_bits }, slot, raw);
            let Ok(accepted) = verdict else { return Ok(()); };
            prop_assert!(level != TableLevel::L4 || is_guest_l4_slot(index));
            // Address bits never change.
            prop_assert_eq!(accepted.entry & ADDR_MASK, raw & ADDR_MASK);
            if raw & P == 0 {
                prop_assert_eq!(accepted.entry, raw);
                prop_assert_eq!(accepted.needs, Needs::Nothing);
                return Ok(());
            }
            let mfn = Mfn(frame);
            let owner = t.owner(mfn);
            prop_assert!(matches!(owner, Some(Owner::Domain(GUEST)) | Some(Owner::SharedWith(GUEST))));
            let e = accepted.entry;
            prop_assert!(e & U != 0);
            prop_assert_eq!(e & (PWT | PCD | BIT7 | G), 0);
            let has = t.info(mfn).unwrap().current_type();
            match level {
                TableLevel::L1 => {
                    prop_assert_eq!(e & GNTTAB, 0);
                    if e & RW != 0 {
                        prop_assert!(!has.is_protected(), "writable mapping of a {:?}", has);
                        prop_assert_eq!(accepted.needs, Needs::Type(mfn, PageType::Writable));
                    } else {
                        prop_assert_eq!(accepted.needs, Needs::Reference(mfn));
                    }
                }
                upper => {
                    prop_assert_eq!(owner, Some(Owner::Domain(GUEST)));
                    prop_assert!(mfn != slot.table);
                    let wanted = PageType::PageTable(upper.below().unwrap());
                    prop_assert!(has == PageType::None || has == wanted);
                    prop_assert_eq!(accepted.needs, Needs::Type(mfn, wanted));
                }
            }
        }
    }
}
