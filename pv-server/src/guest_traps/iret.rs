//! The `iret` hypercall (pv64-abi.md §4.12, §6.5): the guest's `iret_context` at its RSP
//! becomes its context again, in kernel mode (CS RPL 0-2) or user mode (RPL 3).
//!
//! RAX comes back from the frame; RCX and R11 too, unless `VGCF_in_syscall` asks for SYSRET's
//! view (rcx = rip, r11 = rflags); the event mask follows the frame's IF. A context the guest
//! may not run in (a selector that is not Xen's flat 64-bit or 32-bit code and flat stack, a
//! non-canonical RIP) crashes it: it never reaches the nucleus.

use heapless::Vec;
use ipc::message::{Gpr, GprWrite, GuestMode, GuestResume};
use xen_abi::layout::selector::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};
use xen_abi::traps::{IretContext, VGCF_IN_SYSCALL};

use super::bounce::rflags;
use super::{Crash, VcpuInfoAccess, VcpuTraps, canonical};
use crate::guest_hypercalls::GuestMemory;

/// Returns through the frame at `rsp`.
pub fn iret(
    traps: &mut VcpuTraps,
    rsp: u64,
    memory: &mut impl GuestMemory,
    info: &mut impl VcpuInfoAccess,
) -> Result<GuestResume, Crash> {
    let mut bytes = [0u8; IretContext::SIZE];
    if !canonical(rsp) || xen_abi::layout::in_hypervisor_window(rsp) {
        return Err(Crash::BadIretFrame { rsp });
    }
    memory
        .read(rsp, &mut bytes)
        .map_err(|_| Crash::BadIretFrame { rsp })?;
    let ctx = IretContext::from_bytes(&bytes);
    let user = ctx.cs & 3 == 3;
    // CS and SS are 16-bit selectors; a bounce frame's CS slot carries the mask above them.
    let cs = (ctx.cs as u16) | 3;
    let ss = (ctx.ss as u16) | 3;
    if !(cs == FLAT_RING3_CS64 || cs == FLAT_RING3_CS32) || ss != FLAT_RING3_SS64 {
        return Err(Crash::IretSelector {
            cs: ctx.cs,
            ss: ctx.ss,
        });
    }
    if !canonical(ctx.rip) {
        return Err(Crash::IretNonCanonical { rip: ctx.rip });
    }
    if user && !traps.user_tables {
        return Err(Crash::IretNoUserTables);
    }
    let resumed = (ctx.rflags & !(rflags::IOPL | rflags::VM)) | rflags::IF | rflags::FIXED;
    let (rcx, r11) = if ctx.flags & VGCF_IN_SYSCALL != 0 {
        (ctx.rip, resumed)
    } else {
        (ctx.rcx, ctx.r11)
    };
    let mask = u8::from(ctx.rflags & rflags::IF == 0);
    info.set_upcall_mask(mask).map_err(|_| Crash::VcpuInfo)?;
    let mode = if user {
        GuestMode::User
    } else {
        GuestMode::Kernel
    };
    traps.mode = mode;
    let mut gprs = Vec::new();
    for (gpr, value) in [(Gpr::Rax, ctx.rax), (Gpr::Rcx, rcx), (Gpr::R11, r11)] {
        let _ = gprs.push(GprWrite { gpr, value });
    }
    Ok(GuestResume {
        rip: ctx.rip,
        rsp: ctx.rsp,
        rflags: resumed,
        cs,
        ss,
        mode,
        gprs,
    })
}
