//! `vm_assist` (hypercall 21, pv64-abi.md §4.11): `vm_assist(cmd, type)`.

abi_enum! {
    pub enum VmAssistCmd: u32 {
        Enable = 0,
        Disable = 1,
    }
}

abi_enum! {
    /// The assists a PV64 guest may switch; any other type is `-EINVAL`.
    pub enum VmAssistType: u32 {
        FourGbSegments = 0,
        FourGbSegmentsNotify = 1,
        /// Emulate writes to read-only-mapped L1 frames (§5.7).
        WritablePagetables = 2,
        PaeExtendedCr3 = 3,
        /// IOPL semantics of §7.3.
        ArchitecturalIopl = 4,
        RunstateUpdateFlag = 5,
        /// Keep the M2P out of user L4s.
        M2pStrict = 32,
    }
}

impl VmAssistType {
    /// Bit of this assist in the domain's assist word.
    pub const fn bit(self) -> u64 {
        1 << self as u32
    }
}

/// Every assist a PV64 domain may enable, as a mask (`VM_ASSIST_VALID` for 64-bit PV).
pub const PV64_VALID_MASK: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < VmAssistType::ALL.len() {
        mask |= VmAssistType::ALL[i].bit();
        i += 1;
    }
    mask
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_the_documented_set() {
        assert_eq!(PV64_VALID_MASK, 0b11_1111 | (1 << 32));
        assert_eq!(VmAssistType::from_raw(6), None);
        assert_eq!(VmAssistCmd::from_raw(2), None);
    }
}
