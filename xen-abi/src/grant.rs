//! `grant_table_op` (hypercall 20, pv64-abi.md §4.9): the v1 grant table subset.

abi_enum! {
    /// `grant_table_op` commands.
    pub enum GnttabOpCmd: u32 {
        MapGrantRef = 0,
        UnmapGrantRef = 1,
        SetupTable = 2,
        DumpTable = 3,
        Transfer = 4,
        Copy = 5,
        QuerySize = 6,
        UnmapAndReplace = 7,
        /// Answered `-ENOSYS`: guests stay on v1.
        SetVersion = 8,
        GetStatusFrames = 9,
        GetVersion = 10,
    }
}

/// Grant status codes (`GNTST_*`), written into the `status` fields.
pub mod status {
    pub const OKAY: i16 = 0;
    pub const GENERAL_ERROR: i16 = -1;
    pub const BAD_DOMAIN: i16 = -2;
}

/// `struct gnttab_setup_table` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub _pad0: u16,
    pub nr_frames: u32,
    /// Out: a [`status`] code.
    pub status: i16,
    pub _pad1: [u8; 6],
    /// Guest pointer to `nr_frames` u64 frame numbers (out).
    pub frame_list: u64,
}

/// `struct gnttab_query_size` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub _pad0: u16,
    /// Out.
    pub nr_frames: u32,
    /// Out.
    pub max_nr_frames: u32,
    /// Out.
    pub status: i16,
    pub _pad1: u16,
}

/// A v1 grant entry (8 bytes): what a guest writes into its grant frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

// pv64-abi.md §4.9.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<GnttabSetupTable>() == 24);
    assert!(offset_of!(GnttabSetupTable, nr_frames) == 4);
    assert!(offset_of!(GnttabSetupTable, status) == 8);
    assert!(offset_of!(GnttabSetupTable, frame_list) == 16);
    assert!(size_of::<GnttabQuerySize>() == 16);
    assert!(offset_of!(GnttabQuerySize, nr_frames) == 4);
    assert!(offset_of!(GnttabQuerySize, max_nr_frames) == 8);
    assert!(offset_of!(GnttabQuerySize, status) == 12);
    assert!(size_of::<GrantEntryV1>() == 8);
    assert!(offset_of!(GrantEntryV1, frame) == 4);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (index, cmd) in GnttabOpCmd::ALL.iter().enumerate() {
            assert_eq!(cmd.raw() as usize, index);
        }
        assert_eq!(GnttabOpCmd::SetupTable.raw(), 2);
        assert_eq!(status::BAD_DOMAIN, -2);
    }
}
