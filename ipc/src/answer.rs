//! What a server's handler answers, and how that reaches the reply ring (issue 17 point 2).
//!
//! `ipc::rt`'s serve loops hand each message to a handler and queue what it returns. The
//! answer is read where the handler built it, never moved or cloned: the hot replies
//! (`Reply::Resume`, `Reply::Return`) become their fixed records (`hot_path`: one length
//! store and two or three word stores into the ring), anything else goes through postcard.
//! So a handler may return a ~290-byte `Option<ServerMessage>` and pay only for the words
//! it set; `Option<Reply>` (pv-server's) is queued without being wrapped first.

use serde::Serialize;

use crate::codec::{SendError, Wire, encode_into};
use crate::hot_path::{resume_record, return_record};
use crate::message::{Hello, Reply, ServerMessage};
use crate::ring::Producer;
use crate::syscall::RegisterReply;

/// A handler's answer: zero or one message for the nucleus.
pub trait Answer {
    /// Pushes the record `self` stands for on `replies` (a full ring is not counted as a
    /// drop: the caller retries); `None` if `self` is no message.
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>>;

    /// `self` as an answer in registers (`Syscall::ReplyWait`), if it is one of the two
    /// that fit: the serve loops hand such an answer over with their next wait instead of
    /// pushing it.
    fn in_registers(&self) -> Option<RegisterReply>;
}

impl Answer for Reply {
    #[inline(always)]
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        Some(match *self {
            Self::Resume { token } => push_fixed(replies, &resume_record(token)),
            Self::Return { token, rax } => push_fixed(replies, &return_record(token, rax)),
            ref other => push_serialized(replies, &Borrowed::Reply(other)),
        })
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        match *self {
            Self::Resume { token } => Some(RegisterReply::Resume(token)),
            Self::Return { token, rax } => Some(RegisterReply::Return(token, rax)),
            _ => None,
        }
    }
}

impl Answer for ServerMessage {
    #[inline(always)]
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        match self {
            Self::Reply(reply) => reply.try_push_on(replies),
            other => Some(push_serialized(replies, other)),
        }
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        match self {
            Self::Reply(reply) => reply.in_registers(),
            _ => None,
        }
    }
}

impl<T: Answer> Answer for Option<T> {
    #[inline(always)]
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        self.as_ref()?.try_push_on(replies)
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        self.as_ref()?.in_registers()
    }
}

impl<T: Answer + ?Sized> Answer for &T {
    #[inline(always)]
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        (**self).try_push_on(replies)
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        (**self).in_registers()
    }
}

/// An answer held for registers, pushed after all (the serve loops' fallback).
impl Answer for RegisterReply {
    #[inline(always)]
    fn try_push_on(&self, replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        self.reply().try_push_on(replies)
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        Some(*self)
    }
}

/// No answer (a handler that only prints, or answers through other means).
impl Answer for () {
    #[inline(always)]
    fn try_push_on(&self, _replies: &mut Producer<'_>) -> Option<Result<(), SendError>> {
        None
    }

    #[inline(always)]
    fn in_registers(&self) -> Option<RegisterReply> {
        None
    }
}

/// A fixed-size record: its length is a constant where this is inlined, so the ring's copy
/// is a few word stores.
#[inline(always)]
fn push_fixed<const N: usize>(
    replies: &mut Producer<'_>,
    record: &[u8; N],
) -> Result<(), SendError> {
    replies.try_push(record).map_err(SendError::Push)
}

/// Any other message, through postcard (out of line: not the event path).
#[cold]
#[inline(never)]
fn push_serialized<T: Serialize + ?Sized>(
    replies: &mut Producer<'_>,
    message: &T,
) -> Result<(), SendError> {
    let mut record = Wire::new();
    encode_into(message, &mut record).map_err(SendError::Encode)?;
    replies.try_push(&record).map_err(SendError::Push)
}

