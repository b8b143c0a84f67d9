//! Randomized tests: arbitrary bytes into the decoder, arbitrary corruption into the ring.
//!
//! The peer on the other side of a ring is an allegation (style.md §2 item 11). These tests
//! play a hostile peer: they feed the decoder arbitrary records and, between ring operations,
//! overwrite `head`, `tail`, the drop counter and arbitrary words of the data area (record
//! lengths among them) with arbitrary values. Whatever happens, every call must return
//! (proptest would report a panic; every loop in the ring is bounded), results must stay
//! within their documented limits, and the guard bytes around the region must be untouched.
//! Until the first corruption the ring must behave exactly like a queue of the pushed records.
#![cfg(not(loom))]

use std::collections::VecDeque;

use ipc::codec::{self, DecodeError, MAX_MESSAGE};
use ipc::event::{Event, EventKind};
use ipc::message::{Gpr, GprWrite, GuestMode, GuestResume, ResumeChanges};
use ipc::ring::{
    self, DROPPED_OFFSET, HEAD_OFFSET, HEADER_SIZE, MAX_RECORD, PushError, TAIL_OFFSET,
};
use ipc::{Consumer, NucleusMessage, Producer, Reply, ServerMessage, Token};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Decoder

proptest! {
    #[test]
    fn arbitrary_records_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_decoder(&bytes);
    }

    /// The same with the right version byte, so the bytes reach `postcard`.
    #[test]
    fn arbitrary_message_bodies_never_panic_the_decoder(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut record = vec![codec::PROTOCOL_VERSION];
        record.extend(body);
        check_decoder(&record);
    }

    #[test]
    fn events_round_trip(event in arb_event(), token in any::<u64>()) {
        let message = NucleusMessage::Event { token: Token(token), event };
        let mut buf = [0; MAX_MESSAGE];
        let record = codec::encode(&message, &mut buf).unwrap();
        prop_assert_eq!(codec::decode::<NucleusMessage>(record), Ok(message));
    }

    /// The shortcut's encodings are postcard's, and it reads them back.
    #[test]
    fn hot_encodings_are_postcards(event in arb_event(), token in any::<u64>()) {
        for message in [NucleusMessage::Event { token: Token(token), event }, NucleusMessage::Ping { token: Token(token) }] {
            let hot = codec::Message::with_hot_record(&message, |record| record.to_vec());
            let mut buf = [0; MAX_MESSAGE];
            let record = codec::encode(&message, &mut buf).unwrap();
            prop_assert_eq!(hot.as_deref(), Some(record));
            prop_assert_eq!(codec::decode::<NucleusMessage>(record), Ok(message));
        }
        let reply = ServerMessage::Reply(Reply::Resume { token: Token(token) });
        let hot = codec::Message::with_hot_record(&reply, |record| record.to_vec());
        let mut buf = [0; MAX_MESSAGE];
        prop_assert_eq!(hot.as_deref(), Some(codec::encode(&reply, &mut buf).unwrap()));
    }

    /// Near misses of the hot shapes (one byte changed, cut or added) decode as postcard says.
    #[test]
    fn mutated_hot_records_decode_as_postcard_says(
        event in arb_event(),
        token in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let message = NucleusMessage::Event { token: Token(token), event };
        let mut buf = [0; MAX_MESSAGE];
        let mut record = codec::encode(&message, &mut buf).unwrap().to_vec();
        let at = at.index(record.len());
        if cut { record.truncate(at) } else { record[at] = byte }
        check_decoder(&record);
        record.push(byte);
        check_decoder(&record);
    }

    /// An event record read in place (`codec::HotRecord`, the serve loop's quick path) is
    /// exactly the message postcard decodes from it, on the record and on its near misses.
    #[test]
    fn event_records_read_in_place_are_what_postcard_decodes(
        event in arb_event(),
        token in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        mutate in any::<bool>(),
    ) {
        let message = NucleusMessage::Event { token: Token(token), event };
        let mut buf = [0; MAX_MESSAGE];
        let mut record = codec::encode(&message, &mut buf).unwrap().to_vec();
        if mutate {
            let at = at.index(record.len());
            record[at] = byte;
        }
        let postcard = codec::decode_with_postcard::<NucleusMessage>(&record);
        match codec::HotRecord::new(&record) {
            Some(view) => prop_assert_eq!(postcard, Ok(view.message())),
            // Any canonical event record is one (the shortcut's, which postcard agrees with).
            None => prop_assert!(mutate, "{:?} not read in place", message),
        }
    }

    /// Random bytes of the hot records' lengths with their variant bytes in place (an
    /// event's kind tag random too): read in place exactly where postcard decodes them, as
    /// what it decodes.
    #[test]
    fn random_hot_records_read_in_place_as_postcard_decodes_them(
        shape in 0usize..3,
        mut bytes in prop::collection::vec(any::<u8>(), 99),
    ) {
        let (len, head): (usize, &[u8]) = match shape {
            0 => (67, &[codec::PROTOCOL_VERSION, 0]),
            1 => (10, &[codec::PROTOCOL_VERSION, 5]),
            _ => (99, &[codec::PROTOCOL_VERSION, 2, 96]),
        };
        bytes.truncate(len);
        bytes[..head.len()].copy_from_slice(head);
        if shape == 0 {
            bytes[10] = 56;
        }
        let postcard = codec::decode_with_postcard::<NucleusMessage>(&bytes);
        match codec::HotRecord::new(&bytes) {
            Some(view) => prop_assert_eq!(postcard, Ok(view.message())),
            None => prop_assert!(postcard.is_err(), "{:?} not read in place", postcard),
        }
    }

    #[test]
    fn replies_round_trip(reply in arb_reply()) {
        let message = ServerMessage::Reply(reply);
        let mut buf = [0; MAX_MESSAGE];
        let record = codec::encode(&message, &mut buf).unwrap();
        prop_assert_eq!(codec::decode::<ServerMessage>(record), Ok(message));
    }
}

