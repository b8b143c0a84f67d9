//! The decoded event: what the nucleus learnt from one frame, once.
//!
//! Both deliveries (IDT stubs and FRED entry stubs) leave the same frame; `bsp-x86_64`'s
//! decoder turns it into an [`EventKind`] and the nucleus wraps it into an [`Event`] before
//! it handles it or forwards it to the owning server. The kinds follow the FRED event types
//! (fred-facts.md §3.6), so the IDT path cannot produce anything FRED could not.
use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

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
///
/// On the wire an `Event` is one fixed-layout byte string ([`Event::WIRE_BYTES`] bytes,
/// little endian, see [`Event::to_wire`]) inside the postcard record, not a struct of
/// varints: it is the hottest message (every forwarded fault and `int3`), and this way its
/// encoding is one copy instead of a dozen varint loops (measured: ~550 → ~60 instructions
/// to encode). Decoding checks the length and the kind tag like any other field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// FRED's instruction length for software events and `syscall` (SS qword bits 63:60), so
    /// a refused `INT n` can be pointed back at its instruction; 0 under the IDT, where the
    /// CPU reports no length (a refused `INT n` arrives as `#GP` at the instruction itself).
    pub insn_len: u8,
    /// Thread (server) or guest the event belongs to; 0 for the nucleus itself.
    pub owner: u32,
}

/// Kind tags on the wire (the FRED event type where there is one).
mod tag {
    pub const INTERRUPT: u8 = 0;
    pub const NMI: u8 = 2;
    pub const EXCEPTION: u8 = 3;
    pub const SOFTWARE_INTERRUPT: u8 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u8 = 5;
    pub const SOFTWARE_EXCEPTION: u8 = 6;
    pub const SYSCALL: u8 = 7;
    pub const SYSENTER: u8 = 8;
}

/// Why wire bytes are not an `Event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventWireError {
    Length(usize),
    Kind(u8),
}

impl fmt::Display for EventWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(f, "event is {len} bytes, expected {}", Event::WIRE_BYTES),
            Self::Kind(tag) => write!(f, "event kind tag {tag} is unknown"),
        }
    }
}

impl Event {
    /// Bytes of the wire form.
    pub const WIRE_BYTES: usize = 56;

    /// The fixed little-endian layout: cpu u16, kind tag u8, vector u8, kind payload u64
    /// (error code or NMI sources), event data, rip, rflags, rsp (u64 each), cs u16, ss u16,
    /// from_ring u8, insn_len u8, two zero bytes, owner u32.
    pub fn to_wire(&self) -> [u8; Self::WIRE_BYTES] {
        let mut w = [0u8; Self::WIRE_BYTES];
        self.write_wire(|at, bytes| w[at..at + bytes.len()].copy_from_slice(bytes));
        w
    }

    /// The wire form as `put(offset, bytes)` calls that cover every one of its bytes once,
    /// in place wherever `put` writes (a ring slot: `ipc::codec::push_event_record`). Inlined:
    /// a caller that knows the kind gets no `match` on it.
    #[inline(always)]
    pub fn write_wire(&self, mut put: impl FnMut(usize, &[u8])) {
        let (tag, vector, payload) = match self.kind {
            EventKind::Interrupt { vector } => (tag::INTERRUPT, vector, 0),
            EventKind::Nmi { sources } => (tag::NMI, 2, u64::from(sources)),
            EventKind::Exception { vector, error_code } => (tag::EXCEPTION, vector, error_code),
            EventKind::SoftwareInterrupt { vector } => (tag::SOFTWARE_INTERRUPT, vector, 0),
            EventKind::PrivilegedSoftwareException => (tag::PRIVILEGED_SOFTWARE_EXCEPTION, 1, 0),
            EventKind::SoftwareException { vector } => (tag::SOFTWARE_EXCEPTION, vector, 0),
            EventKind::Syscall => (tag::SYSCALL, 1, 0),
            EventKind::Sysenter => (tag::SYSENTER, 2, 0),
        };
        put(0, &self.cpu.to_le_bytes());
        put(2, &[tag, vector]);
        put(4, &payload.to_le_bytes());
        put(12, &self.event_data.to_le_bytes());
        put(20, &self.rip.to_le_bytes());
        put(28, &self.rflags.to_le_bytes());
        put(36, &self.rsp.to_le_bytes());
        put(44, &self.cs.to_le_bytes());
        put(46, &self.ss.to_le_bytes());
        put(48, &[self.from_ring, self.insn_len, 0, 0]);
        put(52, &self.owner.to_le_bytes());
    }