/// `ServerMessage` with its payload borrowed: postcard writes an enum as the variant's index
/// and the payload, so this encodes exactly as the owned message (the tests compare them),
/// without copying a `Reply` into a `ServerMessage` first.
#[derive(Serialize)]
enum Borrowed<'a> {
    #[allow(dead_code)] // only here to give `Reply` its index (1)
    Hello(&'a Hello),
    Reply(&'a Reply),
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::codec::{MAX_MESSAGE, encode};
    use crate::message::*;
    use crate::ring::RingStorage;

    /// What `answer` pushes, record by record.
    fn pushed(answer: &impl Answer) -> Option<std::vec::Vec<u8>> {
        let mut ring = RingStorage::<1024>::new();
        let (mut producer, mut consumer) = ring.split();
        answer.try_push_on(&mut producer)?.expect("fits");
        let record = consumer.pop().expect("sound ring").expect("one record");
        assert_eq!(consumer.pop().expect("sound ring").map(|r| r.len()), None);
        Some(record.to_vec())
    }

    fn postcard(message: &ServerMessage) -> std::vec::Vec<u8> {
        let mut buf = [0; MAX_MESSAGE];
        encode(message, &mut buf).expect("fits").to_vec()
    }

    fn replies() -> std::vec::Vec<Reply> {
        let gprs = heapless::Vec::from_slice(&[GprWrite {
            gpr: Gpr::R15,
            value: u64::MAX,
        }])
        .expect("fits");
        std::vec![
            Reply::Resume { token: Token(0) },
            Reply::Resume {
                token: Token(u64::MAX),
            },
            Reply::Return {
                token: Token(7),
                rax: (-38i64) as u64,
            },
            Reply::Kill { token: Token(3) },
            Reply::Restart { token: Token(300) },
            Reply::SendDump { token: Token(1) },
            Reply::ResumeWith {
                token: Token(2),
                changes: ResumeChanges {
                    rip: 0x40_1000,
                    rsp: 0x7fff_0000,
                    rflags: 0x202,
                    gprs: gprs.clone(),
                },
            },
            Reply::GuestResume {
                token: Token(9),
                resume: GuestResume {
                    rip: 0xffff_8000_0000_1000,
                    rsp: 0x1000,
                    rflags: 0x246,
                    cs: 0xe033,
                    ss: 0xe02b,
                    mode: GuestMode::User,
                    gprs,
                },
            },
        ]
    }

    #[test]
    fn every_answer_pushes_the_record_postcard_writes() {
        for reply in replies() {
            let message = ServerMessage::Reply(reply.clone());
            let expected = Some(postcard(&message));
            assert_eq!(pushed(&reply), expected, "{reply:?}");
            assert_eq!(pushed(&Some(reply.clone())), expected);
            assert_eq!(pushed(&message), expected);
            assert_eq!(pushed(&Some(&message)), expected);
        }
        let hello = ServerMessage::Hello(Hello {
            name: ServerName::new("fred-server").expect("short"),
            protocol: crate::PROTOCOL_VERSION,
        });
        assert_eq!(pushed(&hello), Some(postcard(&hello)));
        let log = ServerMessage::Log(LogLine {
            level: LogLevel::Warn,
            text: heapless::String::try_from("a line").expect("short"),
        });
        assert_eq!(pushed(&log), Some(postcard(&log)));
    }

    #[test]
    fn only_resume_and_return_go_in_registers() {
        for reply in replies() {
            let expected = match reply {
                Reply::Resume { token } => Some(RegisterReply::Resume(token)),
                Reply::Return { token, rax } => Some(RegisterReply::Return(token, rax)),
                _ => None,
            };
            assert_eq!(reply.in_registers(), expected, "{reply:?}");
            assert_eq!(Some(&reply).in_registers(), expected);
            let message = ServerMessage::Reply(reply.clone());
            assert_eq!(message.in_registers(), expected);
            // Held and then pushed after all, it is the record the reply itself pushes.
            if let Some(held) = expected {
                assert_eq!(pushed(&held), pushed(&reply));
            }
        }
        assert_eq!(().in_registers(), None);
        assert_eq!(None::<Reply>.in_registers(), None);
        let log = ServerMessage::Log(LogLine {
            level: LogLevel::Info,
            text: heapless::String::try_from("x").expect("short"),
        });
        assert_eq!(log.in_registers(), None);
    }

    #[test]
    fn no_answer_pushes_nothing() {
        assert_eq!(pushed(&None::<ServerMessage>), None);
        assert_eq!(pushed(&None::<Reply>), None);
        assert_eq!(pushed(&()), None);
    }

    #[test]
    fn a_full_ring_is_reported_and_not_counted_as_a_drop() {
        let mut ring = RingStorage::<64>::new();
        let (mut producer, consumer) = ring.split();
        let resume = Reply::Resume { token: Token(1) };
        let mut pushed = 0;
        while let Some(Ok(())) = resume.try_push_on(&mut producer) {
            pushed += 1;
        }
        assert!(pushed > 0);
        assert!(matches!(
            resume.try_push_on(&mut producer),
            Some(Err(SendError::Push(crate::ring::PushError::Full { .. })))
        ));
        assert_eq!(consumer.dropped_by_producer(), 0);
    }
}
