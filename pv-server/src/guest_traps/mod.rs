//! A PV64 vCPU's virtual IDT and what pv-server does with its traps (issue 16 points 1-4;
//! pv64-abi.md §4.1, §4.4-4.6, §6): the trap table and callbacks the guest registers
//! ([`hypercalls`]), the events the nucleus forwards turned into the trap the guest must see
//! ([`decode`], with the software-interrupt rules), Xen's bounce frame written onto the right
//! stack ([`bounce`]) and the `iret` hypercall back ([`iret`]).
//!
//! Pure policy over [`GuestMemory`](crate::guest_hypercalls::GuestMemory) and [`VcpuInfoAccess`]: every guest byte is copied
//! through the nucleus, which checks that the domain owns and maps the memory (writable for
//! a bounce frame); the answer is a [`GuestResume`](ipc::message::GuestResume) the nucleus checks again (selectors,
//! canonical RIP, RFLAGS) before the vCPU runs on it. Anything the guest cannot be resumed
//! from is a [`Crash`]: one line, the domain ends, nothing else.

pub mod bounce;
pub mod decode;
pub mod hypercalls;
pub mod iret;

use core::fmt;

use ipc::message::GuestMode;

use crate::guest_hypercalls::GuestFault;

/// One entry of the virtual IDT (`trap_info` minus the vector).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapEntry {
    /// Bits 0-1: the DPL for `INT n`; bit 2: enter with events masked.
    pub flags: u8,
    /// The handler; 0 = none.
    pub address: u64,
}

impl TrapEntry {
    pub const fn dpl(&self) -> u8 {
        self.flags & xen_abi::traps::TRAP_FLAG_DPL_MASK
    }

    pub const fn masks_events(&self) -> bool {
        self.flags & xen_abi::traps::TRAP_FLAG_MASK_EVENTS != 0
    }
}

/// A registered callback (`callback_op` / `set_callbacks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    pub address: u64,
    pub mask_events: bool,
}

/// The trap-related state of one vCPU: policy, so pv-server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuTraps {
    pub table: [TrapEntry; 256],
    /// Whether `set_trap_table` installed anything since the last clear (the crash line
    /// says "no trap table" or "no handler").
    pub table_set: bool,
    pub event: Callback,
    pub failsafe: Callback,
    pub syscall: Callback,
    /// Stored as Xen stores them for a 64-bit guest (its 32-bit user code would use them);
    /// fredvisor runs no compat-mode guest code, so they are never entered.
    pub syscall32: Callback,
    pub sysenter: Callback,
    /// `stack_switch`: the stack a trap from user mode enters the kernel on.
    pub kernel_ss: u16,
    pub kernel_sp: u64,
    /// Which half of the guest runs; the nucleus keeps the same flag (mechanism: the CR3
    /// and GS bases), toggled only by the `GuestResume` pv-server sends.
    pub mode: GuestMode,
    /// Whether the nucleus holds user page tables for the vCPU (`NEW_USER_BASEPTR`): an
    /// `iret` to user mode without them crashes the guest.
    pub user_tables: bool,
    /// Virtual CR0.TS (`fpu_taskswitch`).
    pub virtual_ts: bool,
    /// Virtual CR2 (`mov %cr2`), set on each `#PF` bounce.
    pub virtual_cr2: u64,
}

