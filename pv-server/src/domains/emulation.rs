//! A guest `#UD`/`#GP(0)` whose instruction pv-server emulates (issue 16 point 5): the
//! instruction read from the guest, [`emulate`] run over it with vCPU 0's state, its side
//! effect asked of the nucleus, and the guest resumed after it.

use heapless::Vec;
use ipc::Event;
use ipc::Token;
use ipc::domain::MmuOp;
use ipc::message::{Gpr, GprWrite, GuestMode, GuestRegisters, GuestResume, Reply};
use xen_abi::segment::SegmentBaseWhich;

use super::host_cpu;
use super::running::Running;
use crate::emulate::{self, Emulated, GuestFault, SideEffect};
use crate::guest_traps::Crash;
use crate::guest_traps::decode::{Interrupted, Target, Trap};
use crate::hypervisor::Hypervisor;

/// What emulating a guest fault came to.
// Returned once per event and matched at once; no allocator to box the reply into.
#[allow(clippy::large_enum_variant)]
pub enum Emulation {
    /// Emulated: resume the guest with this.
    Resume(Reply),
    /// Not emulated (or the instruction's own fault): bounce the event as it is.
    AsFault,
    /// Reading the instruction faulted at `address`.
    PageFault { address: u64 },
}

impl Running {
    /// Emulates the faulting instruction of `event`, the guest's registers being `regs`.
    // Once per guest fault, inlined so that its reply is built where the table returns it.
    #[inline(always)]
    pub fn emulate(
        &mut self,
        hv: &mut impl Hypervisor,
        token: Token,
        event: &Event,
        regs: &GuestRegisters,
    ) -> Emulation {
        let Some(trigger) = emulate::trigger(&event.kind) else {
            return Emulation::AsFault;
        };
        let domain = self.domain;
        let mut bytes = [0u8; emulate::decode::MAX_LEN];
        let (len, fetch_fault) = fetch(hv, domain, event.rip, &mut bytes);
        let regs = emulate::gprs(regs, event.rsp);
        // The mode, TS and CR2 are the trap state's (guest_traps); the rest emulation's.
        let mut cpu = self.pv.cpu;
        cpu.kernel_mode = self.traps.mode == GuestMode::Kernel;
        cpu.ts = self.traps.virtual_ts;
        cpu.cr2 = self.traps.virtual_cr2;
        let result = emulate::emulate(
            trigger,
            &bytes[..len],
            fetch_fault,
            &regs,
            &mut cpu,
            host_cpu::cpuid,
            host_cpu::tsc(),
        );
        let (len, writes, effect) = match result {
            Emulated::Done {
                len,
                writes,
                effect,
            } => (len, writes, effect),
            Emulated::Fault(GuestFault::PageFault { address }) => {
                return Emulation::PageFault { address };
            }
            // The fault the instruction raised: bounced as it is.
            Emulated::Fault(_) => return Emulation::AsFault,
        };
        let applied = match effect {
            None => Ok(()),
            Some(SideEffect::NewBaseptr { mfn }) => hv
                .mmu(domain, MmuOp::NewBaseptr { mfn })
                .map(|()| cpu.cr3 = mfn << 12),
            Some(SideEffect::SegmentBase { which, base }) => hv
                .segment_base(domain, u64::from(which.raw()), base)
                .map(|()| match which {
                    SegmentBaseWhich::Fs => cpu.fs_base = base,
                    SegmentBaseWhich::GsKernel => cpu.gs_base_kernel = base,
                    SegmentBaseWhich::GsUser | SegmentBaseWhich::GsUserSel => {
                        cpu.gs_base_user = base
                    }
                }),
        };
        // A refused effect is a #GP for the guest, as in Xen: the fault it raised.
        if applied.is_err() {
            return Emulation::AsFault;
        }
        self.traps.virtual_ts = cpu.ts;
        self.traps.virtual_cr2 = cpu.cr2;
        self.pv.cpu = cpu;
        let mut gprs = Vec::new();
        for (gpr, value) in writes {
            let _ = gprs.push(GprWrite { gpr, value });
        }
        Emulation::Resume(Reply::GuestResume {
            token,
            resume: GuestResume {
                rip: event.rip.wrapping_add(u64::from(len)),
                rsp: event.rsp,
                rflags: event.rflags,
                cs: event.cs,
                ss: event.ss,
                mode: self.traps.mode,
                gprs,
            },
        })
    }

    /// A `#PF` while pv-server read the instruction at the fault: the guest's `#PF` (an
    /// instruction fetch; U when it was in user mode).
    pub fn fetch_fault(
        &mut self,
        hv: &mut impl Hypervisor,
        event: &Event,
        regs: &GuestRegisters,
        address: u64,
    ) -> Result<GuestResume, Crash> {
        const FETCH: u64 = 1 << 4;
        const USER: u64 = 1 << 2;
        let user = if self.traps.mode == GuestMode::User {
            USER
        } else {
            0
        };
        let trap = Trap {
            target: Target::Vector(14),
            error_code: Some(FETCH | user),
            cr2: Some(address),
            rip: event.rip,
            reported_error: Some(FETCH | user),
        };
        let interrupted = Interrupted {
            rip: event.rip,
            rsp: event.rsp,
            rflags: event.rflags,
            rcx: regs.get(Gpr::Rcx),
            r11: regs.get(Gpr::R11),
        };
        self.bounce_trap(hv, &trap, &interrupted)
    }
}

/// Reads the instruction bytes at `rip` (up to the page end, then the next page): how many
/// were read, and where a read faulted, if one did.
pub(super) fn fetch(
    hv: &mut impl Hypervisor,
    domain: u16,
    rip: u64,
    bytes: &mut [u8; emulate::decode::MAX_LEN],
) -> (usize, Option<u64>) {
    let first = (4096 - (rip & 0xfff) as usize).min(bytes.len());
    if hv.guest_read(domain, rip, &mut bytes[..first]).is_err() {
        return (0, Some(rip));
    }
    if first == bytes.len() {
        return (first, None);
    }
    let next = rip.wrapping_add(first as u64);
    if hv.guest_read(domain, next, &mut bytes[first..]).is_ok() {
        (bytes.len(), None)
    } else {
        (first, Some(next))
    }
}
