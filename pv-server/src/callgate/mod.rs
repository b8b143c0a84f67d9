//! Call gates for PV64 guests (issue 18; the semantics table is in
//! `docs/architecture-notes.md`, "Call gates for PV64 guests").
//!
//! A guest's call gates are stored with DPL 0 (issue 16), and FRED has no gates at all, so
//! every `call far`/`jmp far` through one raises `#GP(gate)` under both deliveries; the
//! nucleus forwards it like every guest event and pv-server emulates the transfer with the
//! SDM's 64-bit call-gate rules, the guest kernel counting as CPL 0 and guest user mode as
//! CPL 3: [`operand`] decodes the instruction, [`descriptor`] reads the gate and its target
//! from the guest's own tables, [`emulate`] checks every rule and writes the return frame.
//! The answer is a new context, or the fault the guest gets instead (bounced by the caller
//! to the guest's handler); nothing reaches the hypervisor.
//!
//! Lives in pv-server rather than fred-server (architecture.md §6 names fred-server):
//! pv-server is the guest's fault handler already, keeps the vCPU's mode and `stack_switch`
//! stack, knows which descriptor tables the nucleus accepted, is the one server the nucleus
//! lets copy guest memory, and bounces faults with Xen's frame; in fred-server each of those
//! would be a second copy or a new channel.

pub mod descriptor;
pub mod operand;

use ipc::message::GuestMode;
use ipc::{Event, EventKind};
use xen_abi::layout::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

use crate::guest_hypercalls::GuestMemory;
use descriptor::{
    CodeSegment, DescriptorRecord, DescriptorSource, Gate, Kind, SelectorIndex, Table,
};
use operand::{FarTransfer, Transfer};

const GP: u8 = 13;
const NP: u8 = 11;
const SS: u8 = 12;
/// `#PF` error code bits.
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;

/// The `#GP` error code of a gate's use: a GDT/LDT selector (nonzero, EXT and IDT clear,
/// bits 63:16 clear). `None` for every other event.
pub fn gate_error(event: &Event) -> Option<SelectorIndex> {
    match event.kind {
        EventKind::Exception {
            vector: GP,
            error_code,
        } if error_code != 0 && error_code <= 0xffff && error_code & 3 == 0 => {
            Some(SelectorIndex(error_code as u16))
        }
        _ => None,
    }
}

/// The vCPU at the far transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub rip: u64,
    pub rsp: u64,
    pub cs: u16,
    pub ss: u16,
    pub mode: GuestMode,
    /// The `stack_switch` stack (a call into the kernel from user mode).
    pub kernel_sp: u64,
}

/// Where the transfer leaves the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landing {
    pub rip: u64,
    pub cs: u16,
    pub rsp: u64,
    pub ss: u16,
    pub mode: GuestMode,
}

/// What emulation decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: resume there.
    Transfer(Landing),
    /// The guest gets `vector` with `error_code` at the instruction.
    Fault { vector: u8, error_code: u64 },
    /// The guest gets `#PF` at the instruction.
    PageFault { address: u64, error_code: u64 },
    /// Not a transfer through a guest gate: the original `#GP(sel)` is the guest's.
    NotAGate,
}

const fn fault(vector: u8, error_code: u64) -> Outcome {
    Outcome::Fault { vector, error_code }
}

const fn canonical(va: u64) -> bool {
    ((va << 16) as i64 >> 16) as u64 == va
}

const fn cpl(mode: GuestMode) -> u8 {
    match mode {
        GuestMode::Kernel => 0,
        GuestMode::User => 3,
    }
}