    /// Parses the wire form; every byte string of the right length with a known tag is an
    /// event (the values are allegations the receiver judges).
    pub fn from_wire(w: &[u8]) -> Result<Self, EventWireError> {
        let w: &[u8; Self::WIRE_BYTES] =
            w.try_into().map_err(|_| EventWireError::Length(w.len()))?;
        Self::from_wire_array(w)
    }

    /// [`Event::from_wire`] of bytes whose length is already known: fixed offsets, no bounds
    /// checks, inline (the receive path of every forwarded event decodes one).
    #[inline(always)]
    pub fn from_wire_array(w: &[u8; Self::WIRE_BYTES]) -> Result<Self, EventWireError> {
        EventWire::new(w).map(|wire| wire.event())
    }
}

/// An event's wire form read in place ([`Event::to_wire`] has the layout): each accessor
/// reads its field at its fixed offset, so a server that needs three fields of an event
/// reads three, not the fifteen of an [`Event`]. Only bytes with a known kind tag are one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWire<'a>(&'a [u8; Event::WIRE_BYTES]);

impl<'a> EventWire<'a> {
    /// `w` if its kind tag is known (every such byte string is an event, as in
    /// [`Event::from_wire`]).
    #[inline(always)]
    pub fn new(w: &'a [u8; Event::WIRE_BYTES]) -> Result<Self, EventWireError> {
        // The tags are 0 and 2..=8 (`tag`): the FRED event types, sysenter after them.
        if matches!(w[2], 1 | 9..) {
            return Err(EventWireError::Kind(w[2]));
        }
        Ok(Self(w))
    }

