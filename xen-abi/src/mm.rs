//! Page-table hypercalls: `mmu_update` (1), `update_va_mapping` (14) and `mmuext_op` (26)
//! (pv64-abi.md §4.2, §4.7, §4.15).

use crate::wire;

abi_enum! {
    /// `mmu_update.ptr & 3`: what the request does.
    pub enum MmuUpdateCmd: u32 {
        /// `ptr & !7` is the machine address of a PTE; write `val` there, validated.
        NormalPtUpdate = 0,
        /// Set `M2P[ptr >> 12] = val`.
        MachphysUpdate = 1,
        /// As normal, keeping the old A/D bits.
        PtUpdatePreserveAd = 2,
        /// As normal; the address is never translated.
        PtUpdateNoTranslate = 3,
    }
}

/// `struct mmu_update` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Machine address of the target, command in bits 0-1.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}

impl MmuUpdate {
    pub const SIZE: usize = 16;

    /// The command in the low bits of `ptr` (every value of two bits is one).
    pub fn cmd(&self) -> MmuUpdateCmd {
        match MmuUpdateCmd::from_raw(self.ptr & 3) {
            Some(cmd) => cmd,
            None => unreachable!("two bits always name a command"),
        }
    }

    /// The machine address of the PTE (or the frame, for MACHPHYS_UPDATE), command bits off.
    pub const fn target(&self) -> u64 {
        self.ptr & !7
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            ptr: wire::get_u64(bytes, 0),
            val: wire::get_u64(bytes, 8),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        wire::put_u64(&mut out, 0, self.ptr);
        wire::put_u64(&mut out, 8, self.val);
        out
    }
}

abi_enum! {
    /// `mmuext_op.cmd`.
    pub enum MmuextCmd: u32 {
        PinL1Table = 0,
        PinL2Table = 1,
        PinL3Table = 2,
        PinL4Table = 3,
        UnpinTable = 4,
        NewBaseptr = 5,
        TlbFlushLocal = 6,
        InvlpgLocal = 7,
        TlbFlushMulti = 8,
        InvlpgMulti = 9,
        TlbFlushAll = 10,
        InvlpgAll = 11,
        FlushCache = 12,
        SetLdt = 13,
        NewUserBaseptr = 15,
        ClearPage = 16,
        CopyPage = 17,
        FlushCacheGlobal = 18,
        MarkSuper = 19,
        UnmarkSuper = 20,
    }
}

/// `struct mmuext_op` (24 bytes). `arg1` is an mfn or a linear address, `arg2` a count or a
/// guest pointer, depending on `cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    pub arg1: u64,
    pub arg2: u64,
}

// pv64-abi.md §4.2 and §4.15.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MmuUpdate>() == 16);
    assert!(offset_of!(MmuUpdate, val) == 8);
    assert!(size_of::<MmuextOp>() == 24);
    assert!(offset_of!(MmuextOp, cmd) == 0);
    assert!(offset_of!(MmuextOp, arg1) == 8);
    assert!(offset_of!(MmuextOp, arg2) == 16);
};

impl MmuextOp {
    pub const SIZE: usize = 24;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            cmd: wire::get_u32(bytes, 0),
            _pad: 0,
            arg1: wire::get_u64(bytes, 8),
            arg2: wire::get_u64(bytes, 16),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        wire::put_u32(&mut out, 0, self.cmd);
        wire::put_u64(&mut out, 8, self.arg1);
        wire::put_u64(&mut out, 16, self.arg2);
        out
    }
}

abi_enum! {
    /// `update_va_mapping` flags, bits 0-1: which flush follows the update.
    pub enum UvmfFlush: u32 {
        None = 0,
        TlbFlush = 1,
        Invlpg = 2,
    }
}

/// Which vCPUs an `update_va_mapping` flush reaches (flags bits 2 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UvmfScope {
    /// This vCPU (`UVMF_LOCAL`, 0).
    Local,
    /// Every vCPU of the domain (`UVMF_ALL`, 4).
    All,
    /// The vCPUs in the bitmap at this guest pointer (`UVMF_MULTI`).
    Multi(u64),
}

/// `update_va_mapping`'s `flags`, decoded; `None` for flush type 3, which is undefined.
pub fn decode_uvmf(flags: u64) -> Option<(UvmfFlush, UvmfScope)> {
    let flush = UvmfFlush::from_raw(flags & 3)?;
    let scope = match flags & !3 {
        0 => UvmfScope::Local,
        4 => UvmfScope::All,
        pointer => UvmfScope::Multi(pointer),
    };
    Some((flush, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmu_update_command_bits() {
        let req = MmuUpdate {
            ptr: 0x1234_5678 | 1,
            val: 7,
        };
        assert_eq!(req.cmd(), MmuUpdateCmd::MachphysUpdate);
        assert_eq!(req.target(), 0x1234_5678);
        assert_eq!(
            MmuUpdate {
                ptr: 0x1003,
                val: 0
            }
            .cmd(),
            MmuUpdateCmd::PtUpdateNoTranslate
        );
        assert_eq!(MmuUpdate::from_bytes(&req.to_bytes()), req);
    }

    #[test]
    fn mmuext_numbers_and_codec() {
        assert_eq!(MmuextCmd::NewBaseptr.raw(), 5);
        assert_eq!(MmuextCmd::NewUserBaseptr.raw(), 15);
        assert_eq!(MmuextCmd::from_raw(14), None);
        assert_eq!(MmuextCmd::from_raw(21), None);
        let op = MmuextOp {
            cmd: 7,
            _pad: 0,
            arg1: 0xdead_b000,
            arg2: 3,
        };
        let bytes = op.to_bytes();
        assert_eq!(bytes[0], 7);
        assert_eq!(&bytes[8..12], &[0x00, 0xb0, 0xad, 0xde]);
        assert_eq!(bytes[16], 3);
        assert_eq!(MmuextOp::from_bytes(&bytes), op);
    }

    #[test]
    fn uvmf() {
        assert_eq!(decode_uvmf(0), Some((UvmfFlush::None, UvmfScope::Local)));
        assert_eq!(decode_uvmf(2), Some((UvmfFlush::Invlpg, UvmfScope::Local)));
        assert_eq!(decode_uvmf(5), Some((UvmfFlush::TlbFlush, UvmfScope::All)));
        assert_eq!(
            decode_uvmf(0x7000 | 1),
            Some((UvmfFlush::TlbFlush, UvmfScope::Multi(0x7000)))
        );
        assert_eq!(decode_uvmf(3), None);
    }
}
