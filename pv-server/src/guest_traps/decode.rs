//! Which trap the guest sees for an event the nucleus forwarded (pv64-abi.md §6.1, §6.4,
//! §6.7, §8). The same guest-visible result under both deliveries:
//!
//! * `INT n` (n ∉ {3, 4}) is delivered as trap `n` (RIP after the instruction, no error code)
//!   when the guest's DPL for `n` allows it from the current mode (≥ 1 in kernel mode, 3 in
//!   user mode), else as `#GP((n << 3) | 2)` at the instruction. Under FRED it arrives as a
//!   software-interrupt event with RIP after it and its length; under the IDT (the nucleus'
//!   gates for those vectors are DPL 0) as a `#GP` naming gate `n` at the instruction,
//!   whose bytes `cd n` pv-server checks.
//! * `INT3`/`int $3` and `INTO`/`int $4` always give `#BP`/`#OF`, whatever the DPL.
//! * `syscall` from guest-user mode goes to the syscall callback (`rcx`/`r11` saved as the
//!   instruction leaves them: the return RIP and RFLAGS), or is `#UD` at the instruction.
//! * A `#PF`'s error code says U when the guest was in user mode, whatever the CPU said (the
//!   guest kernel runs at CPL 3 too); its address comes from the event data.

use ipc::message::GuestMode;
use ipc::{Event, EventKind};

use super::VcpuTraps;
use crate::guest_hypercalls::GuestMemory;

/// What a bounce enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The trap table's entry for this vector.
    Vector(u8),
    /// The syscall callback (a `syscall` from guest-user mode).
    Syscall,
    /// The event callback (an event upcall).
    Event,
    /// The failsafe callback: reloading the guest's data selectors (DS, ES, FS, GS, as
    /// they were) failed (pv64-abi.md §6.8).
    Failsafe([u16; 4]),
}

/// A trap to bounce into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    pub target: Target,
    /// Pushed in the frame (vectors of `X86_EXC_HAVE_EC` only).
    pub error_code: Option<u64>,
    /// The faulting address of a `#PF`.
    pub cr2: Option<u64>,
    /// The RIP the frame saves (after a trap, at a fault).
    pub rip: u64,
    /// The hardware error code, for the crash line only (0 for exceptions without one).
    pub reported_error: Option<u64>,
}

/// The interrupted registers a bounce frame saves besides the return state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupted {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub rcx: u64,
    pub r11: u64,
}

/// Vectors that push an error code (`X86_EXC_HAVE_EC`).
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

const GP: u8 = 13;
const PF: u8 = 14;
const UD: u8 = 6;
const NM: u8 = 7;
const DB: u8 = 1;
/// `#PF` error code bit 2: the access came from user mode.
const PF_USER: u64 = 1 << 2;
/// `INT n`'s opcode.
const INT_OPCODE: u8 = 0xcd;
/// Length of `INT n` (`cd ib`) and of `syscall`.
const INSN_LEN: u64 = 2;

/// The trap for `event`, and the interrupted context (its RCX/R11 from `regs`, the
/// registers the nucleus sent with it). `None`: not an event the guest gets (the caller
/// decides: a watchdog tick, an NMI).
pub fn trap_for(
    traps: &mut VcpuTraps,
    event: &Event,
    regs: (u64, u64),
    memory: &mut impl GuestMemory,
) -> Option<(Trap, Interrupted)> {
    let mut at = Interrupted {
        rip: event.rip,
        rsp: event.rsp,
        rflags: event.rflags,
        rcx: regs.0,
        r11: regs.1,
    };
    let fault = |vector: u8, error: u64, rip: u64| Trap {
        target: Target::Vector(vector),
        error_code: has_error_code(vector).then_some(error),
        cr2: None,
        rip,
        reported_error: Some(error),
    };
    let trap = match event.kind {
        EventKind::Exception {
            vector: GP,
            error_code,
        } if error_code & 7 == 2 => match int_at(memory, event.rip, error_code) {
            Some(n) => software_int(traps, n, event.rip, event.rip + INSN_LEN),
            None => fault(GP, error_code, event.rip),
        },
        EventKind::Exception {
            vector: PF,
            error_code,
        } => {
            let user = if traps.mode == GuestMode::User {
                PF_USER
            } else {
                0
            };
            let error = (error_code & !PF_USER) | user;
            Trap {
                cr2: Some(event.event_data),
                ..fault(PF, error, event.rip)
            }
        }
        EventKind::Exception { vector, error_code } => {
            if vector == NM {
                traps.virtual_ts = false;
            }
            fault(vector, error_code, event.rip)
        }
        EventKind::SoftwareInterrupt { vector } => {
            let at_insn = event.rip.wrapping_sub(u64::from(event.insn_len));
            software_int(traps, vector, at_insn, event.rip)
        }
        EventKind::SoftwareException { vector } => software_trap(vector, event.rip),
        EventKind::PrivilegedSoftwareException => software_trap(DB, event.rip),
        EventKind::Syscall => {
            // SYSCALL leaves the return RIP in RCX and RFLAGS in R11 (FRED leaves them
            // alone: Xen recreates the legacy view, so guests cannot tell).
            at.rcx = event.rip;
            at.r11 = event.rflags;
            if traps.syscall.address == 0 {
                fault(UD, 0, event.rip.wrapping_sub(INSN_LEN))
            } else {
                Trap {
                    target: Target::Syscall,
                    error_code: None,
                    cr2: None,
                    rip: event.rip,
                    reported_error: None,
                }
            }
        }
        // No SYSENTER for guests (IA32_SYSENTER_CS is 0): #GP(0), as the IDT path gets it.
        EventKind::Sysenter => fault(GP, 0, event.rip.wrapping_sub(u64::from(event.insn_len))),
        EventKind::Interrupt { .. } | EventKind::Nmi { .. } => return None,
    };
    Some((trap, at))
}

/// A trap delivered after its instruction (`#BP`, `#OF`, `INT n`, `#DB` of `int1`).
fn software_trap(vector: u8, next: u64) -> Trap {
    Trap {
        target: Target::Vector(vector),
        error_code: None,
        cr2: None,
        rip: next,
        reported_error: None,
    }
}

/// `INT n` at `at` (next instruction at `next`), with Xen's `permit_softint`.
fn software_int(traps: &VcpuTraps, vector: u8, at: u64, next: u64) -> Trap {
    if vector == 3 || vector == 4 {
        return software_trap(vector, next);
    }
    let needed = match traps.mode {
        GuestMode::Kernel => 1,
        GuestMode::User => 3,
    };
    if traps.table[usize::from(vector)].dpl() >= needed {
        software_trap(vector, next)
    } else {
        let error = (u64::from(vector) << 3) | 2;
        Trap {
            target: Target::Vector(GP),
            error_code: Some(error),
            cr2: None,
            rip: at,
            reported_error: Some(error),
        }
    }
}

/// The `n` of an `int $n` at `rip` whose IDT `#GP` names gate `n`: the architectural error
/// code is `n << 3 | 2`; QEMU's TCG reports `n << 4 | 2` (the 16-byte gate's offset), so
/// both are taken, and the bytes `cd n` decide.
fn int_at(memory: &mut impl GuestMemory, rip: u64, error_code: u64) -> Option<u8> {
    let mut bytes = [0u8; 2];
    memory.read(rip, &mut bytes).ok()?;
    let n = u64::from(bytes[1]);
    (bytes[0] == INT_OPCODE && (error_code >> 3 == n || error_code >> 4 == n)).then_some(bytes[1])
}
