//! The fixed parts of a PV64 guest's address space and segments (pv64-abi.md §2.3, §5.4).

use core::ops::Range;

/// Xen's flat selectors, at their Xen GDT indices (§2.3). Every one has RPL 3.
pub mod selector {
    /// DPL3 32-bit code (compat), GDT index 7172.
    pub const FLAT_RING3_CS32: u16 = 0xe023;
    /// DPL3 data: the 64-bit stack selector and the 32-bit data selector, index 7173.
    pub const FLAT_RING3_DS32: u16 = 0xe02b;
    pub const FLAT_RING3_SS32: u16 = FLAT_RING3_DS32;
    pub const FLAT_RING3_SS64: u16 = FLAT_RING3_DS32;
    /// DPL3 64-bit code, index 7174.
    pub const FLAT_RING3_CS64: u16 = 0xe033;
    /// The 64-bit data segment is the null selector.
    pub const FLAT_RING3_DS64: u16 = 0;

    pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
    pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_SS64;
    pub const FLAT_KERNEL_DS: u16 = FLAT_RING3_DS64;
    pub const FLAT_USER_CS: u16 = FLAT_RING3_CS64;
    pub const FLAT_USER_SS: u16 = FLAT_RING3_SS64;
    pub const FLAT_USER_DS: u16 = FLAT_RING3_DS64;

    /// First GDT page the hypervisor keeps for itself (`FIRST_RESERVED_GDT_PAGE`).
    pub const FIRST_RESERVED_GDT_PAGE: u16 = 14;
    /// Its first entry (8-byte descriptors): guests own the entries below it.
    pub const FIRST_RESERVED_GDT_ENTRY: u16 = FIRST_RESERVED_GDT_PAGE * 512;
    /// Its first byte, i.e. the lowest reserved selector value.
    pub const FIRST_RESERVED_GDT_BYTE: u16 = FIRST_RESERVED_GDT_ENTRY * 8;

    /// The GDT index a selector names.
    pub const fn index(selector: u16) -> u16 {
        selector >> 3
    }
}

/// Start of the hypervisor's window: L4 slot 256 (§2.3).
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// One past its end: L4 slot 272.
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
/// The L4 slots the hypervisor owns in every guest L4 (§5.4).
pub const HYPERVISOR_L4_SLOTS: Range<usize> = 256..272;
/// The read-only machine-to-physical table guests read directly (§2.3, §5.4).
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;
/// Entries of the M2P: one u64 pfn per machine frame.
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) / 8;

/// vcpu_info slots in shared_info (`XEN_LEGACY_MAX_VCPUS`, §2.4).
pub const LEGACY_MAX_VCPUS: usize = 32;
/// "This domain", in the foreign-domain arguments of mmu_update/mmuext_op (§4.2).
pub const DOMID_SELF: u16 = 0x7ff0;
/// A p2m entry for a pfn with no frame (§2.1).
pub const INVALID_P2M_ENTRY: u64 = !0;
/// An M2P entry for a machine frame no guest pfn maps (§5.4).
pub const INVALID_M2P_ENTRY: u64 = !0;

/// True if `addr` lies in the hypervisor's window, which a guest may never map or use as a
/// stack (§6.2).
pub const fn in_hypervisor_window(addr: u64) -> bool {
    addr >= HYPERVISOR_VIRT_START && addr < HYPERVISOR_VIRT_END
}

// pv64-abi.md §2.3: the selectors' GDT indices, and the window is exactly slots 256-271.
const _: () = {
    assert!(selector::index(selector::FLAT_RING3_CS32) == 7172);
    assert!(selector::index(selector::FLAT_RING3_DS32) == 7173);
    assert!(selector::index(selector::FLAT_RING3_CS64) == 7174);
    assert!(selector::FIRST_RESERVED_GDT_ENTRY == 7168);
    assert!(selector::FIRST_RESERVED_GDT_BYTE == 0xe000);
    assert!((HYPERVISOR_VIRT_START >> 39) & 0x1ff == HYPERVISOR_L4_SLOTS.start as u64);
    assert!(((HYPERVISOR_VIRT_END - 1) >> 39) & 0x1ff == HYPERVISOR_L4_SLOTS.end as u64 - 1);
    assert!(MACH2PHYS_NR_ENTRIES == 1 << 35);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_edges() {
        assert!(!in_hypervisor_window(HYPERVISOR_VIRT_START - 1));
        assert!(in_hypervisor_window(HYPERVISOR_VIRT_START));
        assert!(in_hypervisor_window(HYPERVISOR_VIRT_END - 1));
        assert!(!in_hypervisor_window(HYPERVISOR_VIRT_END));
        // Linux's direct map (slot 273) and kernel (slot 511) are the guest's.
        assert!(!in_hypervisor_window(0xffff_8880_0000_0000));
        assert!(!in_hypervisor_window(0xffff_ffff_8000_0000));
        assert_eq!(selector::FLAT_KERNEL_CS & 3, 3);
        assert_eq!(selector::FLAT_KERNEL_SS & 3, 3);
    }
}