    #[inline(always)]
    fn u16_at(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.0[i], self.0[i + 1]])
    }

    #[inline(always)]
    fn u64_at(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[i..i + 8]);
        u64::from_le_bytes(b)
    }

    /// What happened ([`Event::kind`]).
    #[inline(always)]
    pub fn kind(&self) -> EventKind {
        let (vector, payload) = (self.0[3], self.u64_at(4));
        match self.0[2] {
            tag::INTERRUPT => EventKind::Interrupt { vector },
            tag::NMI => EventKind::Nmi {
                sources: payload as u16,
            },
            tag::EXCEPTION => EventKind::Exception {
                vector,
                error_code: payload,
            },
            tag::SOFTWARE_INTERRUPT => EventKind::SoftwareInterrupt { vector },
            tag::PRIVILEGED_SOFTWARE_EXCEPTION => EventKind::PrivilegedSoftwareException,
            tag::SOFTWARE_EXCEPTION => EventKind::SoftwareException { vector },
            tag::SYSCALL => EventKind::Syscall,
            // `new` let no other tag through.
            _ => EventKind::Sysenter,
        }
    }

    /// Whether the event is a software exception (`int3`, `into`) with this vector: two
    /// byte comparisons, without building the kind.
    #[inline(always)]
    pub fn is_software_exception(&self, vector: u8) -> bool {
        self.0[2] == tag::SOFTWARE_EXCEPTION && self.0[3] == vector
    }

    /// [`Event::from_ring`].
    #[inline(always)]
    pub fn from_ring(&self) -> u8 {
        self.0[48]
    }

    /// [`Event::owner`].
    #[inline(always)]
    pub fn owner(&self) -> u32 {
        u32::from_le_bytes([self.0[52], self.0[53], self.0[54], self.0[55]])
    }

    /// The whole event.
    #[inline(always)]
    pub fn event(&self) -> Event {
        Event {
            cpu: self.u16_at(0),
            kind: self.kind(),
            event_data: self.u64_at(12),
            rip: self.u64_at(20),
            rflags: self.u64_at(28),
            rsp: self.u64_at(36),
            cs: self.u16_at(44),
            ss: self.u16_at(46),
            from_ring: self.0[48],
            insn_len: self.0[49],
            owner: self.owner(),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WireVisitor;
        impl<'de> Visitor<'de> for WireVisitor {
            type Value = Event;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} event bytes", Event::WIRE_BYTES)
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Event, E> {
                Event::from_wire(bytes).map_err(|e| match e {
                    EventWireError::Length(len) => E::invalid_length(len, &self),
                    EventWireError::Kind(tag) => {
                        E::invalid_value(de::Unexpected::Unsigned(u64::from(tag)), &self)
                    }
                })
            }
            fn visit_borrowed_bytes<E: de::Error>(self, bytes: &'de [u8]) -> Result<Event, E> {
                self.visit_bytes(bytes)
            }
        }
        deserializer.deserialize_bytes(WireVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: EventKind) -> Event {
        Event {
            cpu: 0x0102,
            kind,
            event_data: 0xdead_beef_0000_0001,
            rip: 0xffff_ffff_8020_1234,
            cs: 0x2b,
            rflags: 0x246,
            rsp: 0x7fff_ff00_0000,
            ss: 0x23,
            from_ring: 3,
            insn_len: 2,
            owner: 0xa1b2_c3d4,
        }
    }

    #[test]
    fn every_kind_round_trips_through_the_wire_form() {
        let kinds = [
            EventKind::Interrupt { vector: 32 },
            EventKind::Nmi { sources: 0x8001 },
            EventKind::Exception {
                vector: 14,
                error_code: u64::MAX,
            },
            EventKind::SoftwareInterrupt { vector: 0x80 },
            EventKind::PrivilegedSoftwareException,
            EventKind::SoftwareException { vector: 3 },
            EventKind::Syscall,
            EventKind::Sysenter,
        ];
        for kind in kinds {
            let event = sample(kind);
            assert_eq!(Event::from_wire(&event.to_wire()), Ok(event));
            let mut buf = [0u8; 128];
            let bytes = postcard::to_slice(&event, &mut buf).expect("fits");
            assert_eq!(
                bytes.len(),
                1 + Event::WIRE_BYTES,
                "length prefix + fixed layout"
            );
            assert_eq!(postcard::from_bytes::<Event>(bytes), Ok(event));
        }
    }

    #[test]
    fn the_wire_read_in_place_gives_the_decoded_fields() {
        let kinds = [
            EventKind::Interrupt { vector: 32 },
            EventKind::Nmi { sources: 7 },
            EventKind::Exception {
                vector: 13,
                error_code: 0x18,
            },
            EventKind::SoftwareInterrupt { vector: 0x80 },
            EventKind::PrivilegedSoftwareException,
            EventKind::SoftwareException { vector: 3 },
            EventKind::SoftwareException { vector: 4 },
            EventKind::Syscall,
            EventKind::Sysenter,
        ];
        for kind in kinds {
            let event = sample(kind);
            let wire = event.to_wire();
            let view = EventWire::new(&wire).unwrap();
            assert_eq!(view.event(), event);
            assert_eq!(view.kind(), kind);
            assert_eq!(
                (view.owner(), view.from_ring()),
                (event.owner, event.from_ring)
            );
            for vector in [3, 4] {
                assert_eq!(
                    view.is_software_exception(vector),
                    kind == EventKind::SoftwareException { vector }
                );
            }
        }
        // Every tag: the view exists exactly where `from_wire` decodes.
        let mut wire = sample(EventKind::Syscall).to_wire();
        for tag in 0..=255 {
            wire[2] = tag;
            assert_eq!(
                EventWire::new(&wire).map(|view| view.event()),
                Event::from_wire(&wire),
                "tag {tag}"
            );
        }
    }

    #[test]
    fn bad_length_and_unknown_tags_are_refused() {
        let mut wire = sample(EventKind::Syscall).to_wire();
        assert_eq!(
            Event::from_wire(&wire[..55]),
            Err(EventWireError::Length(55))
        );
        wire[2] = 9;
        assert_eq!(Event::from_wire(&wire), Err(EventWireError::Kind(9)));
        assert_eq!(
            EventWireError::Kind(9).to_string(),
            "event kind tag 9 is unknown"
        );
    }
}
