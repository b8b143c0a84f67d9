//! What a syscall that did not do what it was asked means for its caller (Hubris'
//! `UserError`): a code back in RAX and the caller goes on, or a fault of the caller that its
//! fault handler decides about.
use bsp_x86_64::frame::Frame;
use ipc::syscall::SyscallError;
use ipc::{Event, EventKind};

/// A syscall handler's error: the table turns it into RAX or into the caller's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserError {
    /// The caller asked for something it may not have or that does not exist: it gets the
    /// code and goes on (bad pointers and numbers are such requests, never faults).
    Recoverable(SyscallError),
    /// The caller is outside the ABI altogether: it faults as if the instruction had, and its
    /// fault handler gets the event.
    Unrecoverable(Fault),
}

impl From<SyscallError> for UserError {
    fn from(error: SyscallError) -> Self {
        Self::Recoverable(error)
    }
}

/// Why a syscall faults its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A `syscall` from compatibility mode (FRED delivers it with the 64-bit bit clear): not
    /// fredvisor's ABI (issue 13), so the SYSCALL event itself is the fault.
    CompatibilityModeSyscall,
}

impl Fault {
    /// The event the caller's fault handler gets for it.
    pub fn event(self, frame: &Frame) -> Event {
        match self {
            Self::CompatibilityModeSyscall => {
                let cs = frame.ret.cs.selector();
                Event {
                    cpu: 0,
                    kind: EventKind::Syscall,
                    event_data: frame.ret.event_data,
                    rip: frame.ret.rip,
                    cs: cs.raw(),
                    rflags: frame.ret.rflags,
                    rsp: frame.ret.rsp,
                    ss: frame.ret.ss.selector().raw(),
                    from_ring: cs.rpl(),
                    insn_len: frame.ret.ss.insn_len(),
                    owner: 0,
                }
            }
        }
    }
}
