//! Hand-written encodings of the messages on the event path.
//!
//! Every forwarded event is a `NucleusMessage::Event` one way and, most of the time, a
//! `ServerMessage::Reply(Reply::Resume)` back (the nucleus' ring probe is a `Ping` and the
//! same reply; a guest's hypercall a `Hypercall` and a `Reply::Return`). postcard's generic
//! serializer spends more instructions on these few bytes than the ring and a context switch
//! together, so this module writes and reads exactly these shapes by hand.
//!
//! The wire format keeps one definition, postcard's: the shortcut writes byte for byte what
//! postcard writes, and reads only byte strings that are the *canonical* encoding of such a
//! value (the exact length, a known kind). Anything else it leaves to postcard, which then
//! accepts or rejects it exactly as before. `tests/hostile.rs` compares the two on random
//! values and random bytes.
//!
//! Since protocol 3 a [`Token`] is eight fixed little-endian bytes (not a varint), so the
//! `Event`, `Ping` and `Resume` records have one length each ([`EVENT_RECORD`],
//! [`PING_RECORD`], [`RESUME_RECORD`]): they are written as fixed arrays (word stores, no
//! per-byte capacity checks) and read at fixed offsets after one length comparison.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{MAX_MESSAGE, PROTOCOL_VERSION};
use crate::event::{Event, EventWire};
use crate::message::{Hypercall, HypercallWire, NucleusMessage, Reply, ServerMessage, Token};
use crate::ring::{FixedRecord, Producer, PushError, Slot};

/// An encoded message being built: the version byte, then the body.
pub type Wire = heapless::Vec<u8, MAX_MESSAGE>;

/// A type that crosses a ring. Its shortcut covers its hot variants, or nothing.
pub trait Message: Serialize + DeserializeOwned {
    /// Hands `f` the whole record of `self` (version byte first), written by hand, if `self`
    /// has a shortcut; `None` (and `f` not called) otherwise.
    fn with_hot_record<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R>;

    /// Reads `body` (the record after its version byte) by hand if it is the canonical
    /// encoding of a value with a shortcut; `None` leaves the decision to postcard.
    fn decode_hot(body: &[u8]) -> Option<Self>;
}

// postcard writes an enum variant as its index, a varint; these are the indices of the
// variants with a shortcut (declaration order in `message.rs`). The tests pin them.
const NUCLEUS_EVENT: u8 = 0;
const NUCLEUS_HYPERCALL: u8 = 2;
const NUCLEUS_PING: u8 = 5;
const SERVER_REPLY: u8 = 1;
const REPLY_RESUME: u8 = 0;
const REPLY_RETURN: u8 = 4;

/// An `Event` is a byte string of this length; postcard prefixes it with the length as a
/// varint, one byte since the length is below 128.
const EVENT_LEN_PREFIX: u8 = Event::WIRE_BYTES as u8;
const _: () = assert!(Event::WIRE_BYTES < 128);
/// The same for a `Hypercall`.
const HYPERCALL_LEN_PREFIX: u8 = Hypercall::WIRE_BYTES as u8;
const _: () = assert!(Hypercall::WIRE_BYTES < 128);

const TOKEN_BYTES: usize = 8;
/// `NucleusMessage::Event`: version, variant, token, the event's length, the event.
pub const EVENT_RECORD: usize = 1 + 1 + TOKEN_BYTES + 1 + Event::WIRE_BYTES;
/// `NucleusMessage::Ping`: version, variant, token.
pub const PING_RECORD: usize = 1 + 1 + TOKEN_BYTES;
/// `ServerMessage::Reply(Reply::Resume)`: version, two variants, token.
pub const RESUME_RECORD: usize = 1 + 2 + TOKEN_BYTES;
/// `NucleusMessage::Hypercall`: version, variant, the call's length, the call.
pub const HYPERCALL_RECORD: usize = 1 + 1 + 1 + Hypercall::WIRE_BYTES;
/// `ServerMessage::Reply(Reply::Return)`: version, two variants, token, RAX (both fixed).
pub const RETURN_RECORD: usize = 1 + 2 + TOKEN_BYTES + 8;
const _: () = assert!(EVENT_RECORD <= MAX_MESSAGE);

