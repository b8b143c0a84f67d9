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
    pub const BAD_VIRT_ADDR: i16 = -3;
}

/// `struct gnttab_set_version` / `gnttab_get_version`'s version field (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetVersion {
    pub version: u32,
}

/// `struct gnttab_get_version` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetVersion {
    pub dom: u16,
    pub _pad0: u16,
    /// Out.
    pub version: u32,
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
    assert!(size_of::<GnttabSetVersion>() == 4);
    assert!(size_of::<GnttabGetVersion>() == 8);
    assert!(offset_of!(GnttabGetVersion, version) == 4);
};

use crate::wire;

impl GnttabSetupTable {
    pub const SIZE: usize = 24;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            dom: wire::get_u16(bytes, offset_of!(Self, dom)),
            nr_frames: wire::get_u32(bytes, offset_of!(Self, nr_frames)),
            status: wire::get_u16(bytes, offset_of!(Self, status)) as i16,
            frame_list: wire::get_u64(bytes, offset_of!(Self, frame_list)),
            ..Self::default()
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        wire::put_u16(&mut out, offset_of!(Self, dom), self.dom);
        wire::put_u32(&mut out, offset_of!(Self, nr_frames), self.nr_frames);
        wire::put_u16(&mut out, offset_of!(Self, status), self.status as u16);
        wire::put_u64(&mut out, offset_of!(Self, frame_list), self.frame_list);
        out
    }
}

impl GnttabQuerySize {
    pub const SIZE: usize = 16;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            dom: wire::get_u16(bytes, offset_of!(Self, dom)),
            nr_frames: wire::get_u32(bytes, offset_of!(Self, nr_frames)),
            max_nr_frames: wire::get_u32(bytes, offset_of!(Self, max_nr_frames)),
            status: wire::get_u16(bytes, offset_of!(Self, status)) as i16,
            ..Self::default()
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        wire::put_u16(&mut out, offset_of!(Self, dom), self.dom);
        wire::put_u32(&mut out, offset_of!(Self, nr_frames), self.nr_frames);
        wire::put_u32(
            &mut out,
            offset_of!(Self, max_nr_frames),
            self.max_nr_frames,
        );
        wire::put_u16(&mut out, offset_of!(Self, status), self.status as u16);
        out
    }
}

impl GnttabSetVersion {
    pub const SIZE: usize = 4;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            version: u32::from_le_bytes(*bytes),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.version.to_le_bytes()
    }
}

impl GnttabGetVersion {
    pub const SIZE: usize = 8;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            dom: wire::get_u16(bytes, offset_of!(Self, dom)),
            _pad0: 0,
            version: wire::get_u32(bytes, offset_of!(Self, version)),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0; Self::SIZE];
        wire::put_u16(&mut out, offset_of!(Self, dom), self.dom);
        wire::put_u32(&mut out, offset_of!(Self, version), self.version);
        out
    }
}

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

    #[test]
    fn codecs_round_trip() {
        let setup = GnttabSetupTable {
            dom: 0x7ff0,
            nr_frames: 2,
            status: status::BAD_VIRT_ADDR,
            frame_list: 0x5000,
            ..Default::default()
        };
        assert_eq!(GnttabSetupTable::from_bytes(&setup.to_bytes()), setup);
        let query = GnttabQuerySize {
            dom: 0x7ff0,
            nr_frames: 1,
            max_nr_frames: 4,
            status: status::OKAY,
            ..Default::default()
        };
        assert_eq!(query.to_bytes()[8], 4);
        assert_eq!(GnttabQuerySize::from_bytes(&query.to_bytes()), query);
        let get = GnttabGetVersion {
            dom: 0x7ff0,
            _pad0: 0,
            version: 1,
        };
        assert_eq!(GnttabGetVersion::from_bytes(&get.to_bytes()), get);
    }
}
