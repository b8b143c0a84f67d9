//! The register changes a fault handler asks for with `Reply::ResumeWith`: checked before
//! they touch the thread's frame (an allegation like every other reply).
use bsp_x86_64::frame::Frame;
use bsp_x86_64::regs::Rflags;
use core::fmt;
use ipc::layout;
use ipc::message::{Gpr, ResumeChanges};

/// RFLAGS of every Ring3 thread: IF set, everything else clear (IOPL 0: FRED's ERETU
/// insists, and servers get no ports).
pub const RFLAGS_USER: Rflags = Rflags::IF.union(Rflags::FIXED);

/// The flags a handler may change: arithmetic flags, TF, DF, AC. IF stays on and IOPL 0.
const RFLAGS_CHANGEABLE: Rflags = Rflags::CF
    .union(Rflags::PF)
    .union(Rflags::AF)
    .union(Rflags::ZF)
    .union(Rflags::SF)
    .union(Rflags::TF)
    .union(Rflags::DF)
    .union(Rflags::OF)
    .union(Rflags::AC);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeError {
    RipNotUser(u64),
    RspNotUser(u64),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RipNotUser(v) => write!(f, "rip {v:#x} outside user space"),
            Self::RspNotUser(v) => write!(f, "rsp {v:#x} outside user space"),
        }
    }
}

/// Applies `changes` to `frame`, or refuses them all (the frame is untouched then).
pub fn apply_changes(frame: &mut Frame, changes: &ResumeChanges) -> Result<(), ChangeError> {
    if changes.rip >= layout::USER_END {
        return Err(ChangeError::RipNotUser(changes.rip));
    }
    if changes.rsp >= layout::USER_END {
        return Err(ChangeError::RspNotUser(changes.rsp));
    }
    frame.ret.rip = changes.rip;
    frame.ret.rsp = changes.rsp;
    let asked = Rflags::from_bits_retain(changes.rflags);
    frame.ret.rflags = (asked.intersection(RFLAGS_CHANGEABLE) | RFLAGS_USER).bits();
    for write in changes.gprs.iter() {
        let g = &mut frame.gprs;
        let slot = match write.gpr {
            Gpr::Rax => &mut g.rax,
            Gpr::Rbx => &mut g.rbx,
            Gpr::Rcx => &mut g.rcx,
            Gpr::Rdx => &mut g.rdx,
            Gpr::Rsi => &mut g.rsi,
            Gpr::Rdi => &mut g.rdi,
            Gpr::Rbp => &mut g.rbp,
            Gpr::R8 => &mut g.r8,
            Gpr::R9 => &mut g.r9,
            Gpr::R10 => &mut g.r10,
            Gpr::R11 => &mut g.r11,
            Gpr::R12 => &mut g.r12,
            Gpr::R13 => &mut g.r13,
            Gpr::R14 => &mut g.r14,
            Gpr::R15 => &mut g.r15,
        };
        *slot = write.value;
    }
    Ok(())
}
