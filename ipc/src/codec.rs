//! Wire format of ring records: a protocol version byte, then the `postcard` encoding.
//!
//! Decoding is where a server's (or the nucleus's) bytes become values, so it is strict: a
//! record that is empty, longer than [`MAX_MESSAGE`], of another protocol version, malformed,
//! or followed by trailing bytes is a typed [`DecodeError`], never a panic or a partial value.
//! The version byte is per record, not per ring, so a server built against another protocol
//! is told so on its first message (its `Hello`) instead of being misread.
//!
//! Also here: `push_message` / `pop_message`, the typed layer over the ring's byte records.
//! The event path's messages (an `Event` out, a plain `Resume` back, the `Ping` probe) take a
//! hand-written shortcut ([`Message`]) that produces and accepts exactly postcard's bytes.

use core::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::hot_path::{
    EVENT_RECORD, EventRecord, HotRecord, Message, Wire, push_event_record, push_hypercall_record,
    resume_token, return_reply,
};
use crate::ring::{Batch, Consumer, MAX_RECORD, Producer, PushError, RingCorrupt};

/// Version of the message protocol; the first byte of every record. Bump it whenever the
/// encoding of an existing message changes (adding a variant at the end of an enum does not
/// change the existing ones, but an old peer cannot decode the new one either: bump it).
pub const PROTOCOL_VERSION: u8 = 4;

/// Largest encoded message, version byte included: exactly one ring record.
pub const MAX_MESSAGE: usize = MAX_RECORD;

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoding does not fit in `limit` bytes (at most [`MAX_MESSAGE`]).
    TooLarge { limit: usize },
    /// The value uses something `postcard` cannot encode (a bug in a message type).
    Unsupported,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "message does not fit in {limit} bytes"),
            Self::Unsupported => f.write_str("message type cannot be encoded"),
        }
    }
}

/// Why a record is not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record has no bytes at all (not even the version).
    Empty,
    /// The record is longer than [`MAX_MESSAGE`].
    TooLong { len: usize },
    /// The version byte is not [`PROTOCOL_VERSION`].
    UnsupportedVersion { found: u8 },
    /// The record ends in the middle of a value.
    Truncated,
    /// A varint runs on past its type's width.
    BadVarint,
    /// A `bool` that is neither 0 nor 1.
    BadBool,
    /// Text that is not UTF-8, or a `char` that is not a scalar value.
    BadText,
    /// An `Option` tag that is neither 0 nor 1.
    BadOption,
    /// An enum variant index beyond `u32`.
    BadVariant,
    /// A value the type rejects: an enum variant index it does not have, a string or list
    /// longer than its bound.
    BadValue,
    /// A complete message followed by `count` more bytes.
    TrailingBytes { count: usize },
    /// Any other `postcard` failure.
    Malformed,
}

impl DecodeError {
    fn from_postcard(error: postcard::Error) -> Self {
        use postcard::Error as P;
        match error {
            P::DeserializeUnexpectedEnd => Self::Truncated,
            P::DeserializeBadVarint => Self::BadVarint,
            P::DeserializeBadBool => Self::BadBool,
            P::DeserializeBadChar | P::DeserializeBadUtf8 => Self::BadText,
            P::DeserializeBadOption => Self::BadOption,
            P::DeserializeBadEnum => Self::BadVariant,
            P::SerdeDeCustom => Self::BadValue,
            // `postcard::Error` is `non_exhaustive`; the rest cannot come from a decoder of
            // our types but must still map to something typed.
            _ => Self::Malformed,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty record"),
            Self::TooLong { len } => write!(f, "record of {len} bytes exceeds {MAX_MESSAGE}"),
            Self::UnsupportedVersion { found } => {
                write!(f, "protocol version {found}, expected {PROTOCOL_VERSION}")
            }
            Self::Truncated => f.write_str("record ends inside a value"),
            Self::BadVarint => f.write_str("varint too long"),
            Self::BadBool => f.write_str("bool is neither 0 nor 1"),
            Self::BadText => f.write_str("text is not valid UTF-8"),
            Self::BadOption => f.write_str("option tag is neither 0 nor 1"),
            Self::BadVariant => f.write_str("enum variant index too large"),
            Self::BadValue => f.write_str("value not valid for its type"),
            Self::TrailingBytes { count } => write!(f, "{count} bytes after the message"),
            Self::Malformed => f.write_str("malformed record"),
        }
    }
}

