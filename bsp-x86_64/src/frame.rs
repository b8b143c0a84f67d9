//! The one event frame both deliveries leave on the stack, and its pure decoder.
//!
//! Layout: the 64-byte FRED return state of fred-facts.md §3.3–§3.5 (written by the CPU under
//! FRED, filled in by the IDT stubs under IDT delivery, architecture.md §3), preceded by 16
//! software-pushed qwords (15 GPRs and one spare slot, so that RSP is 16-byte aligned at the
//! `call` into Rust, fred-facts.md §8.4). The asm reaches every field through the `FRAME_*`
//! constants, which come from `offset_of!`; the `const` assertions below pin the parts the
//! hardware fixes.
//!
//! `decode` turns the return state into an [`ipc::EventKind`] once, with one arm per event
//! type (fred-facts.md §3.6) and typed errors for combinations the hardware never produces.
//! `idt_event_type` is the table the IDT stubs encode.

use core::fmt;
use core::mem::{offset_of, size_of};

use ipc::dump::{GprValues, RegisterDump};
use ipc::{Event, EventKind};

use crate::fred::StackLevel;
use crate::gdt::Selector;

/// General-purpose registers as the entry stubs push them: `r15` at the lowest address (the
/// stubs push in reverse order, `reserved` first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs {
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
    /// Padding to 128 bytes: keeps RSP 16-byte aligned at the `call` (the return state is
    /// 64-byte aligned). Stubs write 0.
    pub reserved: u64,
}

impl Gprs {
    /// Every register zero.
    pub const ZERO: Self = Self {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        reserved: 0,
    };
}

/// The CS qword of the return state (frame +0x10, fred-facts.md §3.4).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsQword(u64);

impl CsQword {
    const SL_SHIFT: u32 = 16;
    const WFE: u64 = 1 << 18;

    /// A CS qword as FRED delivery writes it.
    pub fn new(selector: Selector, stack_level: StackLevel, wfe: bool) -> Self {
        let wfe = if wfe { Self::WFE } else { 0 };
        Self(selector.raw() as u64 | ((stack_level.get() as u64) << Self::SL_SHIFT) | wfe)
    }
    /// The raw qword.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Wraps a raw qword (e.g. one read back from memory).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    /// The interrupted CS selector (bits 15:0).
    pub fn selector(self) -> Selector {
        Selector::from_raw(self.0 as u16)
    }
    /// Stack level at the time of the event (bits 17:16; 0 when from ring 3).
    pub fn stack_level(self) -> StackLevel {
        StackLevel::from_low_bits(self.0 >> Self::SL_SHIFT)
    }
    /// CET indirect-branch tracker was waiting for ENDBRANCH (bit 18).
    pub const fn wfe(self) -> bool {
        self.0 & Self::WFE != 0
    }
}

/// Event type (SS qword bits 51:48, fred-facts.md §3.6). Type 1 is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    ExternalInterrupt = 0,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    PrivilegedSoftwareException = 5,
    SoftwareException = 6,
    Other = 7,
}

/// A type number that names no event type (1 is reserved, 8..=15 unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownEventType(pub u8);

impl fmt::Display for UnknownEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event type {} is reserved", self.0)
    }
}

impl TryFrom<u8> for EventType {
    type Error = UnknownEventType;
    fn try_from(raw: u8) -> Result<Self, Self::Error> {
        Ok(match raw {
            0 => Self::ExternalInterrupt,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            7 => Self::Other,
            other => return Err(UnknownEventType(other)),
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExternalInterrupt => "external interrupt",
            Self::Nmi => "NMI",
            Self::HardwareException => "HW exception",
            Self::SoftwareInterrupt => "software interrupt",
            Self::PrivilegedSoftwareException => "privileged SW exception",
            Self::SoftwareException => "SW exception",
            Self::Other => "other",
        })
    }
}

/// The SS qword of the return state (frame +0x28, fred-facts.md §3.5): the interrupted SS
/// and the event information.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsQword(u64);

impl SsQword {
    const STI: u64 = 1 << 16;
    const SWEVENT: u64 = 1 << 17;
    const NMI: u64 = 1 << 18;
    const VECTOR_SHIFT: u32 = 32;
    const TYPE_SHIFT: u32 = 48;
    const ENCLAVE: u64 = 1 << 56;
    const LONG_MODE: u64 = 1 << 57;
    const NESTED: u64 = 1 << 58;
    const INSN_LEN_SHIFT: u32 = 60;

