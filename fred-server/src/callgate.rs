//! `#GP[sel]` from a server: a far transfer through a selector (design note "Call Gates",
//! architecture.md §6).
//!
//! FRED removes call gates; a far call through one raises `#GP` with the gate's selector as
//! the error code, the same under IDT and FRED delivery. Guests' call gates are emulated by
//! pv-server, their fault handler (`pv-server/src/callgate/`, issue 18: it holds the guest's
//! descriptor tables, mode, stacks and memory access). A server has no descriptor table of
//! its own (LDTR is null, the GDT holds the nucleus' entries), so this module only
//! recognises the event as a [`CallGateRequest`] and refuses it with
//! [`CallGateError::NoGates`]; the thread is killed with that reason.

use core::fmt;

use ipc::{Event, EventKind};

/// `#GP`.
const GENERAL_PROTECTION: u8 = 13;

/// Which descriptor table a selector error code points into (SDM vol. 3 §6.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorTable {
    Gdt,
    Ldt,
}

/// A selector error code (SDM vol. 3 §6.13): EXT (bit 0), IDT (bit 1), TI (bit 2), index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectorErrorCode(u16);

impl SelectorErrorCode {
    /// A `#GP` error code that names a GDT/LDT selector: nonzero, IDT bit clear, bits 63:16
    /// clear. `None` for anything else (a plain `#GP(0)`, an IDT vector reference).
    pub fn try_from_raw(error_code: u64) -> Option<Self> {
        let code = u16::try_from(error_code).ok()?;
        (code != 0 && code & 0b10 == 0).then_some(Self(code))
    }

    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    pub const fn table(self) -> DescriptorTable {
        if self.0 & 0b100 != 0 {
            DescriptorTable::Ldt
        } else {
            DescriptorTable::Gdt
        }
    }

    /// The fault came from an external event, not from the instruction.
    pub const fn external(self) -> bool {
        self.0 & 1 != 0
    }
}

impl fmt::Display for SelectorErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = match self.table() {
            DescriptorTable::Gdt => "GDT",
            DescriptorTable::Ldt => "LDT",
        };
        write!(f, "#GP[{table} index {}", self.index())?;
        if self.external() {
            f.write_str(" EXT")?;
        }
        f.write_str("]")
    }
}

/// A far transfer that may have gone through a call gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallGateRequest {
    pub owner: u32,
    pub selector: SelectorErrorCode,
    /// The far `call`/`jmp` instruction.
    pub rip: u64,
    pub cs: u16,
}

/// Recognises a `#GP[sel]` from Ring3 that may be a call through a gate.
pub fn decode(event: &Event) -> Option<CallGateRequest> {
    match event.kind {
        EventKind::Exception {
            vector: GENERAL_PROTECTION,
            error_code,
        } if event.from_ring == 3 => {
            let selector = SelectorErrorCode::try_from_raw(error_code)?;
            (!selector.external()).then_some(CallGateRequest {
                owner: event.owner,
                selector,
                rip: event.rip,
                cs: event.cs,
            })
        }
        _ => None,
    }
}

/// Why a call gate was not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallGateError {
    NoGates,
}

impl fmt::Display for CallGateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGates => f.write_str("a server has no call gates"),
        }
    }
}

/// What a server's far transfer through a selector gets: refused, it has no gates.
pub fn emulate(_request: &CallGateRequest) -> Result<ipc::message::ResumeChanges, CallGateError> {
    Err(CallGateError::NoGates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gp(error_code: u64) -> Event {
        Event {
            cpu: 0,
            kind: EventKind::Exception {
                vector: 13,
                error_code,
            },
            event_data: 0,
            rip: 0x40_2000,
            cs: 0x33,
            rflags: 0x202,
            rsp: 0,
            ss: 0x2b,
            from_ring: 3,
            insn_len: 0,
            owner: 5,
        }
    }

    #[test]
    fn decode_keeps_gdt_and_ldt_selectors_only() {
        let gdt = decode(&gp(12 << 3)).unwrap();
        assert_eq!(
            (gdt.selector.index(), gdt.selector.table()),
            (12, DescriptorTable::Gdt)
        );
        assert_eq!(gdt.selector.to_string(), "#GP[GDT index 12]");
        let ldt = decode(&gp((3 << 3) | 0b100)).unwrap();
        assert_eq!(ldt.selector.table(), DescriptorTable::Ldt);
        assert_eq!(decode(&gp(0)), None); // plain #GP(0)
        assert_eq!(decode(&gp((13 << 3) | 0b10)), None); // IDT vector reference
        assert_eq!(decode(&gp(1 << 20)), None); // reserved bits
        assert_eq!(decode(&gp((12 << 3) | 1)), None); // external event
        let mut pf = gp(12 << 3);
        pf.kind = EventKind::Exception {
            vector: 14,
            error_code: 12 << 3,
        };
        assert_eq!(decode(&pf), None);
        assert_eq!(emulate(&gdt), Err(CallGateError::NoGates));
        assert_eq!(
            CallGateError::NoGates.to_string(),
            "a server has no call gates"
        );
    }
}