/// The token at `at` in `bytes` (eight little-endian bytes), if they are there.
#[inline(always)]
fn token_at(bytes: &[u8], at: usize) -> Option<Token> {
    let raw = bytes.get(at..at + TOKEN_BYTES)?;
    Some(Token(u64::from_le_bytes(raw.try_into().ok()?)))
}

/// The record of `ServerMessage::Reply(Reply::Resume { token })`: the reply of every
/// resumed event and of the ring probe.
#[inline(always)]
pub fn resume_record(token: Token) -> [u8; RESUME_RECORD] {
    let mut record = [0u8; RESUME_RECORD];
    record[..3].copy_from_slice(&[PROTOCOL_VERSION, SERVER_REPLY, REPLY_RESUME]);
    record[3..].copy_from_slice(&token.0.to_le_bytes());
    record
}

/// The record of `ServerMessage::Reply(Reply::Return { token, rax })`: a hypercall's answer.
#[inline(always)]
pub fn return_record(token: Token, rax: u64) -> [u8; RETURN_RECORD] {
    let mut record = [0u8; RETURN_RECORD];
    record[..3].copy_from_slice(&[PROTOCOL_VERSION, SERVER_REPLY, REPLY_RETURN]);
    record[3..11].copy_from_slice(&token.0.to_le_bytes());
    record[11..].copy_from_slice(&rax.to_le_bytes());
    record
}

/// Bodies (records after the version byte) of the fixed-size nucleus messages.
const EVENT_BODY: usize = EVENT_RECORD - 1;
const PING_BODY: usize = PING_RECORD - 1;
const HYPERCALL_BODY: usize = HYPERCALL_RECORD - 1;
const _: () = assert!(EVENT_BODY != PING_BODY && EVENT_BODY != HYPERCALL_BODY);
const _: () = assert!(PING_BODY != HYPERCALL_BODY);

/// The first `N` bytes of `bytes` as an array, when `bytes` is exactly that long.
#[inline(always)]
fn exactly<const N: usize>(bytes: &[u8]) -> Option<&[u8; N]> {
    bytes.try_into().ok()
}

/// The record (version byte first) of `NucleusMessage::Event { token, event }` up to the
/// event's wire bytes, which follow at [`EVENT_AT`]: as `put(offset, bytes)` calls, for a
/// local array ([`Message::with_hot_record`]) and for a ring slot ([`push_event_record`]).
#[inline(always)]
fn write_event_header(token: Token, mut put: impl FnMut(usize, &[u8])) {
    put(0, &[PROTOCOL_VERSION, NUCLEUS_EVENT]);
    put(2, &token.0.to_le_bytes());
    put(10, &[EVENT_LEN_PREFIX]);
}

/// Where an `Event` record's event bytes start.
const EVENT_AT: usize = 11;
const _: () = assert!(EVENT_AT + Event::WIRE_BYTES == EVENT_RECORD);

/// Pushes `NucleusMessage::Event { token, event: event() }` into `ring`, written field by
/// field straight into the ring record: the nucleus' `int3` fast path (issue 17), which
/// builds no message and no private copy. `event` is called once, where the record is
/// written (so its fields go from where they are into the ring). A full ring is not counted
/// ([`Producer::try_push_with`]).
#[inline(always)]
pub fn push_event_record(
    ring: &mut Producer<'_>,
    token: Token,
    event: impl Fn() -> Event,
) -> Result<(), PushError> {
    ring.try_push_with(&EventWriter { token, event })
}

/// `NucleusMessage::Event` as a [`FixedRecord`].
struct EventWriter<F> {
    token: Token,
    event: F,
}

impl<F: Fn() -> Event> FixedRecord<EVENT_RECORD> for EventWriter<F> {
    #[inline(always)]
    fn write(&self, slot: &mut Slot<'_, EVENT_RECORD>) {
        write_event_header(self.token, |at, bytes| slot.put(at, bytes));
        (self.event)().write_wire(|at, bytes| slot.put(EVENT_AT + at, bytes));
    }
}

