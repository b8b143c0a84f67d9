//! Hand-written encodings of the two messages on the event path.
//!
//! Every forwarded event is a `NucleusMessage::Event` one way and, most of the time, a
//! `ServerMessage::Reply(Reply::Resume)` back (the nucleus' ring probe is a `Ping` and the
//! same reply). postcard's generic serializer spends more instructions on these few bytes
//! than the ring and a context switch together, so this module writes and reads exactly these
//! shapes by hand.
//!
//! The wire format keeps one definition, postcard's: the shortcut writes byte for byte what
//! postcard writes, and reads only byte strings that are the *canonical* encoding of such a
//! value (shortest varints, the exact length). Anything else it leaves to postcard, which then
//! accepts or rejects it exactly as before. `tests/hostile.rs` compares the two on random
//! values and random bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::MAX_MESSAGE;
use crate::event::Event;
use crate::message::{Hypercall, NucleusMessage, Reply, ServerMessage, Token};

/// An encoded message being built: the version byte, then the body.
pub type Wire = heapless::Vec<u8, MAX_MESSAGE>;

/// A type that crosses a ring. Its shortcut covers its hot variants, or nothing.
pub trait Message: Serialize + DeserializeOwned {
    /// Appends the body of `self` to `out` by hand; `false` if `self` has no shortcut (then
    /// `out` may hold a partial body, which the caller discards).
    fn encode_hot(&self, out: &mut Wire) -> bool;

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

impl Message for NucleusMessage {
    #[inline]
    fn encode_hot(&self, out: &mut Wire) -> bool {
        match self {
            Self::Event { token, event } => {
                out.push(NUCLEUS_EVENT).is_ok()
                    && put_varint(out, token.0)
                    && out.push(EVENT_LEN_PREFIX).is_ok()
                    && out.extend_from_slice(&event.to_wire()).is_ok()
            }
            Self::Ping { token } => out.push(NUCLEUS_PING).is_ok() && put_varint(out, token.0),
            // A guest's hypercall: the hot message of the PV path (issue 15 point 8).
            Self::Hypercall(call) => {
                out.extend_from_slice(&[NUCLEUS_HYPERCALL, HYPERCALL_LEN_PREFIX])
                    .is_ok()
                    && out.extend_from_slice(&call.to_wire()).is_ok()
            }
            _ => false,
        }
    }

    #[inline]
    fn decode_hot(body: &[u8]) -> Option<Self> {
        let (&variant, rest) = body.split_first()?;
        if variant == NUCLEUS_HYPERCALL {
            return match rest.split_first()? {
                (&HYPERCALL_LEN_PREFIX, bytes) => Hypercall::from_wire(bytes).map(Self::Hypercall),
                _ => None,
            };
        }
        let (token, rest) = take_varint(rest)?;
        let token = Token(token);
        match variant {
            NUCLEUS_EVENT => match rest.split_first()? {
                (&EVENT_LEN_PREFIX, bytes) if bytes.len() == Event::WIRE_BYTES => {
                    // A byte string `from_wire` refuses is postcard's to report.
                    let event = Event::from_wire(bytes).ok()?;
                    Some(Self::Event { token, event })
                }
                _ => None,
            },
            NUCLEUS_PING if rest.is_empty() => Some(Self::Ping { token }),
            _ => None,
        }
    }
}

impl Message for ServerMessage {
    #[inline]
    fn encode_hot(&self, out: &mut Wire) -> bool {
        match self {
            Self::Reply(Reply::Resume { token }) => {
                out.extend_from_slice(&[SERVER_REPLY, REPLY_RESUME]).is_ok()
                    && put_varint(out, token.0)
            }
            Self::Reply(Reply::Return { token, rax }) => {
                out.extend_from_slice(&[SERVER_REPLY, REPLY_RETURN]).is_ok()
                    && out.extend_from_slice(&token.0.to_le_bytes()).is_ok()
                    && out.extend_from_slice(&rax.to_le_bytes()).is_ok()
            }
            _ => false,
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
        [crate::codec::PROTOCOL_VERSION, body @ ..] => resume_token_of(body),
        _ => None,
    }
}

/// The token and RAX of a record (version byte included) that is a
/// `ServerMessage::Reply(Reply::Return)`, read by hand (a guest's hypercall answer, the PV
/// path's `Resume`); `None` for any other record.
#[inline]
pub fn return_reply(record: &[u8]) -> Option<(Token, u64)> {
    match record {
        [crate::codec::PROTOCOL_VERSION, body @ ..] => return_of(body),
        _ => None,
    }
}

#[inline]
fn return_of(body: &[u8]) -> Option<(Token, u64)> {
    // Both fields are 8 fixed bytes (`message::fixed`).
    let rest: &[u8; 16] = body
        .strip_prefix(&[SERVER_REPLY, REPLY_RETURN])?
        .try_into()
        .ok()?;
    let (token, rax) = rest.split_at(8);
    let word = |bytes: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        u64::from_le_bytes(b)
    };
    Some((Token(word(token)), word(rax)))
}

/// [`resume_token`] of a body (the record after its version byte).
#[inline]
fn resume_token_of(body: &[u8]) -> Option<Token> {
    let rest = body.strip_prefix(&[SERVER_REPLY, REPLY_RESUME])?;
    match take_varint(rest)? {
        (token, []) => Some(Token(token)),
        _ => None,
    }
}

/// A bare `Event` is only sent inside a `NucleusMessage`; decoding one (tests do) is
/// postcard's job.
impl Message for Event {
    fn encode_hot(&self, _out: &mut Wire) -> bool {
        false
    }

