//! A guest `#GP(sel)` that may be a transfer through one of its call gates (issue 18): the
//! instruction fetched and decoded, [`crate::callgate`]'s rules run over the guest's own
//! descriptor tables, and the answer the new context or the fault it raised, bounced with
//! Xen's frame like every guest fault.

use core::cell::RefCell;

use heapless::Vec;
use ipc::Event;
use ipc::message::{Gpr, GuestMode, GuestRegisters, GuestResume};

use super::access::Shared;
use super::emulation::fetch;
use super::running::Running;
use crate::callgate::descriptor::{DescriptorRecord, DescriptorSource, PER_FRAME, Table};
use crate::callgate::operand::{self, Decoded, SegmentBases};
use crate::callgate::{self, Caller, Outcome};
use crate::domain_builder::Mfn;
use crate::emulate;
use crate::emulate::decode::MAX_LEN;
use crate::guest_traps::Crash;
use crate::guest_traps::decode::{Interrupted, Target, Trap};
use crate::hypervisor::Hypervisor;

/// The guest's GDT through the nucleus' frame reads, its LDT at its linear address.
struct GuestDescriptors<'c, 'h, 'r, H> {
    hv: Shared<'c, 'h, H>,
    domain: u16,
    record: &'r DescriptorRecord,
}

impl<H: Hypervisor> DescriptorSource for GuestDescriptors<'_, '_, '_, H> {
    fn read(&mut self, table: Table, index: u16) -> Option<u64> {
        let mut bytes = [0u8; 8];
        let index = usize::from(index);
        let mut hv = self.hv.borrow_mut();
        match table {
            Table::Gdt => {
                let frame = *self.record.gdt_frames.get(index / PER_FRAME)?;
                hv.read_frame(self.domain, Mfn(frame), index % PER_FRAME * 8, &mut bytes)
                    .ok()?;
            }
            Table::Ldt => {
                let va = self.record.ldt_va.checked_add(index as u64 * 8)?;
                hv.guest_read(self.domain, va, &mut bytes).ok()?;
            }
        }
        Some(u64::from_le_bytes(bytes))
    }
}

impl Running {
    /// The transfer of a `#GP(sel)` through one of the guest's call gates: its new
    /// context, or the fault it raised bounced into the guest; `None` when the event is no
    /// such transfer (it goes on as the fault it is). Out of line: the guest table's other
    /// paths stay as they were.
    #[inline(never)]
    pub fn call_gate(
        &mut self,
        hv: &mut impl Hypervisor,
        event: &Event,
        regs: &GuestRegisters,
    ) -> Option<Result<GuestResume, Crash>> {
        let error = callgate::gate_error(event)?;
        let mut bytes = [0u8; MAX_LEN];
        let (len, _) = fetch(hv, self.domain, event.rip, &mut bytes);
        let cpu = &self.pv.cpu;
        let bases = SegmentBases {
            fs: cpu.fs_base,
            gs: match self.traps.mode {
                GuestMode::Kernel => cpu.gs_base_kernel,
                GuestMode::User => cpu.gs_base_user,
            },
        };
        let gprs = emulate::gprs(regs, event.rsp);
        let Decoded::Far(far) = operand::decode(&bytes[..len], event.rip, &gprs, bases) else {
            return None;
        };
        let caller = Caller {
            rip: event.rip,
            rsp: event.rsp,
            cs: event.cs,
            ss: event.ss,
            mode: self.traps.mode,
            kernel_sp: self.traps.kernel_sp,
        };
        let outcome = {
            let cell = RefCell::new(&mut *hv);
            let mut memory = self.memory(&cell);
            let record = &self.pv.descriptors;
            let mut tables = GuestDescriptors {
                hv: &cell,
                domain: self.domain,
                record,
            };
            callgate::emulate(&far, error, &caller, record, &mut tables, &mut memory)
        };
        let (vector, error_code, cr2) = match outcome {
            Outcome::NotAGate => return None,
            Outcome::Transfer(to) => {
                self.traps.mode = to.mode;
                return Some(Ok(GuestResume {
                    rip: to.rip,
                    rsp: to.rsp,
                    rflags: event.rflags,
                    cs: to.cs,
                    ss: to.ss,
                    mode: to.mode,
                    gprs: Vec::new(),
                }));
            }
            Outcome::Fault { vector, error_code } => (vector, error_code, None),
            Outcome::PageFault {
                address,
                error_code,
            } => (14, error_code, Some(address)),
        };
        let trap = Trap {
            target: Target::Vector(vector),
            error_code: Some(error_code),
            cr2,
            rip: event.rip,
            reported_error: Some(error_code),
        };
        let interrupted = Interrupted {
            rip: event.rip,
            rsp: event.rsp,
            rflags: event.rflags,
            rcx: regs.get(Gpr::Rcx),
            r11: regs.get(Gpr::R11),
        };
        Some(self.bounce_trap(hv, &trap, &interrupted))
    }
}