    /// Selector, type and vector; the flag bits start clear. For NMIs (type 2) the NMI bit is
    /// set, so that ERETx unblocks NMIs, and for `INT n`/SYSCALL/SYSENTER the SWEVENT bit, as
    /// FRED delivery does.
    pub fn new(selector: Selector, event_type: EventType, vector: u8) -> Self {
        let mut raw = selector.raw() as u64
            | ((vector as u64) << Self::VECTOR_SHIFT)
            | ((event_type as u64) << Self::TYPE_SHIFT);
        match event_type {
            EventType::Nmi => raw |= Self::NMI,
            EventType::SoftwareInterrupt | EventType::Other => raw |= Self::SWEVENT,
            EventType::ExternalInterrupt
            | EventType::HardwareException
            | EventType::PrivilegedSoftwareException
            | EventType::SoftwareException => {}
        }
        Self(raw)
    }
    /// The raw qword.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Wraps a raw qword.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
    const fn with(self, bit: u64, on: bool) -> Self {
        if on {
            Self(self.0 | bit)
        } else {
            Self(self.0 & !bit)
        }
    }
    /// Sets or clears STI blocking (bit 16).
    pub const fn with_sti(self, on: bool) -> Self {
        self.with(Self::STI, on)
    }
    /// Sets or clears SWEVENT (bit 17).
    pub const fn with_swevent(self, on: bool) -> Self {
        self.with(Self::SWEVENT, on)
    }
    /// Sets or clears the NMI bit (bit 18; on return: unblock NMIs).
    pub const fn with_nmi(self, on: bool) -> Self {
        self.with(Self::NMI, on)
    }
    /// Sets or clears 64-BIT (bit 57).
    pub const fn with_64bit(self, on: bool) -> Self {
        self.with(Self::LONG_MODE, on)
    }
    /// Sets or clears NESTED (bit 58).
    pub const fn with_nested(self, on: bool) -> Self {
        self.with(Self::NESTED, on)
    }
    /// Sets the instruction length (bits 63:60); `None` above 15.
    pub const fn with_insn_len(self, len: u8) -> Option<Self> {
        if len > 15 {
            return None;
        }
        let cleared = self.0 & !(0xf << Self::INSN_LEN_SHIFT);
        Some(Self(cleared | ((len as u64) << Self::INSN_LEN_SHIFT)))
    }

    /// The interrupted SS selector (bits 15:0).
    pub fn selector(self) -> Selector {
        Selector::from_raw(self.0 as u16)
    }
    /// The event arrived in an STI shadow (bit 16).
    pub const fn sti(self) -> bool {
        self.0 & Self::STI != 0
    }
    /// The event was SYSCALL, SYSENTER or `INT n` (bit 17).
    pub const fn swevent(self) -> bool {
        self.0 & Self::SWEVENT != 0
    }
    /// The event was an NMI (bit 18).
    pub const fn nmi(self) -> bool {
        self.0 & Self::NMI != 0
    }
    /// Vector (bits 39:32).
    pub const fn vector(self) -> u8 {
        (self.0 >> Self::VECTOR_SHIFT) as u8
    }
    /// Type, vector and 64-BIT, every other bit clear: what a dispatcher's first tests
    /// compare with [`SsQword::class_of`], one masked compare each.
    pub const fn class(self) -> u64 {
        self.0 & ((0xf << Self::TYPE_SHIFT) | (0xff << Self::VECTOR_SHIFT) | Self::LONG_MODE)
    }
    /// The [`SsQword::class`] of an event of type `event_type` (raw, bits 51:48) and
    /// `vector`, from 64-bit mode or not.
    pub const fn class_of(event_type: u8, vector: u8, long_mode: bool) -> u64 {
        (((event_type & 0xf) as u64) << Self::TYPE_SHIFT)
            | ((vector as u64) << Self::VECTOR_SHIFT)
            | if long_mode { Self::LONG_MODE } else { 0 }
    }
    /// Raw event type number (bits 51:48); see [`EventType`].
    pub const fn event_type_raw(self) -> u8 {
        ((self.0 >> Self::TYPE_SHIFT) & 0xf) as u8
    }
    /// Decoded event type.
    pub fn event_type(self) -> Result<EventType, UnknownEventType> {
        EventType::try_from(self.event_type_raw())
    }
    /// SGX enclave event (bit 56).
    pub const fn enclave(self) -> bool {
        self.0 & Self::ENCLAVE != 0
    }
    /// The CPU was in 64-bit mode (bit 57).
    pub const fn is_64bit(self) -> bool {
        self.0 & Self::LONG_MODE != 0
    }
    /// Exception during the delivery of another event (bit 58).
    pub const fn nested(self) -> bool {
        self.0 & Self::NESTED != 0
    }
    /// Length of the instruction that caused the event (bits 63:60).
    pub const fn insn_len(self) -> u8 {
        (self.0 >> Self::INSN_LEN_SHIFT) as u8
    }
}