/// Decodes `record` as each message type: any result is fine except a panic; a record that
/// decodes must be a value that encodes and decodes to itself, and a long one must be refused.
fn check_decoder(record: &[u8]) {
    fn one<T>(record: &[u8])
    where
        T: codec::Message + PartialEq + std::fmt::Debug,
    {
        let decoded = codec::decode::<T>(record);
        // The event path's shortcut and postcard agree on every byte string.
        assert_eq!(decoded, codec::decode_with_postcard::<T>(record));
        match decoded {
            Ok(value) => {
                let mut buf = [0; MAX_MESSAGE];
                let again = codec::encode(&value, &mut buf).expect("a decoded value re-encodes");
                assert_eq!(codec::decode::<T>(again).as_ref(), Ok(&value));
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
                if record.len() > MAX_MESSAGE {
                    assert_eq!(error, DecodeError::TooLong { len: record.len() });
                }
            }
        }
    }
    one::<NucleusMessage>(record);
    one::<ServerMessage>(record);
    one::<Event>(record);
}

fn arb_event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        any::<u8>().prop_map(|vector| EventKind::Interrupt { vector }),
        any::<u16>().prop_map(|sources| EventKind::Nmi { sources }),
        (any::<u8>(), any::<u64>())
            .prop_map(|(vector, error_code)| EventKind::Exception { vector, error_code }),
        any::<u8>().prop_map(|vector| EventKind::SoftwareInterrupt { vector }),
        Just(EventKind::PrivilegedSoftwareException),
        any::<u8>().prop_map(|vector| EventKind::SoftwareException { vector }),
        Just(EventKind::Syscall),
        Just(EventKind::Sysenter),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        (
            any::<u16>(),
            arb_event_kind(),
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<u8>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |((cpu, kind, event_data, rip, cs), (rflags, rsp, ss, from_ring, owner))| Event {
                cpu,
                kind,
                event_data,
                rip,
                cs,
                rflags,
                rsp,
                ss,
                from_ring,
                insn_len: from_ring.rotate_left(3),
                owner,
            },
        )
}

