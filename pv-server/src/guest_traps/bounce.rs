//! Xen's bounce frame (pv64-abi.md §6.2): the interrupted context written onto the guest
//! kernel's stack, and the context that enters its handler.
//!
//! From guest-user mode the vCPU switches to kernel mode and the frame goes on the
//! `stack_switch` stack; from kernel mode on the interrupted stack, with the saved CS's RPL
//! cleared (0xe030), so the handler can tell. From the new RSP upward: rcx, r11, [error
//! code], rip, cs (saved event mask in bits 32-39), rflags (IF = events were unmasked), rsp,
//! ss. The failsafe callback's frame has the four data selectors (ds, es, fs, gs) between
//! r11 and rip (Xen's `load_segments`). The handler is entered as SYSRET would leave it (rcx = its RIP, r11 = RFLAGS), with
//! TF, NT, RF, VM and AC cleared and events masked if its entry asks.

use heapless::Vec;
use ipc::message::{Gpr, GprWrite, GuestMode, GuestResume};
use xen_abi::layout::in_hypervisor_window;
use xen_abi::layout::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS};

use super::decode::{Interrupted, Target, Trap};
use super::{Crash, VcpuInfoAccess, VcpuTraps, canonical};
use crate::guest_hypercalls::GuestMemory;

/// RFLAGS bits.
pub mod rflags {
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const FIXED: u64 = 1 << 1;
}

/// The saved CS of a guest kernel that interrupted itself: FLAT_KERNEL_CS with RPL 0.
pub const KERNEL_CS_SAVED: u64 = (FLAT_KERNEL_CS & !3) as u64;

/// Most words of a bounce frame (the failsafe callback's).
const FRAME_WORDS: usize = 11;

/// Bounces `trap` (interrupting `at`) into the guest; the context to resume it with.
pub fn bounce(
    traps: &mut VcpuTraps,
    trap: &Trap,
    at: &Interrupted,
    memory: &mut impl GuestMemory,
    info: &mut impl VcpuInfoAccess,
) -> Result<GuestResume, Crash> {
    let (handler, mask, vector) = match trap.target {
        Target::Vector(v) => {
            let entry = traps.table[usize::from(v)];
            (entry.address, entry.masks_events(), v)
        }
        Target::Syscall => (traps.syscall.address, traps.syscall.mask_events, 0x80),
        // The event callback is always entered with events masked (§4.5).
        Target::Event => (traps.event.address, true, 0xff),
        Target::Failsafe(_) => (traps.failsafe.address, traps.failsafe.mask_events, 0xfe),
    };
    if handler == 0 {
        return Err(match trap.target {
            Target::Vector(vector) => Crash::NoHandler {
                vector,
                rip: trap.rip,
                error_code: trap.reported_error,
                cr2: trap.cr2,
                table_set: traps.table_set,
            },
            Target::Syscall => Crash::NoCallback {
                what: "syscall",
                rip: trap.rip,
            },
            Target::Event => Crash::NoCallback {
                what: "event",
                rip: trap.rip,
            },
            Target::Failsafe(_) => Crash::NoCallback {
                what: "failsafe",
                rip: trap.rip,
            },
        });
    }
    if in_hypervisor_window(handler) || !canonical(handler) {
        return Err(Crash::HandlerInHypervisor {
            vector,
            address: handler,
        });
    }
    let from_user = traps.mode == GuestMode::User;
    let (stack, saved_cs) = if from_user {
        (traps.kernel_sp, u64::from(FLAT_USER_CS))
    } else {
        (at.rsp, KERNEL_CS_SAVED)
    };
    let saved_mask = info.upcall_mask().map_err(|_| Crash::VcpuInfo)?;
    let saved_if = if saved_mask == 0 { rflags::IF } else { 0 };
    let saved_rflags = (at.rflags & !(rflags::IF | rflags::IOPL)) | saved_if;
    let mut words: Vec<u64, FRAME_WORDS> = Vec::new();
    let _ = words.push(at.rcx);
    let _ = words.push(at.r11);
    if let Target::Failsafe(selectors) = trap.target {
        for selector in selectors {
            let _ = words.push(u64::from(selector));
        }
    }
    if let Some(error) = trap.error_code {
        let _ = words.push(error);
    }
    for word in [
        trap.rip,
        saved_cs | u64::from(saved_mask) << 32,
        saved_rflags,
        at.rsp,
        u64::from(FLAT_KERNEL_SS),
    ] {
        let _ = words.push(word);
    }
    let mut bytes = [0u8; FRAME_WORDS * 8];
    for (slot, word) in bytes.chunks_exact_mut(8).zip(&words) {
        slot.copy_from_slice(&word.to_le_bytes());
    }
    let len = words.len() * 8;
    let bad_stack = Crash::BadBounceStack { vector, rsp: stack };
    let top = stack & !15;
    let base = top.checked_sub(len as u64).ok_or(bad_stack)?;
    if !canonical(base) || in_hypervisor_window(base) || in_hypervisor_window(top - 1) {
        return Err(bad_stack);
    }
    memory.write(base, &bytes[..len]).map_err(|_| bad_stack)?;
    if let Some(cr2) = trap.cr2 {
        traps.virtual_cr2 = cr2;
        info.set_cr2(cr2).map_err(|_| Crash::VcpuInfo)?;
    }
    if mask {
        info.set_upcall_mask(1).map_err(|_| Crash::VcpuInfo)?;
    }
    traps.mode = GuestMode::Kernel;
    let mut cleared = rflags::TF | rflags::NT | rflags::RF | rflags::VM | rflags::AC | rflags::IOPL;
    if trap.target == Target::Syscall {
        cleared |= rflags::DF;
    }
    let entry_rflags = (at.rflags & !cleared) | rflags::IF | rflags::FIXED;
    let mut gprs = Vec::new();
    let _ = gprs.push(GprWrite {
        gpr: Gpr::Rcx,
        value: handler,
    });
    let _ = gprs.push(GprWrite {
        gpr: Gpr::R11,
        value: entry_rflags,
    });
    Ok(GuestResume {
        rip: handler,
        rsp: base,
        rflags: entry_rflags,
        cs: FLAT_KERNEL_CS,
        ss: FLAT_KERNEL_SS,
        mode: GuestMode::Kernel,
        gprs,
    })
}
