//! Randomized tests of the slot ring (`ipc::ring::slots`) against a hostile peer, as
//! `tests/hostile.rs` does for the byte ring: between ring operations the test overwrites
//! `head`, `tail`, the drop counter and arbitrary words of the slots with arbitrary values.
//! Every call must return (every loop in the ring is bounded), results must stay within their
//! documented limits, nothing outside the slots may change (guard bytes around the region and
//! the unused end of the data area), and until the first corruption of an index the ring must
//! behave exactly like a queue of the pushed records (a scribbled slot only changes that
//! record's bytes).
#![cfg(not(loom))]

use std::collections::VecDeque;

use ipc::ring::slots::{SlotConsumer, SlotProducer, SlotPushError, release_every, slots_for};
use ipc::ring::{DROPPED_OFFSET, HEAD_OFFSET, HEADER_SIZE, REGION_ALIGN, TAIL_OFFSET};
use proptest::prelude::*;

/// Bytes after the header.
const DATA: usize = 128;
/// A slot size that is not a power of two, so the data area has an unused end: 4 slots of 24
/// bytes, 96 of the 128, whose single pops publish `tail` every 2.
const SLOT: usize = 24;
/// Small slots: 16 of them, whose single pops publish `tail` every 8.
const SMALL: usize = 8;
const _: () = assert!(slots_for(SLOT, HEADER_SIZE + DATA).unwrap() == 4);
const _: () = assert!(release_every(SMALL, 16) == 8);
const GUARD: u8 = 0xa5;

#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Block([u8; REGION_ALIGN]);

/// A region with one block of guard bytes on each side, standing in for a shared page.
struct Guarded {
    blocks: Vec<Block>,
}

impl Guarded {
    const REGION: usize = HEADER_SIZE + DATA;

    fn new() -> Self {
        let mut blocks = vec![Block([GUARD; REGION_ALIGN]); Self::REGION / REGION_ALIGN + 2];
        for block in &mut blocks[1..=Self::REGION / REGION_ALIGN] {
            block.0 = [0; REGION_ALIGN];
        }
        Self { blocks }
    }

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

    /// The guard blocks still hold `GUARD` and the unused end of the data area (after `used`
    /// bytes of slots) zero.
    fn untouched_outside_the_slots(&mut self, used: usize) -> bool {
        let all = self.blocks.as_mut_ptr().cast::<u8>();
        let total = self.blocks.len() * REGION_ALIGN;
        let unused = REGION_ALIGN + HEADER_SIZE + used..REGION_ALIGN + Self::REGION;
        // SAFETY: every index is below `total`, inside `blocks`; read through the same raw
        // pointer the handles derive theirs from.
        let byte = |i: usize| unsafe { all.add(i).read() };
        (0..REGION_ALIGN)
            .chain(REGION_ALIGN + Self::REGION..total)
            .all(|i| byte(i) == GUARD)
            && unused.into_iter().all(|i| byte(i) == 0)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push,
    PushBatch(usize),
    Pop,
    PopBatch(usize),
    Len,
    /// Hostile writes to an index: the ring is no longer trustworthy.
    Head(u32),
    Tail(u32),
    Dropped(u32),
    /// A hostile write into a slot (the records' contents are no longer known).
    SlotWord {
        word: usize,
        value: u32,
    },
}

fn arb_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..64,
        any::<u32>(),
        (0u32..16).prop_map(|d| 0u32.wrapping_sub(d))
    ]
}

/// Operations on a ring of `used` bytes of slots.
fn arb_op(used: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Push),
        2 => (0usize..7).prop_map(Op::PushBatch),
        6 => Just(Op::Pop),
        2 => (0usize..7).prop_map(Op::PopBatch),
        1 => Just(Op::Len),
        1 => arb_index().prop_map(Op::Head),
        1 => arb_index().prop_map(Op::Tail),
        1 => any::<u32>().prop_map(Op::Dropped),
        2 => (0usize..used / 4, any::<u32>()).prop_map(|(word, value)| Op::SlotWord { word, value }),
    ]
}

