//! Virtual trap table, callbacks and the `iret` frame (pv64-abi.md §4.1, §4.5, §6.5).

use crate::wire;

/// `struct trap_info` (16 bytes), one entry of `set_trap_table`'s array; a zero `address`
/// ends the array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    pub vector: u8,
    /// Bits 0-1: the DPL for software `INT n`; bit 2: mask events on entry.
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}

/// `trap_info.flags`: the DPL bits.
pub const TRAP_FLAG_DPL_MASK: u8 = 3;
/// `trap_info.flags`: enter with events masked (an interrupt gate).
pub const TRAP_FLAG_MASK_EVENTS: u8 = 1 << 2;

impl TrapInfo {
    pub const SIZE: usize = 16;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            vector: bytes[0],
            flags: bytes[1],
            cs: wire::get_u16(bytes, 2),
            _pad: 0,
            address: wire::get_u64(bytes, 8),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[0] = self.vector;
        out[1] = self.flags;
        wire::put_u16(&mut out, 2, self.cs);
        wire::put_u64(&mut out, 8, self.address);
        out
    }
}

abi_enum! {
    /// `callback_op` commands.
    pub enum CallbackOpCmd: u32 {
        Register = 0,
        Unregister = 1,
    }
}

abi_enum! {
    /// `callback_register.type`. Type 3 (sysenter_deprecated) is not one: `-ENOSYS`.
    pub enum CallbackType: u16 {
        Event = 0,
        Failsafe = 1,
        Syscall = 2,
        Nmi = 4,
        Sysenter = 5,
        Syscall32 = 7,
    }
}

/// `callback_register.flags`: enter with events masked.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// `struct callback_register` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackRegister {
    pub kind: u16,
    pub flags: u16,
    pub _pad: u32,
    pub address: u64,
}

impl CallbackRegister {
    pub const SIZE: usize = 16;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            kind: wire::get_u16(bytes, 0),
            flags: wire::get_u16(bytes, 2),
            _pad: 0,
            address: wire::get_u64(bytes, 8),
        }
    }
}

/// `iret_context.flags`: return as SYSRET would (`rcx = rip`, `r11 = rflags`).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// `struct iret_context` (72 bytes): what `rsp` points at when the guest makes the `iret`
/// hypercall (§6.5).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IretContext {
    pub rax: u64,
    pub r11: u64,
    pub rcx: u64,
    pub flags: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl IretContext {
    pub const SIZE: usize = 72;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let q = |i: usize| wire::get_u64(bytes, 8 * i);
        Self {
            rax: q(0),
            r11: q(1),
            rcx: q(2),
            flags: q(3),
            rip: q(4),
            cs: q(5),
            rflags: q(6),
            rsp: q(7),
            ss: q(8),
        }
    }
}

// pv64-abi.md §4.1, §4.5, §6.5.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<TrapInfo>() == 16);
    assert!(offset_of!(TrapInfo, vector) == 0);
    assert!(offset_of!(TrapInfo, flags) == 1);
    assert!(offset_of!(TrapInfo, cs) == 2);
    assert!(offset_of!(TrapInfo, address) == 8);
    assert!(size_of::<CallbackRegister>() == 16);
    assert!(offset_of!(CallbackRegister, flags) == 2);
    assert!(offset_of!(CallbackRegister, address) == 8);
    assert!(size_of::<IretContext>() == 72);
    assert!(offset_of!(IretContext, rax) == 0);
    assert!(offset_of!(IretContext, r11) == 8);
    assert!(offset_of!(IretContext, rcx) == 16);
    assert!(offset_of!(IretContext, flags) == 24);
    assert!(offset_of!(IretContext, rip) == 32);
    assert!(offset_of!(IretContext, cs) == 40);
    assert!(offset_of!(IretContext, rflags) == 48);
    assert!(offset_of!(IretContext, rsp) == 56);
    assert!(offset_of!(IretContext, ss) == 64);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs() {
        let trap = TrapInfo {
            vector: 14,
            flags: TRAP_FLAG_MASK_EVENTS | 3,
            cs: 0xe033,
            _pad: 0,
            address: 0xffff_ffff_8000_1000,
        };
        let bytes = trap.to_bytes();
        assert_eq!(&bytes[..4], &[14, 7, 0x33, 0xe0]);
        assert_eq!(TrapInfo::from_bytes(&bytes), trap);

        let mut raw = [0u8; 16];
        raw[0] = 7;
        raw[2] = 1;
        raw[8] = 0x40;
        assert_eq!(
            CallbackRegister::from_bytes(&raw),
            CallbackRegister {
                kind: 7,
                flags: 1,
                _pad: 0,
                address: 0x40
            }
        );
        assert_eq!(CallbackType::from_raw(3), None);

        let mut frame = [0u8; 72];
        for i in 0..9 {
            frame[8 * i] = i as u8 + 1;
        }
        let ctx = IretContext::from_bytes(&frame);
        assert_eq!((ctx.rax, ctx.flags, ctx.ss), (1, 4, 9));
    }
}