impl EncodeError {
    /// A postcard serializer error, for a record of at most `limit` bytes.
    fn from_postcard(error: postcard::Error, limit: usize) -> Self {
        match error {
            postcard::Error::SerializeBufferFull => Self::TooLarge { limit },
            _ => Self::Unsupported,
        }
    }
}

/// Encodes `message` (version byte first) into `buf`, using at most [`MAX_MESSAGE`] bytes of
/// it; returns the encoded record.
pub fn encode<'b, T: Serialize + ?Sized>(
    message: &T,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let limit = buf.len().min(MAX_MESSAGE);
    let buf = &mut buf[..limit];
    let Some((version, body)) = buf.split_first_mut() else {
        return Err(EncodeError::TooLarge { limit });
    };
    *version = PROTOCOL_VERSION;
    let body_len = postcard::to_slice(message, body)
        .map_err(|e| EncodeError::from_postcard(e, limit))?
        .len();
    Ok(&buf[..1 + body_len])
}

/// [`encode`] into a `heapless::Vec`, whose storage is not initialised up front: the push
/// paths encode every message into a fresh buffer, and zeroing a `[u8; MAX_MESSAGE]` for it
/// cost more instructions than encoding an `Event`.
///
/// The event path's messages do not come here: the push paths hand their hand-written
/// records ([`Message::with_hot_record`]) to the ring directly.
#[inline(never)]
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    message: &T,
    out: &mut Wire,
) -> Result<(), EncodeError> {
    out.clear();
    // Cannot fail: the vector is empty and holds MAX_MESSAGE >= 1 bytes.
    let _ = out.push(PROTOCOL_VERSION);
    postcard::serialize_with_flavor(message, Output(out))
        .map_err(|e| EncodeError::from_postcard(e, MAX_MESSAGE))
}

/// postcard's output for [`encode_into`].
struct Output<'b>(&'b mut Wire);

impl postcard::ser_flavors::Flavor for Output<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0
            .push(byte)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0
            .extend_from_slice(bytes)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// [`decode`] handing the value to `f` by reference, where it was decoded: the receive
/// paths' messages are 100-300 bytes, and returning one through `Result`s moved a copy of it
/// each time.
///
/// `f` is called in one place, whichever decoder built the value (the shortcut inline,
/// postcard out of line), so it can be inlined into the receive loop.
#[inline(always)]
pub fn decode_with<T: Message, R>(
    record: &[u8],
    f: impl FnOnce(&T) -> R,
) -> Result<R, DecodeError> {
    let hot = match record {
        [PROTOCOL_VERSION, body @ ..] => T::decode_hot(body),
        _ => None,
    };
    let value = match hot {
        Some(value) => value,
        None => decode_cold(record)?,
    };
    Ok(f(&value))
}

/// [`decode_with_postcard`] out of line, for [`decode_with`].
#[cold]
#[inline(never)]
fn decode_cold<T: DeserializeOwned>(record: &[u8]) -> Result<T, DecodeError> {
    decode_with_postcard(record)
}

/// Decodes one record into a `T`, rejecting anything but exactly one well-formed message of
/// this protocol version. The event path's messages take [`Message::decode_hot`] when the
/// record is their canonical encoding; everything else is postcard's, as in
/// [`decode_with_postcard`], so both give the same answer.
#[inline(always)]
pub fn decode<T: Message>(record: &[u8]) -> Result<T, DecodeError> {
    if let [PROTOCOL_VERSION, body @ ..] = record
        && let Some(value) = T::decode_hot(body)
    {
        return Ok(value);
    }
    decode_with_postcard(record)
}

/// [`decode`] without the shortcut: the reference the shortcut is tested against.
pub fn decode_with_postcard<T: DeserializeOwned>(record: &[u8]) -> Result<T, DecodeError> {
    if record.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong { len: record.len() });
    }
    let (&version, body) = record.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(DecodeError::from_postcard)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes { count: rest.len() })
    }
}

