//! One running guest as pv-server keeps it, and how its vCPU 0 goes back into the guest:
//! the event upcall (§6.6) due at every return, `iret`, a bounced trap. What cannot go back
//! is a [`Crash`] for the guest table to end the guest with.

use core::cell::RefCell;

use heapless::String;
use ipc::Event;
use ipc::message::{Gpr, GuestResume, Hypercall};

use super::access::{Memory, SharedVcpuInfo};
use crate::domain_builder::Mfn;
use crate::guest_hypercalls::DomainCalls;
use crate::guest_state::PvDomain;
use crate::guest_traps::decode::{Interrupted, Target, Trap};
use crate::guest_traps::{Crash, VcpuTraps, bounce, decode, iret};
use crate::hypervisor::Hypervisor;
use crate::shared_page::{UPCALL_PENDING, vcpu_field};

pub struct Running {
    pub domain: u16,
    pub name: String<24>,
    pub calls: DomainCalls,
    /// vCPU 0's virtual IDT, callbacks and mode.
    pub traps: VcpuTraps,
    pub shared_info: Mfn,
    /// Events, grants, timer, blocking and emulation state (issue 16 points 5-7).
    pub pv: PvDomain,
}

impl Running {
    /// A guest just built, whose vCPU 0 starts with page tables `cr3`.
    pub fn new(domain: u16, name: String<24>, shared_info: Mfn, cr3: u64) -> Self {
        Self {
            domain,
            name,
            calls: DomainCalls::new(1),
            traps: VcpuTraps::new(),
            shared_info,
            pv: PvDomain::new(domain, shared_info, cr3),
        }
    }

    /// The event upcall if vCPU 0 has one pending and events unmasked: the bounce into its
    /// event callback, interrupting `interrupted`. Every return to the guest asks (§3).
    #[inline]
    pub fn upcall(
        &mut self,
        hv: &mut impl Hypervisor,
        interrupted: &Interrupted,
    ) -> Result<Option<GuestResume>, Crash> {
        // Only pv-server raises upcalls: none raised, none to look for (the hot path).
        if !self.pv.events.upcall_raised {
            return Ok(None);
        }
        // evtchn_upcall_pending and _mask are adjacent: one read.
        let mut state = [0u8; 2];
        hv.read_frame(
            self.domain,
            self.shared_info,
            vcpu_field(0, UPCALL_PENDING),
            &mut state,
        )
        .map_err(|_| Crash::VcpuInfo)?;
        let [pending, masked] = state;
        if pending == 0 {
            self.pv.events.upcall_raised = false;
        }
        if pending == 0 || masked != 0 {
            return Ok(None);
        }
        let trap = Trap {
            target: Target::Event,
            error_code: None,
            cr2: None,
            rip: interrupted.rip,
            reported_error: None,
        };
        self.bounce_trap(hv, &trap, interrupted).map(Some)
    }

    /// Bounces `trap` into vCPU 0's handler, interrupting `interrupted`.
    pub fn bounce_trap(
        &mut self,
        hv: &mut impl Hypervisor,
        trap: &Trap,
        interrupted: &Interrupted,
    ) -> Result<GuestResume, Crash> {
        let cell = RefCell::new(hv);
        let mut memory = self.memory(&cell);
        let mut info = self.vcpu_info(&cell);
        bounce::bounce(&mut self.traps, trap, interrupted, &mut memory, &mut info)
    }

    /// A guest event (`regs`: its RCX and R11) bounced into the guest's handler.
    // Inlined into the table for the same reason as `iret`.
    #[inline(always)]
    pub fn bounce_event(
        &mut self,
        hv: &mut impl Hypervisor,
        event: &Event,
        regs: (u64, u64),
    ) -> Result<GuestResume, Crash> {
        let decoded = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = self.memory(&cell);
            decode::trap_for(&mut self.traps, event, regs, &mut memory)
        };
        let Some((trap, interrupted)) = decoded else {
            return Err(Crash::NoHandler {
                vector: event.kind.vector(),
                rip: event.rip,
                error_code: None,
                cr2: None,
                table_set: self.traps.table_set,
            });
        };
        self.bounce_trap(hv, &trap, &interrupted)
    }

    /// The `iret` hypercall: the guest's frame at its RSP becomes its context again.
    // Inlined into the table, so the context is built where its reply is.
    #[inline(always)]
    pub fn iret(
        &mut self,
        hv: &mut impl Hypervisor,
        call: &Hypercall,
    ) -> Result<GuestResume, Crash> {
        let resume = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = self.memory(&cell);
            let mut info = self.vcpu_info(&cell);
            iret::iret(&mut self.traps, call.rsp, &mut memory, &mut info)?
        };
        // iret restores the event mask from IF: an upcall may be due now.
        let at_resume = Interrupted {
            rip: resume.rip,
            rsp: resume.rsp,
            rflags: resume.rflags,
            rcx: gpr_value(&resume, Gpr::Rcx),
            r11: gpr_value(&resume, Gpr::R11),
        };
        Ok(match self.upcall(hv, &at_resume)? {
            Some(mut upcall) => {
                // RAX came back from the frame: keep it through the upcall.
                keep_gpr(&mut upcall, &resume, Gpr::Rax);
                upcall
            }
            None => resume,
        })
    }

    pub fn memory<'c, 'h, H>(&self, hv: &'c RefCell<&'h mut H>) -> Memory<'c, 'h, H> {
        Memory {
            hv,
            domain: self.domain,
        }
    }

    fn vcpu_info<'c, 'h, H>(&self, hv: &'c RefCell<&'h mut H>) -> SharedVcpuInfo<'c, 'h, H> {
        SharedVcpuInfo {
            hv,
            domain: self.domain,
            shared_info: self.shared_info,
        }
    }
}

/// The value a resume writes into `gpr` (0 if it writes none).
fn gpr_value(resume: &GuestResume, gpr: Gpr) -> u64 {
    resume
        .gprs
        .iter()
        .find(|w| w.gpr == gpr)
        .map_or(0, |w| w.value)
}

/// Carries `from`'s write of `gpr` into `into`.
fn keep_gpr(into: &mut GuestResume, from: &GuestResume, gpr: Gpr) {
    if let Some(write) = from.gprs.iter().find(|w| w.gpr == gpr) {
        let _ = into.gprs.push(*write);
    }
}