/// Emulates `far` (decoded at `caller.rip`), which raised `#GP(error)`.
pub fn emulate(
    far: &FarTransfer,
    error: SelectorIndex,
    caller: &Caller,
    record: &DescriptorRecord,
    tables: &mut impl DescriptorSource,
    memory: &mut impl GuestMemory,
) -> Outcome {
    let user_bit = if caller.mode == GuestMode::User {
        PF_USER
    } else {
        0
    };
    // The whole operand, as the CPU read it before it looked at the selector.
    let mut operand = [0u8; 10];
    let size = usize::from(far.offset_size) + 2;
    if let Err(f) = memory.read(far.operand, &mut operand[..size]) {
        return Outcome::PageFault {
            address: f.va,
            error_code: user_bit,
        };
    }
    let at = usize::from(far.offset_size);
    let selector = u16::from_le_bytes([operand[at], operand[at + 1]]);
    if SelectorIndex::of(selector) != error || descriptor::reserved_gdt(error) {
        return Outcome::NotAGate;
    }
    let rpl = (selector & 3) as u8;
    let table = error.table();
    let entries = record.entries(table);
    let index = error.index();
    if u64::from(index) >= entries {
        return Outcome::NotAGate;
    }
    let Some(low) = tables.read(table, index) else {
        return Outcome::NotAGate;
    };
    let gate_fault = fault(GP, error.error_code());
    match descriptor::kind(low) {
        Kind::Segment => return Outcome::NotAGate,
        Kind::OtherSystem => return gate_fault,
        Kind::CallGate64 => {}
    }
    let high = (u64::from(index) + 1 < entries)
        .then(|| tables.read(table, index + 1))
        .flatten();
    let gate = Gate::parse(low, high.unwrap_or(u64::MAX));
    let cpl = cpl(caller.mode);
    if gate.dpl < cpl || gate.dpl < rpl {
        return gate_fault;
    }
    if !gate.present {
        return fault(NP, error.error_code());
    }
    if high.is_none() || !gate.upper_ok {
        return gate_fault;
    }
    let target = gate.target;
    let target_fault = fault(GP, target.error_code());
    let code = if target.table() == Table::Gdt && target.index() == 0 {
        return fault(GP, 0);
    } else if descriptor::is_flat_kernel_cs(target) {
        CodeSegment::FLAT_KERNEL
    } else if descriptor::reserved_gdt(target)
        || u64::from(target.index()) >= record.entries(target.table())
    {
        return target_fault;
    } else {
        match tables.read(target.table(), target.index()) {
            Some(raw) => CodeSegment::parse(raw),
            None => return target_fault,
        }
    };
    let privilege_ok = match far.transfer {
        Transfer::Call => code.dpl <= cpl,
        Transfer::Jump if code.conforming => code.dpl <= cpl,
        Transfer::Jump => code.dpl == cpl,
    };
    if !code.code || !privilege_ok || !code.long {
        return target_fault;
    }
    if !code.present {
        return fault(NP, target.error_code());
    }
    if !canonical(gate.offset) {
        return fault(GP, 0);
    }
    let inner = far.transfer == Transfer::Call && !code.conforming && code.dpl < cpl;
    let new_cpl = if inner { code.dpl } else { cpl };
    let mode = if new_cpl == 0 {
        GuestMode::Kernel
    } else {
        GuestMode::User
    };
    let cs = if descriptor::is_flat_kernel_cs(target) {
        FLAT_KERNEL_CS
    } else {
        target.0 | 3
    };
    let landing = |rsp, ss| {
        Outcome::Transfer(Landing {
            rip: gate.offset,
            cs,
            rsp,
            ss,
            mode,
        })
    };
    if far.transfer == Transfer::Jump {
        return landing(caller.rsp, caller.ss);
    }
    let next = caller.rip.wrapping_add(u64::from(far.len));
    let (top, ss, words): (u64, u16, &[u64]) = if inner {
        (
            caller.kernel_sp,
            FLAT_KERNEL_SS,
            &[next, u64::from(caller.cs), caller.rsp, u64::from(caller.ss)],
        )
    } else {
        (caller.rsp, caller.ss, &[next, u64::from(caller.cs)])
    };
    let base = top.wrapping_sub(8 * words.len() as u64);
    if !canonical(top.wrapping_sub(1)) || !canonical(base) || base > top {
        return fault(SS, 0);
    }
    let pf_user = if mode == GuestMode::User { PF_USER } else { 0 };
    match push(memory, base, words) {
        Ok(()) => landing(base, ss),
        Err(address) => Outcome::PageFault {
            address,
            error_code: PF_WRITE | pf_user,
        },
    }
}

/// Writes `words` from `base` up; on failure, the address of the first push (from the top,
/// as the CPU pushes) that cannot be written.
fn push(memory: &mut impl GuestMemory, base: u64, words: &[u64]) -> Result<(), u64> {
    let mut bytes = [0u8; 32];
    for (slot, word) in bytes.chunks_exact_mut(8).zip(words) {
        slot.copy_from_slice(&word.to_le_bytes());
    }
    let len = words.len() * 8;
    if memory.write(base, &bytes[..len]).is_ok() {
        return Ok(());
    }
    for (i, word) in words.iter().enumerate().rev() {
        let at = base + 8 * i as u64;
        if memory.write(at, &word.to_le_bytes()).is_err() {
            return Err(at);
        }
    }
    Err(base)
}

#[cfg(test)]
mod tests;
