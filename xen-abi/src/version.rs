//! `xen_version` (hypercall 17, pv64-abi.md §4.10) and the feature bits it reports.

use crate::wire;

abi_enum! {
    /// The `cmd` argument of `xen_version`.
    pub enum XenVersionCmd: u32 {
        /// `(major << 16) | minor` in `rax`.
        Version = 0,
        /// 16 characters at `arg`.
        Extraversion = 1,
        CompileInfo = 2,
        /// 1024 characters at `arg`.
        Capabilities = 3,
        Changeset = 4,
        /// `{u64 virt_start}` at `arg`.
        PlatformParameters = 5,
        /// [`FeatureInfo`] at `arg`.
        GetFeatures = 6,
        /// 4096 in `rax`; `arg` must be NULL.
        Pagesize = 7,
        GuestHandle = 8,
        CommandLine = 9,
    }
}

/// Bytes `XENVER_extraversion` writes.
pub const EXTRAVERSION_LEN: usize = 16;
/// Bytes `XENVER_capabilities` writes.
pub const CAPABILITIES_LEN: usize = 1024;

/// `struct xen_feature_info`: `submap_idx` in, `submap` out (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}

// pv64-abi.md §4.10.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<FeatureInfo>() == 8);
    assert!(offset_of!(FeatureInfo, submap) == 4);
};

impl FeatureInfo {
    pub const SIZE: usize = 8;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            submap_idx: wire::get_u32(bytes, 0),
            submap: wire::get_u32(bytes, 4),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        wire::put_u32(&mut out, 0, self.submap_idx);
        wire::put_u32(&mut out, 4, self.submap);
        out
    }
}

/// XENFEAT bit numbers of submap 0 (`public/features.h`), as named in the ELF FEATURES note.
pub mod feature {
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    pub const HIGHMEM_ASSIST: u32 = 6;
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
    pub const HVM_PIRQS: u32 = 10;
    pub const DOM0: u32 = 11;
    pub const GRANT_MAP_IDENTITY: u32 = 12;
    pub const MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
    pub const ARM_SMCCC_SUPPORTED: u32 = 14;
    pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;
    pub const NOT_DIRECT_MAPPED: u32 = 16;
    pub const DIRECT_MAPPED: u32 = 17;

    /// The names the FEATURES note uses, indexed by bit number (`elf_xen_feature_names`
    /// order; a note naming anything else is ignored).
    pub const NAMES: [(&str, u32); 18] = [
        ("writable_page_tables", WRITABLE_PAGE_TABLES),
        ("writable_descriptor_tables", WRITABLE_DESCRIPTOR_TABLES),
        ("auto_translated_physmap", AUTO_TRANSLATED_PHYSMAP),
        ("supervisor_mode_kernel", SUPERVISOR_MODE_KERNEL),
        ("pae_pgdir_above_4gb", PAE_PGDIR_ABOVE_4GB),
        ("mmu_pt_update_preserve_ad", MMU_PT_UPDATE_PRESERVE_AD),
        ("highmem_assist", HIGHMEM_ASSIST),
        ("gnttab_map_avail_bits", GNTTAB_MAP_AVAIL_BITS),
        ("hvm_callback_vector", HVM_CALLBACK_VECTOR),
        ("hvm_safe_pvclock", HVM_SAFE_PVCLOCK),
        ("hvm_pirqs", HVM_PIRQS),
        ("dom0", DOM0),
        ("grant_map_identity", GRANT_MAP_IDENTITY),
        ("memory_op_vnode_supported", MEMORY_OP_VNODE_SUPPORTED),
        ("arm_smccc_supported", ARM_SMCCC_SUPPORTED),
        ("linux_rsdp_unrestricted", LINUX_RSDP_UNRESTRICTED),
        ("not_direct_mapped", NOT_DIRECT_MAPPED),
        ("direct_mapped", DIRECT_MAPPED),
    ];

    /// The bit of a FEATURES-note name, if we know it.
    pub fn by_name(name: &[u8]) -> Option<u32> {
        NAMES
            .iter()
            .find(|(known, _)| known.as_bytes() == name)
            .map(|&(_, bit)| bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_codec() {
        assert_eq!(XenVersionCmd::GetFeatures.raw(), 6);
        assert_eq!(XenVersionCmd::Pagesize.raw(), 7);
        assert_eq!(XenVersionCmd::from_raw(10), None);
        let info = FeatureInfo {
            submap_idx: 0,
            submap: (1 << 5) | (1 << 7) | (1 << 17),
        };
        assert_eq!(info.to_bytes(), [0, 0, 0, 0, 0xa0, 0, 2, 0]);
        assert_eq!(FeatureInfo::from_bytes(&info.to_bytes()), info);
    }

    #[test]
    fn feature_names() {
        assert_eq!(feature::by_name(b"writable_page_tables"), Some(0));
        assert_eq!(feature::by_name(b"pae_pgdir_above_4gb"), Some(4));
        assert_eq!(feature::by_name(b"direct_mapped"), Some(17));
        assert_eq!(feature::by_name(b"!writable_page_tables"), None);
        for (index, (_, bit)) in feature::NAMES.iter().enumerate() {
            assert_eq!(*bit as usize, index);
        }
    }
}
