//! `memory_op` (hypercall 12, pv64-abi.md §4.19), `physdev_op` (33, §4.20) and `multicall`
//! (13, §4.21): the argument blocks a PV kernel passes at start of day.

abi_enum! {
    /// `memory_op` commands.
    pub enum MemoryOpCmd: u32 {
        IncreaseReservation = 0,
        DecreaseReservation = 1,
        /// The host's highest MFN, in `rax`.
        MaximumRamPage = 2,
        CurrentReservation = 3,
        MaximumReservation = 4,
        PopulatePhysmap = 6,
        /// `-ENOSYS` while no map is set: Linux then assumes its own.
        MemoryMap = 9,
        Exchange = 11,
        /// [`MachphysMapping`] at `arg`.
        MachphysMapping = 12,
    }
}

/// `struct xen_machphys_mapping` (24 bytes): where the read-only M2P is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachphysMapping {
    pub v_start: u64,
    pub v_end: u64,
    pub max_mfn: u64,
}

/// `struct xen_memory_map` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    /// In: room in `buffer`; out: entries written.
    pub nr_entries: u32,
    pub _pad: u32,
    /// Guest pointer to 20-byte packed e820 entries `{u64 addr, u64 size, u32 type}`.
    pub buffer: u64,
}

/// Bytes of one e820 entry in a [`MemoryMap`] buffer (packed).
pub const E820_ENTRY_BYTES: usize = 20;

abi_enum! {
    /// `physdev_op` commands a domU gets an answer other than `-ENOSYS` for.
    pub enum PhysdevOpCmd: u32 {
        IrqStatusQuery = 5,
        /// `{u32 iopl}`: the virtual IOPL, at most 3.
        SetIopl = 6,
        PirqEoiGmfnV2 = 28,
    }
}

/// `struct multicall_entry` (64 bytes): one hypercall of a batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    pub op: u64,
    /// Out: the entry's `rax`.
    pub result: u64,
    pub args: [u64; 6],
}

// pv64-abi.md §4.19-§4.21.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MachphysMapping>() == 24);
    assert!(offset_of!(MachphysMapping, max_mfn) == 16);
    assert!(size_of::<MemoryMap>() == 16);
    assert!(offset_of!(MemoryMap, buffer) == 8);
    assert!(size_of::<MulticallEntry>() == 64);
    assert!(offset_of!(MulticallEntry, result) == 8);
    assert!(offset_of!(MulticallEntry, args) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(MemoryOpCmd::MachphysMapping.raw(), 12);
        assert_eq!(MemoryOpCmd::MemoryMap.raw(), 9);
        assert_eq!(MemoryOpCmd::from_raw(5), None);
        assert_eq!(PhysdevOpCmd::SetIopl.raw(), 6);
    }
}
