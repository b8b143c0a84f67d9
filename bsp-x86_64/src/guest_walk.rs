//! Finding the frame behind a guest virtual address, with the guest's own rights, for the
//! nucleus' copy to or from guest memory (pv64-abi.md, "Conventions": reading outside the
//! guest's own mappings is never allowed).
//!
//! The walk uses the guest's tables as the CPU would at CPL 3, and refuses more: addresses
//! in the hypervisor's window (whose L4 slots hold the nucleus' own entries) and
//! non-canonical ones are refused before any table is read; a write needs RW at every level;
//! a superpage is refused (validation never lets one in); and the frame found must still be
//! the domain's own or shared with it. A refusal is `-EFAULT` for the hypercall.

use xen_abi::layout::in_hypervisor_window;
use xen_abi::{Errno, Mfn};

use crate::frame_owner::{DomainId, FrameInfo, FrameTable};
use crate::guest_tables::TableMemory;

/// What the copy will do at the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why the walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// Not canonical, or in the hypervisor's window.
    NotGuestAddress,
    /// No present entry at this level (4 = L4 … 1 = L1).
    NotPresent { level: u8 },
    /// A write through an entry without RW at this level.
    ReadOnly { level: u8 },
    /// A large page (PS) at this level.
    LargePage { level: u8 },
    /// The frame reached is not the domain's.
    NotOwned(Mfn),
}

impl WalkFault {
    /// Every walk failure is a bad guest pointer.
    pub const fn errno(&self) -> Errno {
        Errno::Efault
    }
}

/// Where a guest address lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPage {
    pub mfn: Mfn,
    /// Offset of the address in that frame.
    pub offset: u16,
}

/// Walks the tables at `l4` for `va`.
pub fn walk<S, M>(
    frames: &FrameTable<S>,
    memory: &M,
    domain: DomainId,
    l4: Mfn,
    va: u64,
    access: Access,
) -> Result<GuestPage, WalkFault>
where
    S: AsRef<[FrameInfo]> + AsMut<[FrameInfo]>,
    M: TableMemory,
{
    const PRESENT: u64 = 1;
    const RW: u64 = 2;
    const PS: u64 = 1 << 7;
    if ((va << 16) as i64 >> 16) as u64 != va || in_hypervisor_window(va) {
        return Err(WalkFault::NotGuestAddress);
    }
    let mut table = l4;
    for level in (1..=4u8).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry = memory.read(table, ((va >> shift) & 511) as usize);
        if entry & PRESENT == 0 {
            return Err(WalkFault::NotPresent { level });
        }
        if access == Access::Write && entry & RW == 0 {
            return Err(WalkFault::ReadOnly { level });
        }
        if level > 1 && entry & PS != 0 {
            return Err(WalkFault::LargePage { level });
        }
        table = Mfn((entry & 0x000f_ffff_ffff_f000) >> 12);
    }
    frames
        .check_owner(table, domain)
        .map_err(|_| WalkFault::NotOwned(table))?;
    Ok(GuestPage {
        mfn: table,
        offset: (va & 0xfff) as u16,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GUEST: DomainId = DomainId(4);

    #[derive(Default)]
    struct Memory(HashMap<(u64, usize), u64>);

    impl TableMemory for Memory {
        fn read(&self, table: Mfn, index: usize) -> u64 {
            self.0.get(&(table.0, index)).copied().unwrap_or(0)
        }
        fn write(&mut self, table: Mfn, index: usize, entry: u64) {
            self.0.insert((table.0, index), entry);
        }
        fn hypervisor_l4_entry(&self, _: usize) -> u64 {
            0
        }
    }

    /// L4 0x300, L3 0x301, L2 0x302, L1 0x303; VA 0x40_0000 → 0x310 RW, 0x40_1000 → 0x311
    /// read-only, 0x40_2000 → 0x320 (not the guest's). L4 slot 256 holds a nucleus entry.
    fn setup() -> (FrameTable<std::vec::Vec<FrameInfo>>, Memory) {
        let mut frames = FrameTable::new(Mfn(0x300), std::vec![FrameInfo::FREE; 0x30]);
        for i in 0..0x20 {
            frames.assign(Mfn(0x300 + i), GUEST).unwrap();
        }
        let mut m = Memory::default();
        m.write(Mfn(0x300), 0, 0x301_067);
        m.write(Mfn(0x301), 0, 0x302_067);
        m.write(Mfn(0x302), 2, 0x303_067);
        m.write(Mfn(0x303), 0, 0x310_027);
        m.write(Mfn(0x303), 1, 0x311_025);
        m.write(Mfn(0x303), 2, 0x320_027);
        m.write(Mfn(0x302), 3, 0x400_0e7); // a 2 MiB page at 0x60_0000
        m.write(Mfn(0x300), 256, 0x0100_0063);
        (frames, m)
    }

    #[test]
    fn walks_with_the_guests_rights() {
        let (frames, m) = setup();
        let go = |va, access| walk(&frames, &m, GUEST, Mfn(0x300), va, access);
        assert_eq!(
            go(0x40_0123, Access::Write),
            Ok(GuestPage {
                mfn: Mfn(0x310),
                offset: 0x123
            })
        );
        assert_eq!(
            go(0x40_1fff, Access::Read),
            Ok(GuestPage {
                mfn: Mfn(0x311),
                offset: 0xfff
            })
        );
        assert_eq!(
            go(0x40_1000, Access::Write),
            Err(WalkFault::ReadOnly { level: 1 })
        );
        assert_eq!(
            go(0x40_2000, Access::Read),
            Err(WalkFault::NotOwned(Mfn(0x320)))
        );
        assert_eq!(
            go(0x40_3000, Access::Read),
            Err(WalkFault::NotPresent { level: 1 })
        );
        assert_eq!(
            go(0x60_0000, Access::Read),
            Err(WalkFault::LargePage { level: 2 })
        );
        assert_eq!(
            go(0x8000_0000, Access::Read),
            Err(WalkFault::NotPresent { level: 3 })
        );
        assert_eq!(
            go(0x7f00_0000_0000, Access::Read),
            Err(WalkFault::NotPresent { level: 4 })
        );
        // The nucleus' own slot is never walked, whatever it holds.
        assert_eq!(
            go(0xffff_8000_0000_0000, Access::Read),
            Err(WalkFault::NotGuestAddress)
        );
        assert_eq!(
            go(0xffff_87ff_ffff_ffff, Access::Read),
            Err(WalkFault::NotGuestAddress)
        );
        assert_eq!(
            go(0x0000_8000_0000_0000, Access::Read),
            Err(WalkFault::NotGuestAddress)
        );
        assert_eq!(WalkFault::NotGuestAddress.errno(), Errno::Efault);
        // Another domain walking the same tables reaches nothing of its own.
        assert_eq!(
            walk(
                &frames,
                &m,
                DomainId(5),
                Mfn(0x300),
                0x40_0000,
                Access::Read
            ),
            Err(WalkFault::NotOwned(Mfn(0x310)))
        );
    }
}
