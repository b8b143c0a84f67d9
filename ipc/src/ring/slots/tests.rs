//! Unit tests of the slot ring: geometry, order across wraps, full rings, batches, attaching,
//! and a peer that scribbles over the indices.

use super::*;
use crate::ring::{DROPPED_OFFSET, HEAD_OFFSET, TAIL_OFFSET};
use std::boxed::Box;
use std::vec::Vec;

/// A 128-byte aligned buffer standing in for a shared page.
#[repr(C, align(128))]
struct Page([u8; 1024]);

fn page() -> Box<Page> {
    Box::new(Page([0; 1024]))
}

/// Record `n` of 16 bytes: `n` in both words.
fn record(n: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes[8..].copy_from_slice(&(!n).to_le_bytes());
    bytes
}

#[test]
fn geometry() {
    assert_eq!(slots_for(16, 4096), Some(128)); // (4096 - 256) / 16 = 240 -> 128
    assert_eq!(slots_for(16, slot_region_len(16, 256)), Some(256));
    assert_eq!(slots_for(72, 4096), Some(32)); // 53 -> 32
    assert_eq!(slots_for(16, HEADER_SIZE + 2 * 16), Some(MIN_SLOTS));
    assert_eq!(slots_for(16, HEADER_SIZE + 2 * 16 - 1), None);
    assert_eq!(slots_for(8, usize::MAX), Some(MAX_SLOTS));
    assert_eq!(slots_for(12, 4096), None, "not a multiple of 8");
    assert_eq!(slots_for(0, 4096), None);
    assert_eq!(slots_for(MAX_SLOT + 8, 1 << 20), None);
    assert!(slot_size_ok(8) && slot_size_ok(MAX_SLOT) && !slot_size_ok(4));
}

#[test]
fn push_pop_in_order_across_wraps() {
    let mut ring = SlotStorage::<16, 4>::new();
    let (mut producer, mut consumer) = ring.split();
    assert_eq!((producer.slots(), consumer.slots()), (4, 4));
    for n in 0..100 {
        producer.push(&record(n)).unwrap();
        if n % 3 == 0 {
            producer.try_push(&record(1000 + n)).unwrap();
        }
        assert_eq!(consumer.pop().unwrap(), Some(record(n)));
        if n % 3 == 0 {
            assert_eq!(consumer.pop_with(|r| *r).unwrap(), Some(record(1000 + n)));
        }
        assert_eq!(consumer.pop().unwrap(), None);
    }
    assert_eq!(producer.dropped(), 0);
}

#[test]
fn full_ring_counts_drops_and_recovers() {
    let mut ring = SlotStorage::<8, 4>::new();
    let (mut producer, mut consumer) = ring.split();
    for i in 0..4u8 {
        producer.push(&[i; 8]).unwrap();
    }
    assert!(producer.is_full().unwrap() && consumer.is_full().unwrap());
    assert_eq!(producer.push(&[9; 8]), Err(SlotPushError::Full));
    assert_eq!(producer.try_push(&[9; 8]), Err(SlotPushError::Full));
    assert_eq!(
        producer.try_push_with(|_| panic!("filled although full")),
        Err::<(), _>(SlotPushError::Full)
    );
    assert_eq!(producer.dropped(), 1, "try_push must not count");
    assert_eq!(consumer.dropped_by_producer(), 1);
    assert_eq!(consumer.pop().unwrap(), Some([0; 8]));
    consumer.release_now(); // a single pop publishes every second slot here
    assert_eq!(producer.try_push_with(|r| r[7] = 4), Ok(()));
    let mut seen = Vec::new();
    assert_eq!(consumer.pop_batch(10, |r| seen.push(*r)).unwrap(), 4);
    assert_eq!(seen, [[1; 8], [2; 8], [3; 8], [0, 0, 0, 0, 0, 0, 0, 4]]);
    assert!(consumer.is_empty().unwrap() && producer.is_empty().unwrap());
}

