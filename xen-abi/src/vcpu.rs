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
