//! The register changes a fault handler asks for with `Reply::ResumeWith`: checked before
//! they touch the thread's frame (an allegation like every other reply).
use bsp_x86_64::frame::Frame;
use bsp_x86_64::frame::{CsQword, SsQword};
use bsp_x86_64::guest_return::{self, GuestDescriptors, GuestReturn, ReturnRefused};
use bsp_x86_64::regs::Rflags;
use core::fmt;
use ipc::layout;
use ipc::message::{Gpr, GprWrite, GuestResume, ResumeChanges};

use crate::thread::guest_vcpu::{GuestVcpu, NoUserTables};

/// RFLAGS of every Ring3 thread: IF set, everything else clear (IOPL 0: FRED's ERETU
/// insists, and servers get no ports).
pub const RFLAGS_USER: Rflags = Rflags::INTERRUPTS_ON;

/// The flags a handler may change: arithmetic flags, TF, DF, AC. IF stays on and IOPL 0.
const RFLAGS_CHANGEABLE: Rflags = Rflags::USER_CHANGEABLE;

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
    write_gprs(frame, &changes.gprs);
    Ok(())
}

/// Why a guest vCPU's `GuestResume` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRefusal {
    Return(ReturnRefused),
    NoUserTables,
}

impl fmt::Display for GuestRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Return(e) => e.fmt(f),
            Self::NoUserTables => f.write_str("user mode without user page tables"),
        }
    }
}

/// Applies a guest vCPU's new context (checked by `guest_return`: RPL 3 selectors of the
/// guest, canonical RIP, RFLAGS corrected) and its mode, or refuses it all.
pub fn apply_guest_resume(
    frame: &mut Frame,
    vcpu: &mut GuestVcpu,
    resume: &GuestResume,
) -> Result<(), GuestRefusal> {
    let checked = guest_return::check(
        GuestReturn {
            rip: resume.rip,
            cs: resume.cs,
            rflags: resume.rflags,
            rsp: resume.rsp,
            ss: resume.ss,
        },
        GuestDescriptors::default(),
    )
    .map_err(GuestRefusal::Return)?;
    let mut next = *vcpu;
    next.enter(resume.mode)
        .map_err(|NoUserTables| GuestRefusal::NoUserTables)?;
    *vcpu = next;
    frame.ret.rip = checked.rip;
    frame.ret.rsp = checked.rsp;
    frame.ret.rflags = checked.rflags;
    frame.ret.cs = CsQword::from_raw(u64::from(checked.cs));
    frame.ret.ss = SsQword::from_raw(u64::from(checked.ss));
    write_gprs(frame, &resume.gprs);
    Ok(())
}

fn write_gprs(frame: &mut Frame, gprs: &[GprWrite]) {
    for write in gprs {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::message::GprWrite;

    fn changes(rip: u64, rsp: u64, rflags: u64) -> ResumeChanges {
        ResumeChanges {
            rip,
            rsp,
            rflags,
            gprs: heapless::Vec::new(),
        }
    }

    #[test]
    fn changes_inside_user_space_are_applied() {
        let mut frame = Frame::ZERO;
        let mut c = changes(0x40_2000, 0x7000_0000, 0);
        c.gprs
            .push(GprWrite {
                gpr: Gpr::R12,
                value: 12,
            })
            .unwrap();
        apply_changes(&mut frame, &c).unwrap();
        assert_eq!(frame.ret.rip, 0x40_2000);
        assert_eq!(frame.ret.rsp, 0x7000_0000);
        assert_eq!(frame.gprs.r12, 12);
        assert_eq!(frame.ret.rflags, 0x202);
    }

    #[test]
    fn rip_or_rsp_outside_user_space_is_refused_and_nothing_changes() {
        let mut frame = Frame::ZERO;
        let err = apply_changes(&mut frame, &changes(layout::USER_END, 0, 0));
        assert_eq!(err, Err(ChangeError::RipNotUser(layout::USER_END)));
        let err = apply_changes(&mut frame, &changes(0x1000, u64::MAX, 0));
        assert_eq!(err, Err(ChangeError::RspNotUser(u64::MAX)));
        assert_eq!(frame, Frame::ZERO);
    }

    #[test]
    fn a_handler_cannot_clear_if_or_raise_iopl() {
        let mut frame = Frame::ZERO;
        let asked = (Rflags::IOPL | Rflags::NT | Rflags::VM | Rflags::CF | Rflags::AC).bits();
        apply_changes(&mut frame, &changes(0x1000, 0x2000, asked)).unwrap();
        let got = Rflags::from_bits_retain(frame.ret.rflags);
        assert_eq!(got, Rflags::IF | Rflags::FIXED | Rflags::CF | Rflags::AC);
        assert_eq!(got.iopl(), 0);
        // The mask as it was written by hand before it had names.
        assert_eq!(RFLAGS_CHANGEABLE.bits(), 0x0000_0000_0004_0dd5);
    }
}
