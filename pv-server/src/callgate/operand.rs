//! The far transfers a call gate can be used by in 64-bit mode: `call far` (`FF /3`) and
//! `jmp far` (`FF /5`) with a memory operand (the direct forms `9A`/`EA` are `#UD` there).
//! Decodes the instruction at the faulting RIP and computes where its operand's selector
//! is: ModRM with SIB, displacement and RIP-relative forms, REX, the operand-size prefix
//! (m16:16), REX.W (m16:64), the address-size prefix and FS/GS overrides.

use crate::emulate::Gprs;
use crate::emulate::decode::MAX_LEN;

/// Which far transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Call,
    Jump,
}

/// A far transfer through memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FarTransfer {
    pub transfer: Transfer,
    /// Instruction length (the return RIP is RIP + len).
    pub len: u8,
    /// Linear address of the operand (its offset part; ignored for a gate).
    pub operand: u64,
    /// Bytes of the offset part: the selector follows it (2, 4 or 8).
    pub offset_size: u8,
}

impl FarTransfer {
    /// Where the operand's 16-bit selector is.
    pub const fn selector_at(&self) -> u64 {
        self.operand.wrapping_add(self.offset_size as u64)
    }
}

/// What the bytes at RIP are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Far(FarTransfer),
    /// Any other instruction (a register operand included).
    Other,
    /// Cut short by the bytes given, or longer than 15 bytes.
    Truncated,
}

/// The segment bases an override may add (64-bit mode ignores CS/DS/ES/SS overrides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentBases {
    pub fs: u64,
    pub gs: u64,
}

/// Decodes `bytes` (read at `rip`) with the registers of the fault.
pub fn decode(bytes: &[u8], rip: u64, regs: &Gprs, bases: SegmentBases) -> Decoded {
    let mut at = 0;
    let mut operand16 = false;
    let mut address32 = false;
    let mut base = 0;
    loop {
        let Some(&byte) = bytes.get(at) else {
            return Decoded::Truncated;
        };
        if at >= MAX_LEN {
            return Decoded::Truncated;
        }
        match byte {
            0x66 => operand16 = true,
            0x67 => address32 = true,
            0x64 => base = bases.fs,
            0x65 => base = bases.gs,
            0x2e | 0x36 | 0x3e | 0x26 | 0xf0 | 0xf2 | 0xf3 => {}
            _ => break,
        }
        at += 1;
    }
    let mut rex = 0;
    if let Some(&byte) = bytes.get(at)
        && (0x40..=0x4f).contains(&byte)
    {
        rex = byte;
        at += 1;
    }
    let byte = |i: usize| bytes.get(i).copied().filter(|_| i < MAX_LEN);
    let (Some(opcode), Some(modrm)) = (byte(at), byte(at + 1)) else {
        return Decoded::Truncated;
    };
    let transfer = match (opcode, (modrm >> 3) & 7) {
        (0xff, 3) => Transfer::Call,
        (0xff, 5) => Transfer::Jump,
        _ => return Decoded::Other,
    };
    let mode = modrm >> 6;
    if mode == 3 {
        // A register operand: `#UD`, never a far transfer.
        return Decoded::Other;
    }
    at += 2;
    let reg = |n: u8| regs[usize::from(n & 15)];
    let rm = modrm & 7;
    let mut rip_relative = false;
    let mut no_base = false;
    let mut address: u64 = 0;
    if rm == 4 {
        let Some(sib) = byte(at) else {
            return Decoded::Truncated;
        };
        at += 1;
        let index = ((sib >> 3) & 7) | (rex & 2) << 2;
        if index != 4 {
            address = reg(index) << (sib >> 6);
        }
        let sib_base = (sib & 7) | (rex & 1) << 3;
        // Base 5 with mod 0: no base, a 32-bit displacement instead.
        no_base = sib_base & 7 == 5 && mode == 0;
        if !no_base {
            address = address.wrapping_add(reg(sib_base));
        }
    } else if rm == 5 && mode == 0 {
        rip_relative = true;
    } else {
        address = reg(rm | (rex & 1) << 3);
    }
    let disp_len = match mode {
        1 => 1,
        2 => 4,
        _ if rip_relative || no_base => 4,
        _ => 0,
    };
    if at + disp_len > bytes.len().min(MAX_LEN) {
        return Decoded::Truncated;
    }
    let disp = match disp_len {
        1 => bytes[at] as i8 as i64 as u64,
        4 => i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as i64
            as u64,
        _ => 0,
    };
    at += disp_len;
    let len = at as u8;
    if rip_relative {
        address = rip.wrapping_add(u64::from(len));
    }
    address = address.wrapping_add(disp);
    if address32 {
        address &= 0xffff_ffff;
    }
    let offset_size = if rex & 8 != 0 {
        8
    } else if operand16 {
        2
    } else {
        4
    };
    Decoded::Far(FarTransfer {
        transfer,
        len,
        operand: base.wrapping_add(address),
        offset_size,
    })
}
