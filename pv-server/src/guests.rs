//! The table of PV64 guests and the per-vCPU state pv-server keeps for them.
//!
//! Follows the FRED design note ("cpu_user_regs vs vm86 segments", "GS handling"):
//!
//! * [`PublicRegisters`] is the guest-visible register block with the layout of Xen's public
//!   `struct cpu_user_regs` (x86-64), under a new name; [`CpuUserRegs`] is the compatibility
//!   alias. Only `get/set` of a vCPU's context goes through it ([`PvVcpu::public_registers`],
//!   [`PvVcpu::set_from_public`]).
//! * [`GuestFrame`] is the internal state: GPRs and the return state, the same fields the
//!   nucleus' FRED-compatible frame has, and *no* data selectors.
//! * The vm86-era `ds/es/fs/gs` selectors live in [`DataSelectors`], per vCPU, beside the frame
//!   (the note's `struct pv_vcpu` fields), so the frame layout is free to follow FRED.
//! * User and kernel GS bases are kept as two plain fields; under FRED there is no SWAPGS, so
//!   the one that is live is chosen by the guest's mode ([`PvVcpu::active_gs_base`]), never
//!   by swapping the fields.
//!
//! Issue 7 creates no guests: the table exists, is empty, and is what hypercalls are checked
//! against.

use heapless::Vec;

/// Most PV guests pv-server tracks.
pub const MAX_GUESTS: usize = 4;
/// Most vCPUs per guest.
pub const MAX_VCPUS: usize = 4;

/// Guest-visible register block: the layout of Xen's public x86-64 `struct cpu_user_regs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicRegisters {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: u16,
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    /// vm86 leftovers: part of the ABI, stored in [`DataSelectors`] internally.
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}

/// Compatibility name for code written against Xen's public headers.
pub type CpuUserRegs = PublicRegisters;

// The public layout is an ABI: pin the offsets guests rely on.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<PublicRegisters>() == 0xc8);
    assert!(offset_of!(PublicRegisters, error_code) == 0x78);
    assert!(offset_of!(PublicRegisters, rip) == 0x80);
    assert!(offset_of!(PublicRegisters, cs) == 0x88);
    assert!(offset_of!(PublicRegisters, saved_upcall_mask) == 0x8c);
    assert!(offset_of!(PublicRegisters, rflags) == 0x90);
    assert!(offset_of!(PublicRegisters, ss) == 0xa0);
    assert!(offset_of!(PublicRegisters, es) == 0xa8);
    assert!(offset_of!(PublicRegisters, gs) == 0xc0);
};

/// Internal per-vCPU register state: what the nucleus' frame holds, without data selectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestFrame {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, r8..r15, in `ipc::message::Gpr` order.
    pub gprs: [u64; 15],
    pub rip: u64,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub error_code: u32,
    pub vector: u8,
}

/// The vm86-era data selectors, kept beside (not in) the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSelectors {
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
}

/// Which half of the PV64 guest runs (a PV64 guest kernel runs in Ring3 too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestMode {
    #[default]
    Kernel,
    User,
}

/// One vCPU of a PV guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvVcpu {
    pub frame: GuestFrame,
    pub selectors: DataSelectors,
    pub gs_base_user: u64,
    pub gs_base_kernel: u64,
    pub mode: GuestMode,
    pub upcall_mask: u8,
}

impl PvVcpu {
    /// The GS base the guest must see now: chosen by mode, not swapped (no SWAPGS under FRED).
    pub const fn active_gs_base(&self) -> u64 {
        match self.mode {
            GuestMode::Kernel => self.gs_base_kernel,
            GuestMode::User => self.gs_base_user,
        }
    }

    /// The guest-visible block (`arch_get_info_guest`): frame plus the separate selectors.
    pub fn public_registers(&self) -> PublicRegisters {
        let [
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = self.frame.gprs;
        PublicRegisters {
            r15,
            r14,
            r13,
            r12,
            rbp,
            rbx,
            r11,
            r10,
            r9,
            r8,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            error_code: self.frame.error_code,
            entry_vector: u32::from(self.frame.vector),
            rip: self.frame.rip,
            cs: self.frame.cs,
            saved_upcall_mask: self.upcall_mask,
            rflags: self.frame.rflags,
            rsp: self.frame.rsp,
            ss: self.frame.ss,
            es: self.selectors.es,
            ds: self.selectors.ds,
            fs: self.selectors.fs,
            gs: self.selectors.gs,
            ..PublicRegisters::default()
        }
    }

    /// Takes a guest-supplied block (`arch_set_info_guest`): registers into the frame, data
    /// selectors into [`DataSelectors`]. Event fields (error code, vector) are not settable.
    pub fn set_from_public(&mut self, regs: &PublicRegisters) {
        self.frame.gprs = [
            regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.r8, regs.r9,
            regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
        ];
        self.frame.rip = regs.rip;
        self.frame.cs = regs.cs;
        self.frame.rflags = regs.rflags;
        self.frame.rsp = regs.rsp;
        self.frame.ss = regs.ss;
        self.upcall_mask = regs.saved_upcall_mask;
        self.selectors = DataSelectors {
            ds: regs.ds,
            es: regs.es,
            fs: regs.fs,
            gs: regs.gs,
        };
    }
}

/// One PV64 guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvGuest {
    pub domain: u16,
    pub vcpus: Vec<PvVcpu, MAX_VCPUS>,
}

/// All PV guests; empty until guests can be created.
#[derive(Debug, Default)]
pub struct GuestTable {
    guests: Vec<PvGuest, MAX_GUESTS>,
}

impl GuestTable {
    pub const fn new() -> Self {
        Self { guests: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.guests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.guests.is_empty()
    }

    pub const fn capacity(&self) -> usize {
        MAX_GUESTS
    }

    pub fn get(&self, domain: u16) -> Option<&PvGuest> {
        self.guests.iter().find(|guest| guest.domain == domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_block_round_trips_and_keeps_selectors_apart() {
        let mut vcpu = PvVcpu::default();
        let mut regs = PublicRegisters {
            rax: 1,
            r15: 15,
            rip: 0x1000,
            cs: 0xe033,
            ..Default::default()
        };
        regs.ds = 0x2b;
        regs.gs = 0x63;
        regs.saved_upcall_mask = 1;
        vcpu.set_from_public(&regs);
        assert_eq!(vcpu.frame.gprs[0], 1);
        assert_eq!(vcpu.frame.gprs[14], 15);
        assert_eq!(
            vcpu.selectors,
            DataSelectors {
                ds: 0x2b,
                es: 0,
                fs: 0,
                gs: 0x63
            }
        );
        assert_eq!(vcpu.public_registers(), regs);
    }

    #[test]
    fn gs_base_follows_the_mode() {
        let mut vcpu = PvVcpu {
            gs_base_user: 0x1000,
            gs_base_kernel: 0x2000,
            ..Default::default()
        };
        assert_eq!(vcpu.active_gs_base(), 0x2000);
        vcpu.mode = GuestMode::User;
        assert_eq!(vcpu.active_gs_base(), 0x1000);
    }

    #[test]
    fn the_table_starts_empty() {
        let table = GuestTable::new();
        assert!(table.is_empty());
        assert_eq!(table.capacity(), MAX_GUESTS);
        assert!(table.get(0).is_none());
    }
}