#[test]
fn batches_publish_once_and_stop_when_full() {
    let mut ring = SlotStorage::<16, 8>::new();
    let (mut producer, mut consumer) = ring.split();
    {
        let mut batch = producer.batch();
        batch.push(&record(1)).unwrap();
        batch.try_push_with(|r| *r = record(2)).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(
            consumer.is_empty().unwrap(),
            "nothing visible before the batch ends"
        );
        assert_eq!(batch.commit(), 2);
    }
    assert_eq!(consumer.len().unwrap(), 2);
    let mut batch = producer.batch();
    let mut pushed = 0;
    while batch.try_push(&record(10 + pushed)).is_ok() {
        pushed += 1;
    }
    assert_eq!(pushed, 6);
    assert_eq!(batch.push(&record(99)), Err(SlotPushError::Full));
    drop(batch);
    assert_eq!(producer.dropped(), 1);
    let mut seen = Vec::new();
    assert_eq!(consumer.pop_batch(3, |r| seen.push(*r)).unwrap(), 3);
    assert_eq!(
        consumer.pop_batch(usize::MAX, |r| seen.push(*r)).unwrap(),
        5
    );
    let expected: Vec<[u8; 16]> = [1, 2, 10, 11, 12, 13, 14, 15].map(record).to_vec();
    assert_eq!(seen, expected);
    assert_eq!(consumer.pop_batch(usize::MAX, |_| panic!()).unwrap(), 0);
}

#[test]
fn a_batch_reloads_tail_when_its_cached_one_says_full() {
    let mut ring = SlotStorage::<16, 4>::new();
    let (mut producer, mut consumer) = ring.split();
    let mut batch = producer.batch();
    for n in 0..4 {
        batch.try_push(&record(n)).unwrap();
    }
    // Full by the tail cached when the batch began and by the real one.
    assert_eq!(batch.try_push(&record(9)), Err(SlotPushError::Full));
    assert_eq!(batch.commit(), 4);
    let mut batch = producer.batch();
    assert_eq!(batch.try_push(&record(9)), Err(SlotPushError::Full));
    // The consumer frees two slots while the batch is open: the batch sees them when its
    // cached tail says full, and only those two.
    let mut seen = Vec::new();
    assert_eq!(consumer.pop_batch(2, |r| seen.push(*r)).unwrap(), 2);
    batch.try_push(&record(4)).unwrap();
    batch.try_push(&record(5)).unwrap();
    assert_eq!(batch.push(&record(9)), Err(SlotPushError::Full));
    assert_eq!(batch.len(), 2);
    drop(batch);
    assert_eq!(producer.dropped(), 1, "only push counts a drop");
    assert_eq!(
        consumer.pop_batch(usize::MAX, |r| seen.push(*r)).unwrap(),
        4
    );
    assert_eq!(seen, (0..6).map(record).collect::<Vec<_>>());
}

#[test]
fn an_abandoned_or_leaked_batch_publishes_nothing() {
    let mut ring = SlotStorage::<16, 4>::new();
    let (mut producer, mut consumer) = ring.split();
    producer.push(&record(1)).unwrap();
    let mut batch = producer.batch();
    batch.push(&record(2)).unwrap();
    batch.push(&record(3)).unwrap();
    assert_eq!(batch.abandon(), 2);
    producer.push(&record(4)).unwrap();
    assert_eq!(consumer.pop().unwrap(), Some(record(1)));
    assert_eq!(consumer.pop().unwrap(), Some(record(4)));
    assert_eq!(consumer.pop().unwrap(), None);
    // A leaked batch never publishes its records; they are written, but below no `head`
    // the consumer sees until the producer publishes again.
    let mut batch = producer.batch();
    batch.push(&record(5)).unwrap();
    core::mem::forget(batch);
    assert_eq!(consumer.pop().unwrap(), None);
}

#[test]
fn split_again_keeps_contents() {
    let mut ring = SlotStorage::<8, 2>::new();
    ring.split().0.push(b"kept ok!").unwrap();
    let (_, mut consumer) = ring.split();
    assert_eq!(consumer.pop().unwrap(), Some(*b"kept ok!"));
}

