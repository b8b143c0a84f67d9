//! The few instruction forms pv-server emulates for a PV64 guest (pv64-abi.md §7), decoded
//! from the bytes at the faulting RIP. Anything else is [`Insn::Other`]: the caller bounces
//! the original fault. Legacy prefixes and one REX prefix are understood; an instruction
//! longer than 15 bytes, or cut short by the bytes available, is [`Decoded::Truncated`].

/// `ud2; .ascii "xen"`: Xen's forced-emulation prefix (`XEN_EMULATE_PREFIX`).
pub const FORCED_PREFIX: [u8; 5] = [0x0f, 0x0b, b'x', b'e', b'n'];
/// Longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// Where an `in`/`out` finds its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortOperand {
    Immediate(u8),
    Dx,
}

/// An instruction form the emulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// The forced-emulation prefix followed by `cpuid`.
    ForcedCpuid,
    /// The forced-emulation prefix followed by anything else (Xen: `#UD` at the `ud2`).
    ForcedOther,
    /// `mov %crN, %reg` (`0f 20 /r`): GPR number 0-15 in x86 order.
    MovFromCr {
        cr: u8,
        gpr: u8,
    },
    /// `mov %reg, %crN` (`0f 22 /r`).
    MovToCr {
        cr: u8,
        gpr: u8,
    },
    Rdmsr,
    Wrmsr,
    /// `in` of `size` bytes (1, 2 or 4) into AL/AX/EAX.
    In {
        size: u8,
        port: PortOperand,
    },
    /// `out` of `size` bytes from AL/AX/EAX.
    Out {
        size: u8,
        port: PortOperand,
    },
    Cli,
    Sti,
    /// Anything else.
    Other,
}

