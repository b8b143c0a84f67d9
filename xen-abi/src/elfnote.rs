//! The Xen ELF notes of a PV guest image (pv64-abi.md §1.2).
//!
//! A note is `{u32 namesz, u32 descsz, u32 type, name, pad to 4, desc, pad to 4}` (§1.1);
//! Xen's notes have the name `"Xen"` (namesz 4, counting the NUL).

/// The note name, with its NUL: what `namesz` bytes of a Xen note hold.
pub const NOTE_NAME: &[u8; 4] = b"Xen\0";
/// Bytes of a note header (`namesz`, `descsz`, `type`).
pub const NOTE_HEADER_BYTES: usize = 12;
/// Name and descriptor are padded to this (§1.1, item 4), whatever the segment's alignment.
pub const NOTE_ALIGN: usize = 4;
/// What the XEN_VERSION note must start with (§1.2).
pub const XEN_VERSION_PREFIX: &[u8] = b"xen-3.0";
/// The LOADER value every non-Linux guest must give (§1.2).
pub const LOADER_GENERIC: &[u8] = b"generic";
/// The GUEST_OS value that excuses a missing LOADER note (§1.2).
pub const GUEST_OS_LINUX: &[u8] = b"linux";

abi_enum! {
    /// Note types (`public/elfnote.h`); integer notes are 1, 2, 4 or 8 bytes little-endian,
    /// string notes NUL-terminated.
    pub enum XenNote: u32 {
        Info = 0,
        /// int: VA of the entry point (default `e_entry`).
        Entry = 1,
        /// int: VA of the page the loader fills with hypercall stubs.
        HypercallPage = 2,
        /// int: VA of pseudo-physical 0.
        VirtBase = 3,
        /// int: subtracted from VIRT_BASE to relate `p_paddr` to VAs.
        PaddrOffset = 4,
        /// str: must start with `xen-3.0`.
        XenVersion = 5,
        /// str: the guest's OS name.
        GuestOs = 6,
        /// str: informational.
        GuestVersion = 7,
        /// str: must be `generic` unless GUEST_OS is `linux`.
        Loader = 8,
        /// str: `yes`; ignored for 64-bit.
        PaeMode = 9,
        /// str: `|`-separated XENFEAT names, `!` marks a required one.
        Features = 10,
        BswMode = 11,
        /// 32-bit only.
        HvStartLow = 12,
        /// 2 × int: mask and value; ignored.
        L1MfnValid = 13,
        SuspendCancel = 14,
        /// int: VA to map the p2m list at, outside the initial region.
        InitP2m = 15,
        /// int: the guest accepts an unmapped initrd named by pfn.
        ModStartPfn = 16,
        /// int: bitmap of XENFEAT the kernel copes with.
        SupportedFeatures = 17,
        /// int: PVH entry; ignored for PV.
        Phys32Entry = 18,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (index, note) in XenNote::ALL.iter().enumerate() {
            assert_eq!(note.raw() as usize, index, "{note:?}");
        }
        assert_eq!(XenNote::XenVersion.raw(), 5);
        assert_eq!(XenNote::Phys32Entry.raw(), 18);
        assert_eq!(XenNote::from_raw(19), None);
        assert_eq!(NOTE_NAME.len(), 4);
    }
}