#[test]
fn attach_checks_the_region() {
    let mut page = page();
    let base = page.0.as_mut_ptr();
    // SAFETY: `page` outlives every handle in this test; one producer and one consumer.
    let misaligned = unsafe { SlotProducer::<16>::attach(base.wrapping_add(8), 512) };
    assert_eq!(
        misaligned.err().map(|_| ()),
        Some(()),
        "a misaligned region is refused"
    );
    // SAFETY: as above.
    let small = unsafe { SlotConsumer::<16>::attach(base, HEADER_SIZE + 16) };
    assert_eq!(
        small.err(),
        Some(AttachError::TooSmall {
            len: HEADER_SIZE + 16
        })
    );
    page.0[HEAD_OFFSET..HEAD_OFFSET + 4].copy_from_slice(&100u32.to_le_bytes());
    let base = page.0.as_mut_ptr();
    // SAFETY: as above.
    let corrupt = unsafe { SlotConsumer::<16>::attach(base, 1024) };
    assert_eq!(
        corrupt.err(),
        Some(AttachError::Corrupt(RingCorrupt::Head {
            head: 100,
            tail: 0
        }))
    );
    // SAFETY: as above.
    assert_eq!(unsafe { init::<16>(base, 1024) }, Ok(32)); // 768 / 16 = 48 -> 32
    // SAFETY: as above.
    let mut producer = unsafe { SlotProducer::<16>::attach(base, 1024) }.unwrap();
    // SAFETY: as above.
    let mut consumer = unsafe { SlotConsumer::<16>::attach(base, 1024) }.unwrap();
    assert_eq!(producer.slots(), 32);
    producer.push(b"through a page!!").unwrap();
    assert_eq!(consumer.pop().unwrap(), Some(*b"through a page!!"));
    // The slots end at HEADER_SIZE + 32 * 16 = 768: nothing beyond is touched.
    for n in 0..200 {
        producer.push(&[0xa5; 16]).unwrap();
        assert_eq!(consumer.pop().unwrap(), Some([0xa5; 16]), "slot {n}");
    }
    assert!(page.0[768..].iter().all(|&b| b == 0));
}

/// The peer (here: this test, writing the page directly) scribbles over the header.
#[test]
fn hostile_indices_are_typed_errors() {
    let mut page = page();
    let base = page.0.as_mut_ptr();
    // SAFETY: `page` outlives the handles; the raw writes below stand in for a hostile
    // peer and happen while no handle method runs.
    let mut producer = unsafe { SlotProducer::<16>::attach(base, 1024) }.unwrap();
    // SAFETY: as above.
    let mut consumer = unsafe { SlotConsumer::<16>::attach(base, 1024) }.unwrap();
    producer.push(&record(7)).unwrap();

    // SAFETY: `base` is valid for the whole page; no handle is running.
    let poke = |offset: usize, value: u32| unsafe {
        ptr::write_unaligned(base.add(offset).cast::<u32>(), value.to_le())
    };

    poke(HEAD_OFFSET, 33); // 33 slots ahead of tail 0: more than the ring has
    assert_eq!(consumer.pop(), Err(RingCorrupt::Head { head: 33, tail: 0 }));
    assert_eq!(consumer.len(), Err(RingCorrupt::Head { head: 33, tail: 0 }));
    assert_eq!(
        consumer.pop_batch(8, |_| panic!()),
        Err(RingCorrupt::Head { head: 33, tail: 0 })
    );
    poke(HEAD_OFFSET, 1);
    poke(DROPPED_OFFSET, 77);
    assert_eq!(consumer.dropped_by_producer(), 77);
    assert_eq!(consumer.pop().unwrap(), Some(record(7)));

    // The producer's head is 1.
    poke(TAIL_OFFSET, u32::MAX); // 2 behind head: legal, if odd
    assert_eq!(producer.len(), Ok(2));
    poke(TAIL_OFFSET, 0x1000); // ahead of head
    assert_eq!(
        producer.len(),
        Err(RingCorrupt::Tail {
            head: 1,
            tail: 0x1000
        })
    );
    for _ in 0..100 {
        // The cached tail still has room for a few; then the bad tail is seen.
        if let Err(e) = producer.push(&record(0)) {
            assert!(matches!(
                e,
                SlotPushError::Corrupt(RingCorrupt::Tail { .. })
            ));
            assert_eq!(producer.dropped(), 0, "a lie is not a drop");
            return;
        }
    }
    panic!("a corrupt tail was never reported");
}

#[test]
fn errors_display_one_line() {
    assert_eq!(std::format!("{}", SlotPushError::Full), "slot ring full");
    assert_eq!(
        std::format!(
            "{}",
            SlotPushError::Corrupt(RingCorrupt::Tail { head: 1, tail: 2 })
        ),
        "ring corrupt: tail 0x2 vs head 0x1"
    );
}

