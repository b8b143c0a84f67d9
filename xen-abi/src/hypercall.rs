//! Hypercall numbers and the hypercall page (pv64-abi.md §3, §4).
//!
//! A PV64 guest kernel makes hypercall `n` with `syscall`, `rax = n` and up to five
//! arguments in `rdi, rsi, rdx, r10, r8`; the result comes back in `rax`. The hypercall page
//! holds one 32-byte stub per number that does exactly that.

abi_enum! {
    /// The hypercalls of pv64-abi.md §4. Any other number is answered `-ENOSYS`.
    pub enum Hypercall: u32 {
        SetTrapTable = 0,
        MmuUpdate = 1,
        SetGdt = 2,
        StackSwitch = 3,
        SetCallbacks = 4,
        FpuTaskswitch = 5,
        SetDebugreg = 8,
        GetDebugreg = 9,
        UpdateDescriptor = 10,
        MemoryOp = 12,
        Multicall = 13,
        UpdateVaMapping = 14,
        SetTimerOp = 15,
        XenVersion = 17,
        ConsoleIo = 18,
        GrantTableOp = 20,
        VmAssist = 21,
        Iret = 23,
        VcpuOp = 24,
        SetSegmentBase = 25,
        MmuextOp = 26,
        SchedOp = 29,
        CallbackOp = 30,
        EventChannelOp = 32,
        PhysdevOp = 33,
    }
}

/// Stubs in the hypercall page (§3): one per hypercall number below this.
pub const HYPERCALL_PAGE_STUBS: u64 = 128;
/// Bytes per stub; stub `n` starts at `32 * n`.
pub const HYPERCALL_STUB_BYTES: u64 = 32;
/// Argument registers of a hypercall, in order (§3): at most five arguments.
pub const HYPERCALL_ARGUMENT_REGISTERS: [&str; 5] = ["rdi", "rsi", "rdx", "r10", "r8"];

impl Hypercall {
    /// Offset of this hypercall's stub in the hypercall page.
    pub const fn stub_offset(self) -> u64 {
        self as u64 * HYPERCALL_STUB_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_variant_names() {
        assert_eq!(Hypercall::ConsoleIo.label(), "ConsoleIo");
        assert_eq!(
            Hypercall::from_raw(29).map(Hypercall::label),
            Some("SchedOp")
        );
    }

    #[test]
    fn numbers_are_xens() {
        let table = [
            (Hypercall::SetTrapTable, 0),
            (Hypercall::MmuUpdate, 1),
            (Hypercall::SetGdt, 2),
            (Hypercall::StackSwitch, 3),
            (Hypercall::SetCallbacks, 4),
            (Hypercall::FpuTaskswitch, 5),
            (Hypercall::SetDebugreg, 8),
            (Hypercall::GetDebugreg, 9),
            (Hypercall::UpdateDescriptor, 10),
            (Hypercall::MemoryOp, 12),
            (Hypercall::Multicall, 13),
            (Hypercall::UpdateVaMapping, 14),
            (Hypercall::SetTimerOp, 15),
            (Hypercall::XenVersion, 17),
            (Hypercall::ConsoleIo, 18),
            (Hypercall::GrantTableOp, 20),
            (Hypercall::VmAssist, 21),
            (Hypercall::Iret, 23),
            (Hypercall::VcpuOp, 24),
            (Hypercall::SetSegmentBase, 25),
            (Hypercall::MmuextOp, 26),
            (Hypercall::SchedOp, 29),
            (Hypercall::CallbackOp, 30),
            (Hypercall::EventChannelOp, 32),
            (Hypercall::PhysdevOp, 33),
        ];
        assert_eq!(Hypercall::ALL.len(), table.len());
        for (call, number) in table {
            assert_eq!(call.raw(), number);
            assert_eq!(Hypercall::from_raw(u64::from(number)), Some(call));
        }
        for unknown in [6, 7, 11, 16, 19, 22, 27, 28, 31, 34, 127, 128, u64::MAX] {
            assert_eq!(Hypercall::from_raw(unknown), None, "{unknown}");
        }
        // A number with garbage in the high half of rax is not a hypercall.
        assert_eq!(Hypercall::from_raw((1 << 32) | 17), None);
    }

    #[test]
    fn stubs_fit_the_page() {
        assert_eq!(Hypercall::Iret.stub_offset(), 23 * 32);
        assert_eq!(
            HYPERCALL_PAGE_STUBS * HYPERCALL_STUB_BYTES,
            crate::PAGE_SIZE
        );
        assert!(
            Hypercall::ALL
                .iter()
                .all(|c| u64::from(c.raw()) < HYPERCALL_PAGE_STUBS)
        );
    }
}