impl Default for VcpuTraps {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuTraps {
    /// Start of day (pv64-abi.md §2.3): no trap table, no callbacks, kernel mode.
    pub const fn new() -> Self {
        Self {
            table: [TrapEntry {
                flags: 0,
                address: 0,
            }; 256],
            table_set: false,
            event: Callback {
                address: 0,
                mask_events: false,
            },
            failsafe: Callback {
                address: 0,
                mask_events: false,
            },
            syscall: Callback {
                address: 0,
                mask_events: false,
            },
            syscall32: Callback {
                address: 0,
                mask_events: false,
            },
            sysenter: Callback {
                address: 0,
                mask_events: false,
            },
            kernel_ss: xen_abi::layout::selector::FLAT_KERNEL_SS,
            kernel_sp: 0,
            mode: GuestMode::Kernel,
            user_tables: false,
            virtual_ts: false,
            virtual_cr2: 0,
        }
    }
}

/// The vCPU's `vcpu_info` (in shared_info): the event mask a bounce saves and sets, and
/// `arch.cr2`.
pub trait VcpuInfoAccess {
    fn upcall_mask(&mut self) -> Result<u8, GuestFault>;
    fn set_upcall_mask(&mut self, mask: u8) -> Result<(), GuestFault>;
    fn set_cr2(&mut self, cr2: u64) -> Result<(), GuestFault>;
}

/// Why a guest cannot go on: the text after `crashed: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// A trap whose vector has no handler.
    NoHandler {
        vector: u8,
        rip: u64,
        error_code: Option<u64>,
        cr2: Option<u64>,
        table_set: bool,
    },
    /// A callback (event, syscall) that is needed but not registered.
    NoCallback {
        what: &'static str,
        rip: u64,
    },
    /// A handler in the hypervisor's window.
    HandlerInHypervisor {
        vector: u8,
        address: u64,
    },
    /// The bounce frame's stack is not the guest's writable memory.
    BadBounceStack {
        vector: u8,
        rsp: u64,
    },
    /// The `iret` frame cannot be read.
    BadIretFrame {
        rsp: u64,
    },
    /// `iret` to a context the guest may not run in.
    IretSelector {
        cs: u64,
        ss: u64,
    },
    IretNonCanonical {
        rip: u64,
    },
    /// `iret` to user mode without user page tables.
    IretNoUserTables,
    /// vcpu_info (shared_info) could not be reached.
    VcpuInfo,
}

/// Names of the exception vectors (`#UD`, …).
pub fn exception_name(vector: u8) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("vector")
}

/// A vector for a line: `#UD`, or `vector 0x21`.
struct VectorName(u8);

impl fmt::Display for VectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 22 {
            f.write_str(exception_name(self.0))
        } else {
            write!(f, "vector {:#x}", self.0)
        }
    }
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoHandler {
                vector,
                rip,
                error_code,
                cr2,
                table_set,
            } => {
                write!(f, "{} at {rip:#x}", VectorName(vector))?;
                match (cr2, error_code) {
                    (Some(cr2), Some(e)) => write!(f, " (address {cr2:#x}, error {e:#x})")?,
                    (None, Some(e)) => write!(f, " (error {e:#x})")?,
                    _ => {}
                }
                if table_set {
                    f.write_str(" with no handler")
                } else {
                    f.write_str(" with no trap table")
                }
            }
            Self::NoCallback { what, rip } => {
                write!(f, "{what} at {rip:#x} with no {what} callback")
            }
            Self::HandlerInHypervisor { vector, address } => write!(
                f,
                "{} handler {address:#x} is in the hypervisor's range",
                VectorName(vector)
            ),
            Self::BadBounceStack { vector, rsp } => write!(
                f,
                "{} bounce frame below {rsp:#x} cannot be written",
                VectorName(vector)
            ),
            Self::BadIretFrame { rsp } => write!(f, "iret frame at {rsp:#x} cannot be read"),
            Self::IretSelector { cs, ss } => {
                write!(f, "iret to cs {cs:#x} ss {ss:#x}, not the guest's")
            }
            Self::IretNonCanonical { rip } => write!(f, "iret to non-canonical rip {rip:#x}"),
            Self::IretNoUserTables => f.write_str("iret to user mode with no user page tables"),
            Self::VcpuInfo => f.write_str("its vcpu_info cannot be reached"),
        }
    }
}

/// True if `va` is canonical.
pub const fn canonical(va: u64) -> bool {
    ((va << 16) as i64 >> 16) as u64 == va
}

#[cfg(test)]
mod tests;