#[test]
fn release_every_is_a_few_cache_lines_of_slots() {
    assert_eq!(release_every(16, 1024), 16);
    assert_eq!(release_every(128, 1024), 2);
    assert_eq!(release_every(8, 16), 8, "half the ring at most");
    assert_eq!(release_every(24, 4), 2);
    assert_eq!(release_every(MAX_SLOT, 1024), 1);
    assert_eq!(release_every(8, MIN_SLOTS), 1);
}

/// Single pops publish `tail` every `release_every` slots, when they find the ring empty, on
/// `release_now`, after a batch and on drop; the producer sees only what was published.
#[test]
fn single_pops_release_lazily_and_never_strand_a_waiting_producer() {
    let mut ring = SlotStorage::<8, 16>::new(); // releases every 8
    let (mut producer, mut consumer) = ring.split();
    for n in 0..16u8 {
        producer.push(&[n; 8]).unwrap();
    }
    for n in 0..7u8 {
        assert_eq!(consumer.pop().unwrap(), Some([n; 8]));
    }
    assert_eq!(producer.len(), Ok(16), "seven read, none published yet");
    assert_eq!(producer.try_push(&[99; 8]), Err(SlotPushError::Full));
    assert_eq!(consumer.pop().unwrap(), Some([7; 8]));
    assert_eq!(producer.len(), Ok(8), "the eighth pop published eight");
    consumer.pop().unwrap();
    consumer.release_now();
    assert_eq!(producer.len(), Ok(7));
    // A consumer that drains the ring publishes everything when it finds it empty, before
    // it would wait.
    let mut n = 0;
    while consumer.pop_with(|_| ()).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 7);
    assert_eq!(producer.len(), Ok(0), "an empty ring is all free");
    producer.push(&[1; 8]).unwrap();
    producer.push(&[2; 8]).unwrap();
    assert_eq!(consumer.pop_batch(1, |_| ()).unwrap(), 1);
    assert_eq!(producer.len(), Ok(1), "a batch publishes at its end");
    assert_eq!(consumer.pop().unwrap(), Some([2; 8]));
    assert_eq!(producer.len(), Ok(1));
    drop(consumer);
    assert_eq!(producer.len(), Ok(0), "dropping the consumer publishes");
}

#[test]
fn batches_of_unaligned_and_multi_line_slots_keep_order() {
    // 24-byte slots start anywhere in a line, 136-byte ones span three lines: the batch's
    // prefetch window steps over both without touching a byte outside its slots.
    fn run<const SLOT: usize>() {
        let mut ring = SlotStorage::<SLOT, 16>::new();
        let (mut producer, mut consumer) = ring.split();
        let mut next = 0u64;
        let mut expected = 0u64;
        for round in 0..40 {
            let mut batch = producer.batch();
            for _ in 0..(round % 7 + 5) {
                let mut record = [0u8; SLOT];
                record[..8].copy_from_slice(&next.to_le_bytes());
                record[SLOT - 8..].copy_from_slice(&(!next).to_le_bytes());
                if batch.try_push(&record).is_err() {
                    break;
                }
                next += 1;
            }
            batch.commit();
            consumer
                .pop_batch(usize::MAX, |record| {
                    let first = u64::from_le_bytes(record[..8].try_into().unwrap());
                    let last = u64::from_le_bytes(record[SLOT - 8..].try_into().unwrap());
                    assert_eq!((first, last), (expected, !expected));
                    expected += 1;
                })
                .unwrap();
        }
        assert_eq!(expected, next);
    }
    run::<24>();
    run::<136>();
    run::<16>();
}

#[test]
fn a_batch_pop_that_unwinds_keeps_what_it_handed_out() {
    let mut ring = SlotStorage::<16, 8>::new();
    let (mut producer, mut consumer) = ring.split();
    for n in 0..5 {
        producer.push(&record(n)).unwrap();
    }
    let mut seen = Vec::new();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consumer.pop_batch(8, |r| {
            seen.push(*r);
            assert!(seen.len() < 3, "the receiver gives up on its third record");
        })
    }));
    assert!(unwound.is_err());
    assert_eq!(seen, [record(0), record(1), record(2)]);
    // The third was handed out, so it is taken; the next pop starts at the fourth.
    assert_eq!(consumer.pop().unwrap(), Some(record(3)));
    assert_eq!(consumer.pop().unwrap(), Some(record(4)));
    assert_eq!(consumer.pop().unwrap(), None);
}