/// Where a `Hypercall` record's call bytes start (after version, variant, length prefix).
const HYPERCALL_AT: usize = 3;
const _: () = assert!(HYPERCALL_AT + Hypercall::WIRE_BYTES == HYPERCALL_RECORD);

/// Pushes `NucleusMessage::Hypercall(call())` into `ring`, written field by field straight
/// into the ring record: the nucleus' hypercall fast path (issue 15 point 8), as
/// [`push_event_record`] is `int3`'s. `call` is called once, where the record is written. A
/// full ring is not counted ([`Producer::try_push_with`]).
#[inline(always)]
pub fn push_hypercall_record(
    ring: &mut Producer<'_>,
    call: impl Fn() -> Hypercall,
) -> Result<(), PushError> {
    ring.try_push_with(&HypercallRecord(call))
}

/// `NucleusMessage::Hypercall` as a [`FixedRecord`].
struct HypercallRecord<F>(F);

impl<F: Fn() -> Hypercall> FixedRecord<HYPERCALL_RECORD> for HypercallRecord<F> {
    #[inline(always)]
    fn write(&self, slot: &mut Slot<'_, HYPERCALL_RECORD>) {
        slot.put(
            0,
            &[PROTOCOL_VERSION, NUCLEUS_HYPERCALL, HYPERCALL_LEN_PREFIX],
        );
        (self.0)().write_wire(|at, bytes| slot.put(HYPERCALL_AT + at, bytes));
    }
}

impl Message for NucleusMessage {
    #[inline(always)]
    fn with_hot_record<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            Self::Event { token, event } => {
                let mut record = [0u8; EVENT_RECORD];
                write_event_header(*token, |at, bytes| {
                    record[at..at + bytes.len()].copy_from_slice(bytes);
                });
                record[EVENT_AT..].copy_from_slice(&event.to_wire());
                Some(f(&record))
            }
            Self::Ping { token } => {
                let mut record = [0u8; PING_RECORD];
                record[0] = PROTOCOL_VERSION;
                record[1] = NUCLEUS_PING;
                record[2..].copy_from_slice(&token.0.to_le_bytes());
                Some(f(&record))
            }
            // A guest's hypercall: the hot message of the PV path (issue 15 point 8).
            Self::Hypercall(call) => {
                let mut record = [0u8; HYPERCALL_RECORD];
                record[..3].copy_from_slice(&[
                    PROTOCOL_VERSION,
                    NUCLEUS_HYPERCALL,
                    HYPERCALL_LEN_PREFIX,
                ]);
                record[3..].copy_from_slice(&call.to_wire());
                Some(f(&record))
            }
            _ => None,
        }
    }

    #[inline(always)]
    fn decode_hot(body: &[u8]) -> Option<Self> {
        HotRecord::of_body(body).map(|record| record.message())
    }
}