/// The 64-byte FRED return state (fred-facts.md §3.3), 64-byte aligned on the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FredState {
    /// Error code, 0 for events without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: CsQword,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: SsQword,
    /// CR2 for `#PF`, DR6 (positive polarity) for `#DB`, NMI sources, else 0 (§3.7).
    pub event_data: u64,
    /// Written as 0.
    pub reserved: u64,
}

/// The whole frame: `&Frame` is RSP at the `call` into the dispatcher.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub gprs: Gprs,
    pub ret: FredState,
}

const _: () = assert!(size_of::<FredState>() == 64);
const _: () = assert!(offset_of!(FredState, error_code) == 0x00);
const _: () = assert!(offset_of!(FredState, rip) == 0x08);
const _: () = assert!(offset_of!(FredState, cs) == 0x10);
const _: () = assert!(offset_of!(FredState, rflags) == 0x18);
const _: () = assert!(offset_of!(FredState, rsp) == 0x20);
const _: () = assert!(offset_of!(FredState, ss) == 0x28);
const _: () = assert!(offset_of!(FredState, event_data) == 0x30);
const _: () = assert!(offset_of!(FredState, reserved) == 0x38);
const _: () = assert!(size_of::<Gprs>() == 128);
const _: () = assert!(FRAME_RET.is_multiple_of(64));
const _: () = assert!(FRAME_SIZE == 192);

/// Size of the frame.
pub const FRAME_SIZE: usize = size_of::<Frame>();
/// Offset of the return state: what FRED delivery's RSP points at.
pub const FRAME_RET: usize = offset_of!(Frame, ret);
pub const FRAME_ERROR_CODE: usize = offset_of!(Frame, ret.error_code);
pub const FRAME_RIP: usize = offset_of!(Frame, ret.rip);
pub const FRAME_CS: usize = offset_of!(Frame, ret.cs);
pub const FRAME_RFLAGS: usize = offset_of!(Frame, ret.rflags);
pub const FRAME_RSP: usize = offset_of!(Frame, ret.rsp);
pub const FRAME_SS: usize = offset_of!(Frame, ret.ss);
pub const FRAME_EVENT_DATA: usize = offset_of!(Frame, ret.event_data);
pub const FRAME_RESERVED: usize = offset_of!(Frame, ret.reserved);
pub const FRAME_R15: usize = offset_of!(Frame, gprs.r15);
pub const FRAME_R14: usize = offset_of!(Frame, gprs.r14);
pub const FRAME_R13: usize = offset_of!(Frame, gprs.r13);
pub const FRAME_R12: usize = offset_of!(Frame, gprs.r12);
pub const FRAME_RBP: usize = offset_of!(Frame, gprs.rbp);
pub const FRAME_RBX: usize = offset_of!(Frame, gprs.rbx);
pub const FRAME_R11: usize = offset_of!(Frame, gprs.r11);
pub const FRAME_R10: usize = offset_of!(Frame, gprs.r10);
pub const FRAME_R9: usize = offset_of!(Frame, gprs.r9);
pub const FRAME_R8: usize = offset_of!(Frame, gprs.r8);
pub const FRAME_RAX: usize = offset_of!(Frame, gprs.rax);
pub const FRAME_RCX: usize = offset_of!(Frame, gprs.rcx);
pub const FRAME_RDX: usize = offset_of!(Frame, gprs.rdx);
pub const FRAME_RSI: usize = offset_of!(Frame, gprs.rsi);
pub const FRAME_RDI: usize = offset_of!(Frame, gprs.rdi);
pub const FRAME_GPRS_RESERVED: usize = offset_of!(Frame, gprs.reserved);

/// A return state no delivery produces: a reserved type or a vector that does not belong
/// to its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Type 1 or 8..=15.
    UnknownType(UnknownEventType),
    /// The vector is impossible for the type (e.g. an external interrupt below 32).
    VectorMismatch { event_type: EventType, vector: u8 },
}

impl From<UnknownEventType> for DecodeError {
    fn from(error: UnknownEventType) -> Self {
        Self::UnknownType(error)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(error) => write!(f, "frame: {error}"),
            Self::VectorMismatch { event_type, vector } => write!(
                f,
                "frame: vector {vector} is impossible for event type {} ({event_type})",
                *event_type as u8
            ),
        }
    }
}