    fn decode_hot(_body: &[u8]) -> Option<Self> {
        None
    }
}

/// Appends `value` as postcard does: 7 bits per byte, low bits first, high bit = more.
#[inline]
fn put_varint(out: &mut Wire, mut value: u64) -> bool {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            return out.push(low).is_ok();
        }
        if out.push(low | 0x80).is_err() {
            return false;
        }
    }
}

/// A canonical varint of at most 9 bytes (values below 2⁶³) at the start of `bytes`, and the
/// bytes after it. Longer or non-canonical ones (a zero last byte after the first) are left
/// to postcard.
#[inline]
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0;
    for (i, &byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return None;
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::codec;
    use crate::event::EventKind;

    fn postcard_body<T: Serialize>(message: &T) -> std::vec::Vec<u8> {
        let mut buf = [0; MAX_MESSAGE];
        codec::encode(message, &mut buf).unwrap()[1..].to_vec()
    }

    fn hot_body<T: Message>(message: &T) -> Option<std::vec::Vec<u8>> {
        let mut out = Wire::new();
        message.encode_hot(&mut out).then(|| out.to_vec())
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
                NucleusMessage::Event { token, event },
                NucleusMessage::Ping { token },
            ];
            for message in messages {
                let body = postcard_body(&message);
                assert_eq!(hot_body(&message), Some(body.clone()), "{message:?}");
                // Tokens of 2^63 and more need a tenth varint byte: postcard's to read.
                let expected = (token.0 < 1 << 63).then_some(message);
                assert_eq!(NucleusMessage::decode_hot(&body), expected);
            }
            let reply = ServerMessage::Reply(Reply::Resume { token });
            let body = postcard_body(&reply);
            let mut record = std::vec![codec::PROTOCOL_VERSION];
            record.extend_from_slice(&body);
            assert_eq!(resume_token(&record), (token.0 < 1 << 63).then_some(token));
            assert_eq!(resume_token(&body), None, "no version byte");
            assert_eq!(hot_body(&reply), Some(body.clone()));
            assert_eq!(
                ServerMessage::decode_hot(&body),
                (token.0 < 1 << 63).then_some(reply)
            );
        }
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
            let body = postcard_body(&call);
            assert_eq!(hot_body(&call), Some(body.clone()), "{call:?}");
            // Fixed layout: every value reads back, whatever its size.
            assert_eq!(NucleusMessage::decode_hot(&body), Some(call));
            let ret = ServerMessage::Reply(Reply::Return {
                token: Token(5),
                rax: value,
            });
            let body = postcard_body(&ret);
            assert_eq!(hot_body(&ret), Some(body.clone()));
            let mut record = std::vec![codec::PROTOCOL_VERSION];
            record.extend_from_slice(&body);
            // Fixed layout: every value reads back.
            assert_eq!(return_reply(&record), Some((Token(5), value)));
            assert_eq!(ServerMessage::decode_hot(&body), Some(ret));
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
    fn other_values_and_odd_bytes_are_left_to_postcard() {
        let kill = ServerMessage::Reply(Reply::Kill { token: Token(1) });
        assert_eq!(hot_body(&kill), None);
        assert_eq!(ServerMessage::decode_hot(&postcard_body(&kill)), None);
        let mut buf = [0; MAX_MESSAGE];
        assert_eq!(resume_token(codec::encode(&kill, &mut buf).unwrap()), None);
        // Non-canonical varint for token 1, trailing bytes, a cut record.
        assert_eq!(
            ServerMessage::decode_hot(&[SERVER_REPLY, REPLY_RESUME, 0x81, 0x00]),
            None
        );
        assert_eq!(
            ServerMessage::decode_hot(&[SERVER_REPLY, REPLY_RESUME, 1, 0]),
            None
        );
        assert_eq!(
            ServerMessage::decode_hot(&[SERVER_REPLY, REPLY_RESUME]),
            None
        );
        assert_eq!(NucleusMessage::decode_hot(&[NUCLEUS_EVENT, 1, 56, 0]), None);
        assert_eq!(NucleusMessage::decode_hot(&[NUCLEUS_PING, 1, 0]), None);
    }
}