/// What the bytes at RIP decode to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// `insn`, `len` bytes long.
    Insn { insn: Insn, len: u8 },
    /// More bytes are needed than were given (or than an instruction may have).
    Truncated,
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.starts_with(&FORCED_PREFIX) {
        return match bytes.get(FORCED_PREFIX.len()..FORCED_PREFIX.len() + 2) {
            Some([0x0f, 0xa2]) => Decoded::Insn {
                insn: Insn::ForcedCpuid,
                len: 7,
            },
            Some(_) => Decoded::Insn {
                insn: Insn::ForcedOther,
                len: 2,
            },
            None if bytes.len() >= MAX_LEN => Decoded::Insn {
                insn: Insn::ForcedOther,
                len: 2,
            },
            None => Decoded::Truncated,
        };
    }
    let mut at = 0;
    let mut operand16 = false;
    let mut rex = 0u8;
    loop {
        let Some(&byte) = bytes.get(at) else {
            return Decoded::Truncated;
        };
        if at >= MAX_LEN {
            return Decoded::Truncated;
        }
        match byte {
            0x66 => operand16 = true,
            0x67 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3 => {}
            _ => break,
        }
        // A REX prefix only counts right before the opcode.
        rex = 0;
        at += 1;
    }
    if let Some(&byte) = bytes.get(at)
        && (0x40..=0x4f).contains(&byte)
    {
        rex = byte;
        at += 1;
    }
    let rex_r = (rex >> 2) & 1;
    let rex_b = rex & 1;
    let need = |n: usize| bytes.len() >= at + n && at + n <= MAX_LEN;
    let done = |insn, len: usize| Decoded::Insn {
        insn,
        len: len as u8,
    };
    let wide = if operand16 { 2 } else { 4 };
    let Some(&opcode) = bytes.get(at) else {
        return Decoded::Truncated;
    };
    match opcode {
        0x0f => {
            if !need(2) {
                return Decoded::Truncated;
            }
            match bytes[at + 1] {
                op @ (0x20 | 0x22) => {
                    if !need(3) {
                        return Decoded::Truncated;
                    }
                    // The mod field is ignored: these always name registers.
                    let modrm = bytes[at + 2];
                    let cr = ((modrm >> 3) & 7) | rex_r << 3;
                    let gpr = (modrm & 7) | rex_b << 3;
                    let insn = if op == 0x20 {
                        Insn::MovFromCr { cr, gpr }
                    } else {
                        Insn::MovToCr { cr, gpr }
                    };
                    done(insn, at + 3)
                }
                0x32 => done(Insn::Rdmsr, at + 2),
                0x30 => done(Insn::Wrmsr, at + 2),
                _ => done(Insn::Other, at + 2),
            }
        }
        0xe4..=0xe7 => {
            if !need(2) {
                return Decoded::Truncated;
            }
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let port = PortOperand::Immediate(bytes[at + 1]);
            let insn = if opcode < 0xe6 {
                Insn::In { size, port }
            } else {
                Insn::Out { size, port }
            };
            done(insn, at + 2)
        }
        0xec..=0xef => {
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let port = PortOperand::Dx;
            let insn = if opcode < 0xee {
                Insn::In { size, port }
            } else {
                Insn::Out { size, port }
            };
            done(insn, at + 1)
        }
        0xfa => done(Insn::Cli, at + 1),
        0xfb => done(Insn::Sti, at + 1),
        _ => done(Insn::Other, at + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(bytes: &[u8]) -> (Insn, u8) {
        match decode(bytes) {
            Decoded::Insn { insn, len } => (insn, len),
            Decoded::Truncated => panic!("{bytes:x?} truncated"),
        }
    }

    #[test]
    fn forced_emulation() {
        assert_eq!(insn(b"\x0f\x0bxen\x0f\xa2"), (Insn::ForcedCpuid, 7));
        assert_eq!(insn(b"\x0f\x0bxen\x90\x90"), (Insn::ForcedOther, 2));
        assert_eq!(decode(b"\x0f\x0bxen\x0f"), Decoded::Truncated);
        // A plain ud2 is no emulation request.
        assert_eq!(insn(b"\x0f\x0b\x90"), (Insn::Other, 2));
    }

    #[test]
    fn control_registers_with_rex() {
        // mov %cr3, %rax; mov %rbx, %cr0; mov %cr4, %r9; mov %rax, %cr8 (REX.R).
        assert_eq!(
            insn(&[0x0f, 0x20, 0xd8]),
            (Insn::MovFromCr { cr: 3, gpr: 0 }, 3)
        );
        assert_eq!(
            insn(&[0x0f, 0x22, 0xc3]),
            (Insn::MovToCr { cr: 0, gpr: 3 }, 3)
        );
        assert_eq!(
            insn(&[0x41, 0x0f, 0x20, 0xe1]),
            (Insn::MovFromCr { cr: 4, gpr: 9 }, 4)
        );
        assert_eq!(
            insn(&[0x44, 0x0f, 0x22, 0xc0]),
            (Insn::MovToCr { cr: 8, gpr: 0 }, 4)
        );
        assert_eq!(decode(&[0x0f, 0x20]), Decoded::Truncated);
    }

    #[test]
    fn msrs_ports_and_flags() {
        assert_eq!(insn(&[0x0f, 0x32]), (Insn::Rdmsr, 2));
        assert_eq!(insn(&[0x0f, 0x30]), (Insn::Wrmsr, 2));
        let imm = |p| PortOperand::Immediate(p);
        assert_eq!(
            insn(&[0xe4, 0x80]),
            (
                Insn::In {
                    size: 1,
                    port: imm(0x80)
                },
                2
            )
        );
        assert_eq!(
            insn(&[0x66, 0xe5, 0x71]),
            (
                Insn::In {
                    size: 2,
                    port: imm(0x71)
                },
                3
            )
        );
        assert_eq!(
            insn(&[0xed]),
            (
                Insn::In {
                    size: 4,
                    port: PortOperand::Dx
                },
                1
            )
        );
        assert_eq!(
            insn(&[0xee]),
            (
                Insn::Out {
                    size: 1,
                    port: PortOperand::Dx
                },
                1
            )
        );
        assert_eq!(
            insn(&[0xe7, 0x70]),
            (
                Insn::Out {
                    size: 4,
                    port: imm(0x70)
                },
                2
            )
        );
        assert_eq!(insn(&[0xfa]), (Insn::Cli, 1));
        assert_eq!(insn(&[0xfb]), (Insn::Sti, 1));
        assert_eq!(insn(&[0xf4]), (Insn::Other, 1), "hlt is not emulated");
        assert_eq!(insn(&[0x6c]), (Insn::Other, 1), "nor ins");
    }

    #[test]
    fn too_many_prefixes_never_decode() {
        assert_eq!(decode(&[0x66; 20]), Decoded::Truncated);
        assert_eq!(decode(&[]), Decoded::Truncated);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_within_fifteen(bytes in proptest::collection::vec(0u8.., 0..20)) {
            if let Decoded::Insn { len, .. } = decode(&bytes) {
                proptest::prop_assert!(usize::from(len) <= MAX_LEN);
                proptest::prop_assert!(usize::from(len) <= bytes.len());
            }
        }
    }
}