fn record<const SLOT: usize>(serial: u32) -> [u8; SLOT] {
    core::array::from_fn(|i| (serial as u8).wrapping_mul(31).wrapping_add(i as u8))
}

/// Checks a popped record against the model while the indices are trusted (its bytes too,
/// unless a slot was scribbled on).
fn check_pop<const SLOT: usize>(
    got: &[u8; SLOT],
    model: &mut VecDeque<[u8; SLOT]>,
    trusted: bool,
    clean: bool,
) -> Result<(), TestCaseError> {
    if trusted {
        let expected = model.pop_front();
        prop_assert!(expected.is_some(), "a record nobody pushed");
        if clean {
            prop_assert_eq!(Some(*got), expected);
        }
    }
    Ok(())
}

fn run_ops<const SLOT: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
    let slots = slots_for(SLOT, Guarded::REGION).unwrap();
    let used = slots * SLOT;
    // Single pops may leave this many read slots unpublished (lazy release), which the
    // producer still counts as taken.
    let lag = release_every(SLOT, slots) - 1;
    let mut memory = Guarded::new();
    let base = memory.base();
    // SAFETY: `memory` outlives both handles (dropped at the end of this function, before
    // it); one producer and one consumer; the test's own writes to the region happen between
    // handle calls, in this one thread.
    let mut producer: SlotProducer<'static, SLOT> =
        unsafe { SlotProducer::attach(base, Guarded::REGION) }.unwrap();
    // SAFETY: as above.
    let mut consumer: SlotConsumer<'static, SLOT> =
        unsafe { SlotConsumer::attach(base, Guarded::REGION) }.unwrap();
    prop_assert_eq!((producer.slots(), consumer.slots()), (slots, slots));

    let mut model: VecDeque<[u8; SLOT]> = VecDeque::new();
    let mut trusted = true;
    let mut clean = true;
    let mut serial = 0u32;
    for op in ops {
        match *op {
            Op::Push => {
                serial += 1;
                match producer.push(&record(serial)) {
                    Ok(()) => model.push_back(record(serial)),
                    Err(SlotPushError::Full) => {
                        prop_assert!(!trusted || model.len() + lag >= slots)
                    }
                    Err(SlotPushError::Corrupt(_)) => prop_assert!(!trusted),
                }
            }
            Op::PushBatch(count) => {
                let mut batch = producer.batch();
                let mut pushed = Vec::new();
                for _ in 0..count {
                    serial += 1;
                    match batch.try_push_with(|slot| *slot = record(serial)) {
                        Ok(()) => pushed.push(record(serial)),
                        Err(SlotPushError::Full) => break,
                        Err(SlotPushError::Corrupt(_)) => {
                            prop_assert!(!trusted);
                            break;
                        }
                    }
                }
                prop_assert_eq!(batch.commit(), pushed.len());
                if trusted {
                    prop_assert!(pushed.len() <= count.min(slots - model.len()));
                    prop_assert!(
                        pushed.len() >= count.min(slots.saturating_sub(model.len() + lag))
                    );
                }
                model.extend(pushed);
            }
            Op::Pop => match consumer.pop() {
                Ok(Some(got)) => check_pop(&got, &mut model, trusted, clean)?,
                Ok(None) => prop_assert!(!trusted || model.is_empty()),
                Err(_) => prop_assert!(!trusted),
            },
            Op::PopBatch(max) => {
                let mut seen = Vec::new();
                match consumer.pop_batch(max, |got| seen.push(*got)) {
                    Ok(taken) => {
                        prop_assert_eq!(taken, seen.len());
                        prop_assert!(taken <= max && taken <= slots);
                        prop_assert!(!trusted || taken == max.min(model.len()));
                    }
                    Err(_) => prop_assert!(!trusted),
                }
                for got in seen {
                    check_pop(&got, &mut model, trusted, clean)?;
                }
            }
            Op::Len => {
                for len in [producer.len(), consumer.len()] {
                    match len {
                        Ok(len) => prop_assert!(len <= slots),
                        Err(_) => prop_assert!(!trusted),
                    }
                }
                if trusted {
                    prop_assert_eq!(consumer.len(), Ok(model.len()));
                    let producer_sees = producer.len().unwrap();
                    prop_assert!(
                        producer_sees >= model.len() && producer_sees <= model.len() + lag
                    );
                    prop_assert!(!consumer.is_full().unwrap() || producer.is_full().unwrap());
                }
            }
            Op::Head(value) => {
                memory.poke(HEAD_OFFSET, value);
                trusted = false;
            }
            Op::Tail(value) => {
                memory.poke(TAIL_OFFSET, value);
                trusted = false;
            }
            Op::Dropped(value) => {
                memory.poke(DROPPED_OFFSET, value);
                prop_assert_eq!(consumer.dropped_by_producer(), value);
            }
            Op::SlotWord { word, value } => {
                memory.poke(HEADER_SIZE + 4 * word, value);
                clean = false;
            }
        }
        prop_assert!(
            memory.untouched_outside_the_slots(used),
            "a write escaped the slots after {:?}",
            op
        );
    }
    // Draining a ring in any state ends: the consumer reads what its cached `head` allows (at
    // most `slots`), then what one more look at the (now fixed) `head` allows (at most `slots`
    // again, checked against the `tail` it reached), or it reports corruption.
    let mut drained = 0;
    while let Ok(Some(got)) = consumer.pop() {
        check_pop(&got, &mut model, trusted, clean)?;
        drained += 1;
        prop_assert!(drained <= 2 * slots, "drain did not end");
    }
    if trusted {
        prop_assert!(model.is_empty(), "records lost: {:?}", model);
    }
    prop_assert!(memory.untouched_outside_the_slots(used));
    Ok(())
}