fn arb_gpr() -> impl Strategy<Value = Gpr> {
    use Gpr::*;
    prop::sample::select(vec![
        Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rbp, R8, R9, R10, R11, R12, R13, R14, R15,
    ])
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    let changes = || {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec((arb_gpr(), any::<u64>()), 0..=15),
        )
            .prop_map(|(rip, rsp, rflags, writes)| ResumeChanges {
                rip,
                rsp,
                rflags,
                gprs: writes
                    .into_iter()
                    .map(|(gpr, value)| GprWrite { gpr, value })
                    .collect(),
            })
    };
    prop_oneof![
        any::<u64>().prop_map(|t| Reply::Resume { token: Token(t) }),
        (any::<u64>(), changes()).prop_map(|(t, changes)| Reply::ResumeWith {
            token: Token(t),
            changes
        }),
        any::<u64>().prop_map(|t| Reply::Kill { token: Token(t) }),
        any::<u64>().prop_map(|t| Reply::Restart { token: Token(t) }),
        (
            any::<u64>(),
            changes(),
            any::<u16>(),
            any::<u16>(),
            any::<bool>()
        )
            .prop_map(|(t, c, cs, ss, user)| Reply::GuestResume {
                token: Token(t),
                resume: GuestResume {
                    rip: c.rip,
                    rsp: c.rsp,
                    rflags: c.rflags,
                    cs,
                    ss,
                    mode: if user {
                        GuestMode::User
                    } else {
                        GuestMode::Kernel
                    },
                    gprs: c.gprs,
                },
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Ring

/// Data-area size of the test ring: small, so records wrap often.
const CAPACITY: usize = 128;
const GUARD: u8 = 0xa5;

/// Size and alignment of one block of the test memory ([`ring::REGION_ALIGN`]).
const BLOCK: usize = 128;
const _: () = assert!(BLOCK == ring::REGION_ALIGN);

#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Block([u8; BLOCK]);

/// A ring region with one block of guard bytes on each side, standing in for a shared page.
struct Guarded {
    blocks: Vec<Block>,
}

impl Guarded {
    const REGION: usize = HEADER_SIZE + CAPACITY;

    fn new() -> Self {
        let mut blocks = vec![Block([GUARD; BLOCK]); Self::REGION / BLOCK + 2];
        for block in &mut blocks[1..=Self::REGION / BLOCK] {
            block.0 = [0; BLOCK];
        }
        Self { blocks }
    }

    /// The region's base (just after the first guard block).
    fn base(&mut self) -> *mut u8 {
        self.blocks.as_mut_ptr().wrapping_add(1).cast()
    }

    /// The hostile peer: writes `value` at `offset` into the region.
    fn poke(&mut self, offset: usize, value: u32) {
        assert!(offset + 4 <= Self::REGION);
        // SAFETY: `offset + 4 <= REGION`, so the write is inside the region, which lies inside
        // `blocks`; no handle method is running (the test is single-threaded).
        unsafe { self.base().add(offset).cast::<u32>().write_unaligned(value) };
    }

    fn guards_intact(&mut self) -> bool {
        let all = self.blocks.as_mut_ptr().cast::<u8>();
        let total = self.blocks.len() * BLOCK;
        (0..BLOCK).chain(BLOCK + Self::REGION..total).all(|i| {
            // SAFETY: `i < total`, inside `blocks`; read through the same raw pointer the
            // handles derive theirs from.
            unsafe { all.add(i).read() == GUARD }
        })
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    PushBatch(Vec<usize>),
    Pop,
    PopBatch(usize),
    Len,
    /// Hostile writes: these mark the ring as no longer trustworthy.
    Head(u32),
    Tail(u32),
    Dropped(u32),
    DataWord {
        offset: usize,
        value: u32,
    },
}

fn arb_index() -> impl Strategy<Value = u32> {
    // Mostly values near the real indices (the interesting ones), some anything.
    prop_oneof![
        0u32..512,
        any::<u32>(),
        (0u32..64).prop_map(|d| 0u32.wrapping_sub(d))
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..=MAX_RECORD / 4).prop_map(Op::Push),
        2 => prop::collection::vec(0usize..40, 0..6).prop_map(Op::PushBatch),
        6 => Just(Op::Pop),
        2 => (0usize..6).prop_map(Op::PopBatch),
        1 => Just(Op::Len),
        1 => arb_index().prop_map(Op::Head),
        1 => arb_index().prop_map(Op::Tail),
        1 => any::<u32>().prop_map(Op::Dropped),
        2 => (0usize..CAPACITY / 4, prop_oneof![0u32..300, any::<u32>()])
            .prop_map(|(word, value)| Op::DataWord { offset: HEADER_SIZE + 4 * word, value }),
    ]
}

fn payload(serial: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (serial as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// Checks a popped record: always within limits; exactly the expected one while trusted.
fn check_pop(
    record: &[u8],
    model: &mut VecDeque<Vec<u8>>,
    trusted: bool,
) -> Result<(), TestCaseError> {
    prop_assert!(record.len() <= MAX_RECORD);
    if trusted {
        prop_assert_eq!(Some(record.to_vec()), model.pop_front());
    }
    Ok(())
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut memory = Guarded::new();
    let base = memory.base();
    // SAFETY: `memory` outlives both handles (they are dropped at the end of this function,
    // before it); one producer and one consumer; the test's own writes to the region happen
    // between handle calls, in this one thread.
    let mut producer: Producer<'static> =
        unsafe { Producer::attach(base, Guarded::REGION) }.unwrap();
    // SAFETY: as above.
    let mut consumer: Consumer<'static> =
        unsafe { Consumer::attach(base, Guarded::REGION) }.unwrap();
    prop_assert_eq!(producer.capacity(), CAPACITY);

    let mut model = VecDeque::new();
    let mut trusted = true;
    let mut serial = 0u32;
    for op in ops {
        match op {
            &Op::Push(len) => {
                serial += 1;
                let bytes = payload(serial, len);
                match producer.push(&bytes) {
                    Ok(()) => model.push_back(bytes),
                    Err(PushError::Full { .. }) => {}
                    Err(PushError::Corrupt(_)) => prop_assert!(!trusted),
                    Err(e @ PushError::TooLarge { .. }) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::PushBatch(lens) => {
                let records: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&len| {
                        serial += 1;
                        payload(serial, len)
                    })
                    .collect();
                match producer.push_batch(records.iter().map(Vec::as_slice)) {
                    Ok(pushed) => model.extend(records.into_iter().take(pushed)),
                    Err(PushError::Corrupt(_)) => prop_assert!(!trusted),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Op::Pop => match consumer.pop() {
                Ok(Some(record)) => check_pop(&record, &mut model, trusted)?,
                Ok(None) => prop_assert!(!trusted || model.is_empty()),
                Err(_) => prop_assert!(!trusted),
            },
            &Op::PopBatch(max) => {
                let mut seen = Vec::new();
                match consumer.pop_batch(max, |record| seen.push(record.to_vec())) {
                    Ok(taken) => {
                        prop_assert_eq!(taken, seen.len());
                        prop_assert!(taken <= max);
                        prop_assert!(!trusted || taken == max.min(model.len()));
                    }
                    Err(_) => prop_assert!(!trusted),
                }
                for record in seen {
                    check_pop(&record, &mut model, trusted)?;
                }
            }
            Op::Len => {
                for len in [producer.len(), consumer.len()] {
                    match len {
                        Ok(len) => prop_assert!(len <= CAPACITY),
                        Err(_) => prop_assert!(!trusted),
                    }
                }
                if trusted {
                    let expected: usize = model.iter().map(|r| ring::record_size(r.len())).sum();
                    prop_assert_eq!(consumer.len(), Ok(expected));
                    prop_assert_eq!(producer.is_full(), consumer.is_full());
                }
            }
            &Op::Head(value) => {
                memory.poke(HEAD_OFFSET, value);
                trusted = false;
            }
            &Op::Tail(value) => {
                memory.poke(TAIL_OFFSET, value);
                trusted = false;
            }
            &Op::Dropped(value) => {
                memory.poke(DROPPED_OFFSET, value);
                // Only statistics: the consumer reports what it reads; nothing else changes.
                prop_assert_eq!(consumer.dropped_by_producer(), value);
            }
            &Op::DataWord { offset, value } => {
                memory.poke(offset, value);
                trusted = false;
            }
        }
        prop_assert!(
            memory.guards_intact(),
            "a write escaped the region after {:?}",
            op
        );
    }
    // Draining a ring in any state ends: every record is at least 8 bytes of at most
    // `CAPACITY` published ones, or the ring reports corruption.
    let mut drained = 0;
    while let Ok(Some(record)) = consumer.pop() {
        check_pop(&record, &mut model, trusted)?;
        drained += 1;
        prop_assert!(
            drained <= CAPACITY / ring::RECORD_ALIGN + 1,
            "drain did not end"
        );
        // A hostile producer may keep republishing; ours does not, so this terminates.
    }
    if trusted {
        prop_assert!(model.is_empty(), "records lost: {:?}", model);
    }
    prop_assert!(memory.guards_intact());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ring_survives_a_hostile_peer(ops in prop::collection::vec(arb_op(), 1..80)) {
        run_ops(&ops)?;
    }

    /// Attaching to a page whose header holds anything is a typed result, never a panic.
    #[test]
    fn attach_to_an_arbitrary_header(head in arb_index(), tail in arb_index(), dropped in any::<u32>()) {
        let mut memory = Guarded::new();
        memory.poke(HEAD_OFFSET, head);
        memory.poke(TAIL_OFFSET, tail);
        memory.poke(DROPPED_OFFSET, dropped);
        let base = memory.base();
        // SAFETY: `memory` outlives the handles, which are dropped at the end of this block.
        let producer = unsafe { Producer::attach(base, Guarded::REGION) };
        // SAFETY: as above.
        let consumer = unsafe { Consumer::attach(base, Guarded::REGION) };
        let believable = head % 8 == 0 && tail % 8 == 0 && head.wrapping_sub(tail) <= CAPACITY as u32;
        prop_assert_eq!(producer.is_ok(), believable);
        prop_assert_eq!(consumer.is_ok(), believable);
        if let Ok(mut producer) = producer {
            prop_assert_eq!(producer.dropped(), dropped);
            let _ = producer.push(b"x");
        }
        if let Ok(mut consumer) = consumer {
            while let Ok(Some(record)) = consumer.pop() {
                prop_assert!(record.len() <= MAX_RECORD);
            }
        }
        prop_assert!(memory.guards_intact());
    }
}