/// Why a message was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    Encode(EncodeError),
    Push(PushError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(e) => e.fmt(f),
            Self::Push(e) => e.fmt(f),
        }
    }
}

/// Why no message was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The ring itself cannot be trusted (nothing was consumed).
    Corrupt(RingCorrupt),
    /// A record was consumed but is not a valid message: count it and go on.
    Decode(DecodeError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(e) => e.fmt(f),
            Self::Decode(e) => write!(f, "bad message: {e}"),
        }
    }
}

/// Encodes `message` and hands the record to `push`: the hand-written record of a hot
/// message straight from its fixed array, any other through postcard.
#[inline(always)]
fn push_encoded<T: Message>(
    message: &T,
    mut push: impl FnMut(&[u8]) -> Result<(), PushError>,
) -> Result<(), SendError> {
    if let Some(pushed) = message.with_hot_record(&mut push) {
        return pushed.map_err(SendError::Push);
    }
    let mut record = heapless::Vec::new();
    encode_into(message, &mut record).map_err(SendError::Encode)?;
    push(&record).map_err(SendError::Push)
}

impl Producer<'_> {
    /// Encodes `message` and pushes it ([`Producer::push`]: a full ring counts a drop).
    #[inline]
    pub fn push_message<T: Message>(&mut self, message: &T) -> Result<(), SendError> {
        push_encoded(message, |record| self.push(record))
    }

    /// Encodes `message` and pushes it ([`Producer::try_push`]: a full ring is not counted).
    #[inline]
    pub fn try_push_message<T: Message>(&mut self, message: &T) -> Result<(), SendError> {
        push_encoded(message, |record| self.try_push(record))
    }
}

impl Batch<'_, '_> {
    /// Encodes `message` and adds it to the batch (a full ring is not counted as a drop).
    pub fn try_push_message<T: Message>(&mut self, message: &T) -> Result<(), SendError> {
        push_encoded(message, |record| self.try_push(record))
    }
}