/// A fixed-size nucleus record read in place, before anything is decoded: the event path's
/// messages, each field read only when asked for. A server that can answer one from a few
/// fields (fred-server's counted `int3`, the ring probe) answers it from this, without
/// building the `NucleusMessage` (`ipc::rt::Handler::quick`); [`HotRecord::message`] is the
/// decoded message, what [`crate::codec::decode`] gives for the same record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotRecord<'a> {
    /// `NucleusMessage::Event`.
    Event(EventRecord<'a>),
    /// `NucleusMessage::Ping`.
    Ping { token: Token },
    /// `NucleusMessage::Hypercall`.
    Hypercall(HypercallWire<'a>),
}

impl<'a> HotRecord<'a> {
    /// `record` (version byte first) if it is the canonical record of one of these
    /// messages: exactly the records [`crate::codec::decode`] reads by its shortcut (any
    /// other encoding of them is postcard's to judge).
    #[inline(always)]
    pub fn new(record: &'a [u8]) -> Option<Self> {
        match record {
            [PROTOCOL_VERSION, body @ ..] => Self::of_body(body),
            _ => None,
        }
    }

    /// [`HotRecord::new`] of the record after its version byte. One length dispatch picks
    /// the only shape a body of that length can have; then the variant byte (and length
    /// prefix) are compared and the fields are at fixed offsets.
    #[inline(always)]
    fn of_body(body: &'a [u8]) -> Option<Self> {
        match body.len() {
            EVENT_BODY => EventRecord::of_body(exactly(body)?).map(Self::Event),
            PING_BODY => {
                let body = exactly::<PING_BODY>(body)?;
                (body[0] == NUCLEUS_PING).then(|| Self::Ping {
                    token: word_at(body, 1),
                })
            }
            HYPERCALL_BODY => match body.split_first_chunk::<2>()? {
                (&[NUCLEUS_HYPERCALL, HYPERCALL_LEN_PREFIX], call) => {
                    Some(Self::Hypercall(HypercallWire(exactly(call)?)))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The decoded message.
    #[inline(always)]
    pub fn message(&self) -> NucleusMessage {
        match self {
            Self::Event(record) => NucleusMessage::Event {
                token: record.token,
                event: record.event.event(),
            },
            Self::Ping { token } => NucleusMessage::Ping { token: *token },
            Self::Hypercall(call) => NucleusMessage::Hypercall(call.call()),
        }
    }
}

/// A `NucleusMessage::Event` record read in place: its token, and its event as the wire
/// bytes ([`EventWire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRecord<'a> {
    pub token: Token,
    pub event: EventWire<'a>,
}

impl<'a> EventRecord<'a> {
    /// An event record's body (after the version byte), if it is one.
    #[inline(always)]
    fn of_body(body: &'a [u8; EVENT_BODY]) -> Option<Self> {
        let (head, wire) = body.split_at(2 + TOKEN_BYTES);
        if head[0] != NUCLEUS_EVENT || head[1 + TOKEN_BYTES] != EVENT_LEN_PREFIX {
            return None;
        }
        // A byte string `EventWire` refuses is postcard's to report.
        Some(Self {
            token: word_at(body, 1),
            event: EventWire::new(exactly(wire)?).ok()?,
        })
    }
}

/// The token at `at` of a fixed-size body (`at + 8 <= N`, checked when it is compiled).
#[inline(always)]
fn word_at<const N: usize>(bytes: &[u8; N], at: usize) -> Token {
    let mut word = [0u8; TOKEN_BYTES];
    word.copy_from_slice(&bytes[at..at + TOKEN_BYTES]);
    Token(u64::from_le_bytes(word))
}

impl Message for ServerMessage {
    #[inline(always)]
    fn with_hot_record<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            Self::Reply(Reply::Resume { token }) => Some(f(&resume_record(*token))),
            Self::Reply(Reply::Return { token, rax }) => Some(f(&return_record(*token, *rax))),
            _ => None,
        }
    }

    #[inline]
    fn decode_hot(body: &[u8]) -> Option<Self> {
        if let Some(token) = resume_token_of(body) {
            return Some(Self::Reply(Reply::Resume { token }));
        }
        return_of(body).map(|(token, rax)| Self::Reply(Reply::Return { token, rax }))
    }
}

/// The token of a record (version byte included) that is a `ServerMessage::Reply` of
/// `Reply::Resume`, read by hand; `None` for any other record. [`decode`](crate::codec::decode)
/// gives the same answer, but as a whole `ServerMessage`, hundreds of bytes to move around
/// for the reply the nucleus gets most.
#[inline]
pub fn resume_token(record: &[u8]) -> Option<Token> {
    match record {
        [PROTOCOL_VERSION, body @ ..] => resume_token_of(body),
        _ => None,
    }
}

/// The token and RAX of a record (version byte included) that is a
/// `ServerMessage::Reply(Reply::Return)`, read by hand (a guest's hypercall answer, the PV
/// path's `Resume`); `None` for any other record.
#[inline]
pub fn return_reply(record: &[u8]) -> Option<(Token, u64)> {
    match record {
        [PROTOCOL_VERSION, body @ ..] => return_of(body),
        _ => None,
    }
}

#[inline]
fn return_of(body: &[u8]) -> Option<(Token, u64)> {
    // Both fields are 8 fixed bytes (`message::fixed`).
    match body {
        [SERVER_REPLY, REPLY_RETURN, rest @ ..] if rest.len() == 2 * TOKEN_BYTES => {
            let token = token_at(rest, 0)?;
            let rax = token_at(rest, TOKEN_BYTES)?.0;
            Some((token, rax))
        }
        _ => None,
    }
}

/// [`resume_token`] of a body (the record after its version byte): one length comparison,
/// the two variant bytes, the token at its fixed place.
#[inline]
fn resume_token_of(body: &[u8]) -> Option<Token> {
    match body {
        [SERVER_REPLY, REPLY_RESUME, token @ ..] if token.len() == TOKEN_BYTES => {
            token_at(token, 0)
        }
        _ => None,
    }
}

/// A bare `Event` is only sent inside a `NucleusMessage`; decoding one (tests do) is
/// postcard's job.
impl Message for Event {
    fn with_hot_record<R>(&self, _f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        None
    }

    fn decode_hot(_body: &[u8]) -> Option<Self> {
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::codec;
    use crate::event::EventKind;

    fn postcard_record<T: Serialize>(message: &T) -> std::vec::Vec<u8> {
        let mut buf = [0; MAX_MESSAGE];
        codec::encode(message, &mut buf).unwrap().to_vec()
    }

    fn postcard_body<T: Serialize>(message: &T) -> std::vec::Vec<u8> {
        postcard_record(message)[1..].to_vec()
    }

    fn hot_record<T: Message>(message: &T) -> Option<std::vec::Vec<u8>> {
        message.with_hot_record(|record| record.to_vec())
    }

    #[test]
    fn the_shortcuts_write_what_postcard_writes() {
        let event = Event {
            cpu: 1,
            kind: EventKind::Exception {
                vector: 3,
                error_code: 0,
            },
            event_data: 0,
            rip: 0x4006bd,
            cs: 0x2b,
            rflags: 0x202,
            rsp: 0x7fff_f000,
            ss: 0x23,
            from_ring: 3,
            insn_len: 0,
            owner: 1,
        };
        for token in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let token = Token(token);
            let messages = [
                (NucleusMessage::Event { token, event }, EVENT_RECORD),
                (NucleusMessage::Ping { token }, PING_RECORD),
            ];
            for (message, len) in messages {
                let record = postcard_record(&message);
                assert_eq!(record.len(), len, "one length for every token");
                assert_eq!(hot_record(&message), Some(record.clone()), "{message:?}");
                assert_eq!(NucleusMessage::decode_hot(&record[1..]), Some(message));
            }
            let reply = ServerMessage::Reply(Reply::Resume { token });
            let record = postcard_record(&reply);
            assert_eq!(record.len(), RESUME_RECORD);
            assert_eq!(resume_token(&record), Some(token));
            assert_eq!(resume_token(&record[1..]), None, "no version byte");
            assert_eq!(hot_record(&reply), Some(record.clone()));
            assert_eq!(ServerMessage::decode_hot(&record[1..]), Some(reply));
        }
    }

    #[test]
    fn an_event_record_written_in_place_is_postcards_wherever_it_lands() {
        let event = Event {
            cpu: 0,
            kind: EventKind::SoftwareException { vector: 3 },
            event_data: 0,
            rip: 0x40_0100,
            cs: 0x2b,
            rflags: 0x202,
            rsp: 0x7fff_f000,
            ss: 0x23,
            from_ring: 3,
            insn_len: 1,
            owner: 1,
        };
        // Every start position of a 256-byte data area, so some records wrap; the space
        // holds stale 0xff bytes first, so a byte the writer skipped would show.
        for skip in 0..32 {
            let mut storage = crate::ring::RingStorage::<256>::new();
            let (mut producer, mut consumer) = storage.split();
            for _ in 0..skip {
                producer.push(&[0xff; 4]).unwrap();
                consumer.pop().unwrap().unwrap();
            }
            for _ in 0..3 {
                producer.push(&[0xff; 60]).unwrap();
                consumer.pop().unwrap().unwrap();
            }
            let token = Token(0x0102_0304_0506_0708 + skip);
            push_event_record(&mut producer, token, || event).unwrap();
            let record = consumer.pop().unwrap().unwrap();
            assert_eq!(
                &record[..],
                &postcard_record(&NucleusMessage::Event { token, event })[..],
                "{skip}"
            );
        }
        // A ring without room refuses it and counts nothing.
        let mut storage = crate::ring::RingStorage::<128>::new();
        let (mut producer, _consumer) = storage.split();
        producer.push(&[0; 60]).unwrap();
        assert!(matches!(
            push_event_record(&mut producer, Token(1), || event),
            Err(PushError::Full { .. })
        ));
        assert_eq!(producer.dropped(), 0);
    }

    #[test]
    fn a_hypercall_record_written_in_place_is_postcards_wherever_it_lands() {
        let call = Hypercall {
            token: Token(0),
            domain: 0x0203,
            vcpu: 0x0405,
            number: 17,
            args: [0, 1 << 63, 3, u64::MAX, 5, 6],
            rip: 0x1002,
            rsp: 0x1e_000,
            rflags: 0x246,
        };
        // Every start position of a 256-byte data area (8-byte steps), so some records wrap;
        // stale 0xff bytes first, so a byte the writer skipped (the padding) would show.
        for skip in 0..32 {
            let mut storage = crate::ring::RingStorage::<256>::new();
            let (mut producer, mut consumer) = storage.split();
            for _ in 0..skip {
                producer.push(&[0xff; 4]).unwrap();
                consumer.pop().unwrap().unwrap();
            }
            for _ in 0..2 {
                producer.push(&[0xff; 100]).unwrap();
                consumer.pop().unwrap().unwrap();
            }
            let call = Hypercall {
                token: Token(0x0102_0304_0506_0708 + skip),
                ..call
            };
            push_hypercall_record(&mut producer, || call).unwrap();
            let record = consumer.pop().unwrap().unwrap();
            assert_eq!(
                &record[..],
                &postcard_record(&NucleusMessage::Hypercall(call))[..],
                "{skip}"
            );
        }
        // A ring without room refuses it and counts nothing.
        let mut storage = crate::ring::RingStorage::<128>::new();
        let (mut producer, _consumer) = storage.split();
        producer.push(&[0; 60]).unwrap();
        assert!(matches!(
            push_hypercall_record(&mut producer, || call),
            Err(PushError::Full { .. })
        ));
        assert_eq!(producer.dropped(), 0);
    }

    #[test]
    fn hypercalls_and_returns_are_written_as_postcard_writes_them() {
        for value in [
            0,
            1,
            127,
            128,
            0x4_0015,
            u64::from(u32::MAX),
            (1 << 63) - 1,
            1 << 63,
        ] {
            let call = NucleusMessage::Hypercall(crate::message::Hypercall {
                token: Token(value),
                domain: 3,
                vcpu: 0,
                number: 17,
                args: [value, 0, 1, 300, 2, 7],
                rip: 0x1002,
                rsp: value,
                rflags: 0x202,
            });
            let record = postcard_record(&call);
            assert_eq!(record.len(), HYPERCALL_RECORD);
            assert_eq!(hot_record(&call), Some(record.clone()), "{call:?}");
            // Fixed layout: every value reads back, whatever its size.
            assert_eq!(NucleusMessage::decode_hot(&record[1..]), Some(call));
            let ret = ServerMessage::Reply(Reply::Return {
                token: Token(5),
                rax: value,
            });
            let record = postcard_record(&ret);
            assert_eq!(record.len(), RETURN_RECORD);
            assert_eq!(hot_record(&ret), Some(record.clone()));
            assert_eq!(return_reply(&record), Some((Token(5), value)));
            assert_eq!(ServerMessage::decode_hot(&record[1..]), Some(ret));
        }
        // A byte string of another length, or a cut one, is postcard's to refuse.
        for len in [0u8, 95, 97] {
            let mut body = std::vec![NUCLEUS_HYPERCALL, len];
            body.extend(std::vec![0u8; usize::from(len)]);
            assert_eq!(NucleusMessage::decode_hot(&body), None, "{len}");
            assert!(
                codec::decode::<NucleusMessage>(&[&[codec::PROTOCOL_VERSION], &body[..]].concat())
                    .is_err()
            );
        }
        let mut cut = std::vec![NUCLEUS_HYPERCALL, HYPERCALL_LEN_PREFIX];
        cut.extend([0u8; 95]);
        assert_eq!(NucleusMessage::decode_hot(&cut), None);
        // A Return cut short or with trailing bytes.
        for len in [0, 15, 17] {
            let mut body = std::vec![SERVER_REPLY, REPLY_RETURN];
            body.extend(std::vec![0u8; len]);
            assert_eq!(ServerMessage::decode_hot(&body), None, "{len}");
        }
    }

    #[test]
    fn an_event_record_read_in_place_is_the_decoded_event() {
        let event = Event {
            cpu: 2,
            kind: EventKind::SoftwareException { vector: 3 },
            event_data: 0,
            rip: 0x40_1000,
            cs: 0x2b,
            rflags: 0x202,
            rsp: 0x7fff_f000,
            ss: 0x23,
            from_ring: 3,
            insn_len: 1,
            owner: 2,
        };
        let message = NucleusMessage::Event {
            token: Token(0x0102_0304_0506_0708),
            event,
        };
        let record = postcard_record(&message);
        let Some(HotRecord::Event(view)) = HotRecord::new(&record) else {
            panic!("not read as an event record");
        };
        assert_eq!(view.token, Token(0x0102_0304_0506_0708));
        assert_eq!(view.event.event(), event);
        // Not an event record: another message, no version byte, a bad tag, cut or longer.
        let ping = postcard_record(&NucleusMessage::Ping { token: Token(1) });
        assert_eq!(
            HotRecord::new(&ping).map(|hot| hot.message()),
            Some(NucleusMessage::Ping { token: Token(1) })
        );
        assert_eq!(HotRecord::new(&record[1..]), None);
        let mut bad = record.clone();
        bad[11 + 2] = 9;
        assert_eq!(HotRecord::new(&bad), None);
        assert!(codec::decode::<NucleusMessage>(&bad).is_err());
        assert_eq!(HotRecord::new(&record[..record.len() - 1]), None);
        let mut longer = record.clone();
        longer.push(0);
        assert_eq!(HotRecord::new(&longer), None);
    }

    #[test]
    fn other_values_and_odd_bytes_are_left_to_postcard() {
        let kill = ServerMessage::Reply(Reply::Kill { token: Token(1) });
        assert_eq!(hot_record(&kill), None);
        assert_eq!(ServerMessage::decode_hot(&postcard_body(&kill)), None);
        assert_eq!(resume_token(&postcard_record(&kill)), None);
        // A token cut short, trailing bytes, no token at all.
        let resume = postcard_body(&ServerMessage::Reply(Reply::Resume { token: Token(1) }));
        assert_eq!(ServerMessage::decode_hot(&resume[..resume.len() - 1]), None);
        let mut longer = resume.clone();
        longer.push(0);
        assert_eq!(ServerMessage::decode_hot(&longer), None);
        assert_eq!(
            ServerMessage::decode_hot(&[SERVER_REPLY, REPLY_RESUME]),
            None
        );
        let mut event = std::vec![NUCLEUS_EVENT];
        event.extend(1u64.to_le_bytes());
        event.extend([56, 0]);
        assert_eq!(NucleusMessage::decode_hot(&event), None);
        let mut ping = std::vec![NUCLEUS_PING];
        ping.extend(1u64.to_le_bytes());
        ping.push(0);
        assert_eq!(NucleusMessage::decode_hot(&ping), None);
    }
}
