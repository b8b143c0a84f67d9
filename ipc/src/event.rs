//! The decoded event: what the nucleus learnt from one frame, once.
//!
//! Both deliveries (IDT stubs and FRED entry stubs) leave the same frame; `bsp-x86_64`'s
//! decoder turns it into an [`EventKind`] and the nucleus wraps it into an [`Event`] before
//! it handles it or forwards it to the owning server. The kinds follow the FRED event types
//! (fred-facts.md §3.6), so the IDT path cannot produce anything FRED could not.
use serde::{Deserialize, Serialize};

/// What happened, by FRED event type (fred-facts.md §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// Type 0: an external (maskable) interrupt, vectors 32..=255.
    Interrupt { vector: u8 },
    /// Type 2: a non-maskable interrupt (vector 2). `sources` is the NMI-source bitmap
    /// (FRED event data; 0 where the CPU does not report it).
    Nmi { sources: u16 },
    /// Type 3: a hardware exception, vector 0..=31, with its error code (0 where the vector
    /// has none).
    Exception { vector: u8, error_code: u64 },
    /// Type 4: `INT n`.
    SoftwareInterrupt { vector: u8 },
    /// Type 5: `INT1` (ICEBP), vector 1.
    PrivilegedSoftwareException,
    /// Type 6: `INT3` (vector 3) or `INTO` (vector 4).
    SoftwareException { vector: u8 },
    /// Type 7 vector 1: the `syscall` instruction.
    Syscall,
    /// Type 7 vector 2: the `sysenter` instruction.
    Sysenter,
}

impl EventKind {
    /// The vector as the hardware numbers it (syscall = 1, sysenter = 2 as in FRED).
    pub const fn vector(&self) -> u8 {
        match *self {
            Self::Interrupt { vector }
            | Self::Exception { vector, .. }
            | Self::SoftwareInterrupt { vector }
            | Self::SoftwareException { vector } => vector,
            Self::Nmi { .. } => 2,
            Self::PrivilegedSoftwareException | Self::Syscall => 1,
            Self::Sysenter => 2,
        }
    }

    /// The FRED event type number (fred-facts.md §3.6).
    pub const fn fred_type(&self) -> u8 {
        match self {
            Self::Interrupt { .. } => 0,
            Self::Nmi { .. } => 2,
            Self::Exception { .. } => 3,
            Self::SoftwareInterrupt { .. } => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException { .. } => 6,
            Self::Syscall | Self::Sysenter => 7,
        }
    }
}

/// One decoded event with the interrupted context, as the nucleus forwards it to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// CPU the event arrived on.
    pub cpu: u16,
    /// What happened.
    pub kind: EventKind,
    /// FRED event data: CR2 for `#PF`, DR6 (positive polarity) for `#DB`, else 0.
    pub event_data: u64,
    pub rip: u64,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    /// Privilege level of the interrupted context (the RPL of `cs`).
    pub from_ring: u8,
    /// Thread (server) or guest the event belongs to; 0 for the nucleus itself.
    pub owner: u32,
}