impl Consumer<'_> {
    /// Takes the next record and decodes it; `Ok(None)` if the ring is empty. A record that
    /// does not decode is consumed and reported as [`RecvError::Decode`].
    #[inline(always)]
    pub fn pop_message<T: Message>(&mut self) -> Result<Option<T>, RecvError> {
        match self.pop_with(decode::<T>) {
            Ok(Some(decoded)) => decoded.map(Some).map_err(RecvError::Decode),
            Ok(None) => Ok(None),
            Err(e) => Err(RecvError::Corrupt(e)),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};
    use crate::message::*;
    use crate::ring::RingStorage;
    use heapless::{String, Vec};

    fn event(kind: EventKind) -> Event {
        Event {
            cpu: 3,
            kind,
            event_data: 0xdead_beef,
            rip: 0xffff_8000_0010_2030,
            cs: 0x33,
            rflags: 0x246,
            rsp: 0x7fff_ffff_e000,
            ss: 0x2b,
            from_ring: 3,
            insn_len: 0,
            owner: 7,
        }
    }

    /// The largest value of every field: each message's worst-case encoding.
    fn max_event() -> Event {
        Event {
            cpu: u16::MAX,
            kind: EventKind::Exception {
                vector: u8::MAX,
                error_code: u64::MAX,
            },
            event_data: u64::MAX,
            rip: u64::MAX,
            cs: u16::MAX,
            rflags: u64::MAX,
            rsp: u64::MAX,
            ss: u16::MAX,
            from_ring: u8::MAX,
            insn_len: u8::MAX,
            owner: u32::MAX,
        }
    }

    fn all_gprs(value: u64) -> Vec<GprWrite, GPR_COUNT> {
        use Gpr::*;
        [
            Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rbp, R8, R9, R10, R11, R12, R13, R14, R15,
        ]
        .into_iter()
        .map(|gpr| GprWrite { gpr, value })
        .collect()
    }

    fn nucleus_messages() -> std::vec::Vec<NucleusMessage> {
        let kinds = [
            EventKind::Interrupt { vector: 32 },
            EventKind::Nmi { sources: 0x8001 },
            EventKind::Exception {
                vector: 14,
                error_code: 6,
            },
            EventKind::SoftwareInterrupt { vector: 0x80 },
            EventKind::PrivilegedSoftwareException,
            EventKind::SoftwareException { vector: 3 },
            EventKind::Syscall,
            EventKind::Sysenter,
        ];
        let mut messages: std::vec::Vec<_> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| NucleusMessage::Event {
                token: Token(i as u64),
                event: event(kind),
            })
            .collect();
        messages.push(NucleusMessage::Event {
            token: Token(u64::MAX),
            event: max_event(),
        });
        for reason in [
            DumpReason::DoubleFault,
            DumpReason::MachineCheck,
            DumpReason::Nmi,
        ] {
            messages.push(NucleusMessage::DumpRecord(DumpRecord {
                cpu: 1,
                reason,
                part: 0,
                parts: 2,
                words: Vec::from_slice(&[1, 2, 3]).unwrap(),
            }));
        }
        messages.push(NucleusMessage::DumpRecord(DumpRecord {
            cpu: u16::MAX,
            reason: DumpReason::ServerCrash,
            part: u8::MAX,
            parts: u8::MAX,
            words: Vec::from_slice(&[u64::MAX; DUMP_WORDS_MAX]).unwrap(),
        }));
        messages.push(NucleusMessage::Hypercall(Hypercall {
            token: Token(u64::MAX),
            domain: u16::MAX,
            vcpu: u16::MAX,
            number: u64::MAX,
            args: [u64::MAX; 6],
            rip: u64::MAX,
            rsp: u64::MAX,
            rflags: u64::MAX,
        }));
        messages
    }

    fn server_messages() -> std::vec::Vec<ServerMessage> {
        let changes = ResumeChanges {
            rip: 0x1000,
            rsp: 0x2000,
            rflags: 0x202,
            gprs: Vec::new(),
        };
        let max_changes = ResumeChanges {
            rip: u64::MAX,
            rsp: u64::MAX,
            rflags: u64::MAX,
            gprs: all_gprs(u64::MAX),
        };
        let mut messages = std::vec![
            ServerMessage::Hello(Hello {
                name: ServerName::new("fred-server").unwrap(),
                protocol: 1
            }),
            ServerMessage::Hello(Hello {
                name: ServerName::new(&"n".repeat(SERVER_NAME_MAX)).unwrap(),
                protocol: u8::MAX,
            }),
            ServerMessage::Reply(Reply::Resume { token: Token(1) }),
            ServerMessage::Reply(Reply::ResumeWith {
                token: Token(2),
                changes
            }),
            ServerMessage::Reply(Reply::ResumeWith {
                token: Token(u64::MAX),
                changes: max_changes
            }),
            ServerMessage::Reply(Reply::Kill { token: Token(3) }),
            ServerMessage::Reply(Reply::Restart { token: Token(4) }),
            ServerMessage::Kexec(KexecRequest {
                module: 2,
                generation: 2
            }),
            ServerMessage::Kexec(KexecRequest {
                module: u16::MAX,
                generation: u32::MAX
            }),
        ];
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
        ] {
            let text = String::try_from("fred-server: hello").unwrap();
            messages.push(ServerMessage::Log(LogLine { level, text }));
        }
        let mut long = String::new();
        long.push_str(&"é".repeat(LOG_TEXT_MAX / 2)).unwrap();
        messages.push(ServerMessage::Log(LogLine {
            level: LogLevel::Debug,
            text: long,
        }));
        messages
    }

    fn round_trip<T: Message + PartialEq + fmt::Debug>(message: &T) {
        let mut buf = [0; MAX_MESSAGE];
        let record = encode(message, &mut buf).unwrap();
        assert_eq!(record[0], PROTOCOL_VERSION);
        assert!(record.len() <= MAX_MESSAGE);
        assert_eq!(&decode::<T>(record).unwrap(), message);
        // Every strict prefix is incomplete, never a different message.
        for cut in 1..record.len() {
            assert!(
                decode::<T>(&record[..cut]).is_err(),
                "prefix {cut} of {message:?} decoded"
            );
        }
    }

    #[test]
    fn every_nucleus_message_round_trips() {
        for message in nucleus_messages() {
            round_trip(&message);
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        for message in server_messages() {
            round_trip(&message);
        }
    }

    #[test]
    fn messages_round_trip_through_a_ring() {
        let mut ring = RingStorage::<4096>::new();
        let (mut producer, mut consumer) = ring.split();
        for message in nucleus_messages() {
            producer.push_message(&message).unwrap();
            assert_eq!(
                consumer.pop_message::<NucleusMessage>().unwrap(),
                Some(message)
            );
        }
        for message in server_messages() {
            producer.push_message(&message).unwrap();
            assert_eq!(
                consumer.pop_message::<ServerMessage>().unwrap(),
                Some(message)
            );
        }
        assert_eq!(consumer.pop_message::<ServerMessage>().unwrap(), None);
    }

    #[test]
    fn reply_tokens() {
        let reply = Reply::Kill { token: Token(9) };
        assert!(reply.answers(Token(9)));
        assert!(!reply.answers(Token(8)));
        assert_eq!(Reply::Restart { token: Token(5) }.token(), Token(5));
    }

    #[test]
    fn decode_errors_are_typed() {
        assert_eq!(decode::<ServerMessage>(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode::<ServerMessage>(&[0; 300]),
            Err(DecodeError::TooLong { len: 300 })
        );
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION + 1, 0]),
            Err(DecodeError::UnsupportedVersion {
                found: PROTOCOL_VERSION + 1
            })
        );
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION, 4]),
            Err(DecodeError::BadValue)
        );
        // Reply::Resume { token: 1 } (eight token bytes), then a stray byte.
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xaa]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A token cut short.
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION, 1, 0, 1, 0, 0]),
            Err(DecodeError::Truncated)
        );
        // Reply::ResumeWith's list length as a varint of 11 continuation bytes.
        let mut long = std::vec![PROTOCOL_VERSION, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
        long.extend([0xff; 11]);
        assert_eq!(decode::<ServerMessage>(&long), Err(DecodeError::BadVarint));
        // Hello with a name one byte longer than allowed.
        let mut hello = std::vec![PROTOCOL_VERSION, 0, SERVER_NAME_MAX as u8 + 1];
        hello.extend(std::iter::repeat_n(b'x', SERVER_NAME_MAX + 1));
        hello.push(1);
        assert_eq!(decode::<ServerMessage>(&hello), Err(DecodeError::BadValue));
        // Hello whose name is not UTF-8.
        assert_eq!(
            decode::<ServerMessage>(&[PROTOCOL_VERSION, 0, 1, 0xff, 1]),
            Err(DecodeError::BadText)
        );
        assert_eq!(
            std::format!("{}", DecodeError::TrailingBytes { count: 2 }),
            "2 bytes after the message"
        );
    }

    #[test]
    fn encode_refuses_a_short_buffer() {
        let message = ServerMessage::Reply(Reply::Resume {
            token: Token(u64::MAX),
        });
        assert_eq!(
            encode(&message, &mut [0; 4]),
            Err(EncodeError::TooLarge { limit: 4 })
        );
        assert_eq!(
            encode(&message, &mut []),
            Err(EncodeError::TooLarge { limit: 0 })
        );
    }

    #[test]
    fn a_bad_record_is_consumed_and_reported() {
        let mut ring = RingStorage::<256>::new();
        let (mut producer, mut consumer) = ring.split();
        producer.push(&[PROTOCOL_VERSION, 9]).unwrap();
        producer
            .push_message(&ServerMessage::Reply(Reply::Resume { token: Token(1) }))
            .unwrap();
        assert_eq!(
            consumer.pop_message::<ServerMessage>(),
            Err(RecvError::Decode(DecodeError::BadValue))
        );
        assert_eq!(
            consumer.pop_message::<ServerMessage>(),
            Ok(Some(ServerMessage::Reply(Reply::Resume {
                token: Token(1)
            })))
        );
    }
}