#[test]
fn a_hostile_head_after_a_cached_look_drains_to_its_end() {
    // Found by the proptest: 2 records still cached, then 3 more up to the forged head.
    run_ops::<SLOT>(&[Op::PushBatch(3), Op::Pop, Op::Head(6)]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn slot_ring_survives_a_hostile_peer(ops in prop::collection::vec(arb_op(4 * SLOT), 1..80)) {
        run_ops::<SLOT>(&ops)?;
    }

    /// The same with more, smaller slots, released later.
    #[test]
    fn lazily_releasing_slot_ring_survives_a_hostile_peer(ops in prop::collection::vec(arb_op(DATA), 1..120)) {
        run_ops::<SMALL>(&ops)?;
    }

    /// Attaching to a region whose header holds anything is a typed result, never a panic.
    #[test]
    fn attach_to_an_arbitrary_header(head in arb_index(), tail in arb_index(), dropped in any::<u32>()) {
        let mut memory = Guarded::new();
        memory.poke(HEAD_OFFSET, head);
        memory.poke(TAIL_OFFSET, tail);
        memory.poke(DROPPED_OFFSET, dropped);
        let base = memory.base();
        // SAFETY: `memory` outlives the handles, which are dropped at the end of this block.
        let producer = unsafe { SlotProducer::<SLOT>::attach(base, Guarded::REGION) };
        // SAFETY: as above.
        let consumer = unsafe { SlotConsumer::<SLOT>::attach(base, Guarded::REGION) };
        let believable = head.wrapping_sub(tail) <= 4;
        prop_assert_eq!(producer.is_ok(), believable);
        prop_assert_eq!(consumer.is_ok(), believable);
        if let Ok(mut producer) = producer {
            prop_assert_eq!(producer.dropped(), dropped);
            let _ = producer.push(&[1; SLOT]);
        }
        if let Ok(mut consumer) = consumer {
            let mut drained = 0;
            while let Ok(Some(_)) = consumer.pop() {
                drained += 1;
                prop_assert!(drained <= 5);
            }
        }
        prop_assert!(memory.untouched_outside_the_slots(4 * SLOT));
    }
}
