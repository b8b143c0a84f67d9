//! `vcpu_op` (hypercall 24, pv64-abi.md §4.13): `vcpu_op(cmd, vcpuid, arg)`.

abi_enum! {
    pub enum VcpuOpCmd: u32 {
        Initialise = 0,
        Up = 1,
        Down = 2,
        /// 1 if the vCPU is online, 0 if not; `arg` is NULL.
        IsUp = 3,
        GetRunstateInfo = 4,
        RegisterRunstateMemoryArea = 5,
        SetPeriodicTimer = 6,
        StopPeriodicTimer = 7,
        SetSingleshotTimer = 8,
        StopSingleshotTimer = 9,
        RegisterVcpuInfo = 10,
        SendNmi = 11,
        GetPhysid = 12,
        RegisterVcpuTimeMemoryArea = 13,
    }
}

/// `struct vcpu_register_vcpu_info` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterVcpuInfo {
    pub mfn: u64,
    /// Must keep the 64-byte vcpu_info inside the page, 8-aligned.
    pub offset: u32,
    pub rsvd: u32,
}

/// `struct vcpu_runstate_info` (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunstateInfo {
    /// running 0, runnable 1, blocked 2, offline 3.
    pub state: i32,
    pub _pad: u32,
    pub state_entry_time: u64,
    /// ns spent in each state.
    pub time: [u64; 4],
}

/// `struct vcpu_set_singleshot_timer` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetSingleshotTimer {
    pub timeout_abs_ns: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// `struct vcpu_set_periodic_timer` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetPeriodicTimer {
    pub period_ns: u64,
}

// pv64-abi.md §4.13.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<RegisterVcpuInfo>() == 16);
    assert!(offset_of!(RegisterVcpuInfo, offset) == 8);
    assert!(offset_of!(RegisterVcpuInfo, rsvd) == 12);
    assert!(size_of::<RunstateInfo>() == 48);
    assert!(offset_of!(RunstateInfo, state_entry_time) == 8);
    assert!(offset_of!(RunstateInfo, time) == 16);
    assert!(size_of::<SetSingleshotTimer>() == 16);
    assert!(offset_of!(SetSingleshotTimer, flags) == 8);
    assert!(size_of::<SetPeriodicTimer>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (index, cmd) in VcpuOpCmd::ALL.iter().enumerate() {
            assert_eq!(cmd.raw() as usize, index);
        }
        assert_eq!(VcpuOpCmd::IsUp.raw(), 3);
        assert_eq!(VcpuOpCmd::RegisterVcpuInfo.raw(), 10);
    }
}