/// Decodes the event of a return state (fred-facts.md §3.6); pure.
pub fn decode(ret: &FredState) -> Result<EventKind, DecodeError> {
    let event_type = ret.ss.event_type()?;
    let vector = ret.ss.vector();
    let mismatch = DecodeError::VectorMismatch { event_type, vector };
    Ok(match event_type {
        EventType::ExternalInterrupt => match vector {
            32..=255 => EventKind::Interrupt { vector },
            _ => return Err(mismatch),
        },
        EventType::Nmi => match vector {
            // The NMI-source bitmap is 16 bits wide (§3.7); higher bits are zero.
            2 => EventKind::Nmi {
                sources: (ret.event_data & 0xffff) as u16,
            },
            _ => return Err(mismatch),
        },
        EventType::HardwareException => match vector {
            // Vector 2 is always type 2 (NMI).
            0 | 1 | 3..=31 => EventKind::Exception {
                vector,
                error_code: ret.error_code,
            },
            _ => return Err(mismatch),
        },
        EventType::SoftwareInterrupt => EventKind::SoftwareInterrupt { vector },
        EventType::PrivilegedSoftwareException => match vector {
            1 => EventKind::PrivilegedSoftwareException,
            _ => return Err(mismatch),
        },
        EventType::SoftwareException => match vector {
            3 | 4 => EventKind::SoftwareException { vector },
            _ => return Err(mismatch),
        },
        EventType::Other => match vector {
            1 => EventKind::Syscall,
            2 => EventKind::Sysenter,
            _ => return Err(mismatch),
        },
    })
}

impl FredState {
    /// Decodes this return state; see [`decode`].
    pub fn decode(&self) -> Result<EventKind, DecodeError> {
        decode(self)
    }
}

impl Frame {
    /// Every register zero: the start of a frame built by hand (a thread's first entry).
    pub const ZERO: Self = Self {
        gprs: Gprs::ZERO,
        ret: FredState {
            error_code: 0,
            rip: 0,
            cs: CsQword(0),
            rflags: 0,
            rsp: 0,
            ss: SsQword(0),
            event_data: 0,
            reserved: 0,
        },
    };
}

impl Frame {
    /// The decoded event with its interrupted context, ready to handle or forward.
    pub fn event(&self, cpu: u16, owner: u32) -> Result<Event, DecodeError> {
        Ok(self.event_of_kind(decode(&self.ret)?, cpu, owner))
    }

    /// [`Frame::event`] for a frame whose kind the caller knows already (a fast path that
    /// recognised it from the raw bits): the same `Event`, without the decode.
    #[inline(always)]
    pub fn event_of_kind(&self, kind: EventKind, cpu: u16, owner: u32) -> Event {
        let cs = self.ret.cs.selector();
        Event {
            cpu,
            kind,
            event_data: self.ret.event_data,
            rip: self.ret.rip,
            cs: cs.raw(),
            rflags: self.ret.rflags,
            rsp: self.ret.rsp,
            ss: self.ret.ss.selector().raw(),
            from_ring: cs.rpl(),
            insn_len: self.ret.ss.insn_len(),
            owner,
        }
    }
}

impl Frame {
    /// Copies what the frame knows into a register dump: event, return state and GPRs. The
    /// caller adds the rest (CPU, delivery, stack, control registers, bases, stack words).
    pub fn fill_dump(&self, dump: &mut RegisterDump) {
        let ret = &self.ret;
        let g = &self.gprs;
        dump.event_type = ret.ss.event_type_raw();
        dump.vector = ret.ss.vector();
        dump.error_code = ret.error_code;
        dump.event_data = ret.event_data;
        dump.event = decode(ret).ok();
        dump.rip = ret.rip;
        dump.cs = ret.cs.selector().raw();
        dump.ss = ret.ss.selector().raw();
        dump.rflags = ret.rflags;
        dump.rsp = ret.rsp;
        dump.gprs = GprValues {
            rax: g.rax,
            rbx: g.rbx,
            rcx: g.rcx,
            rdx: g.rdx,
            rsi: g.rsi,
            rdi: g.rdi,
            rbp: g.rbp,
            r8: g.r8,
            r9: g.r9,
            r10: g.r10,
            r11: g.r11,
            r12: g.r12,
            r13: g.r13,
            r14: g.r14,
            r15: g.r15,
        };
    }
}

/// The event type the IDT stubs write for `vector`: what FRED would report for the same
/// event when it comes from hardware (INT3/INTO get type 6, NMI type 2, other exceptions
/// type 3, everything from 32 up type 0). The IDT cannot tell `INT n` from a hardware
/// event, so the table assumes hardware. The asm stubs encode the same table.
pub const fn idt_event_type(vector: u8) -> EventType {
    match vector {
        2 => EventType::Nmi,
        3 | 4 => EventType::SoftwareException,
        0..=31 => EventType::HardwareException,
        _ => EventType::ExternalInterrupt,
    }
}

/// True for the exception vectors whose IDT delivery pushes an error code (#DF, #TS, #NP,
/// #SS, #GP, #PF, #AC, #CP, #VC, #SX); the IDT stubs push a zero for every other vector.
pub const fn idt_pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests;
