//! Unit tests of the ring: geometry, order across wraps, full rings, batches, attaching, and
//! a peer that scribbles over indices and lengths.

use super::*;
use std::boxed::Box;
use std::vec::Vec;

/// A 128-byte aligned buffer standing in for a shared page.
#[repr(C, align(128))]
struct Page([u8; 1024]);

fn page() -> Box<Page> {
    Box::new(Page([0; 1024]))
}

fn write_u32(page: &mut Page, offset: usize, value: u32) {
    page.0[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn geometry() {
    assert_eq!(capacity_for(4096), Some(2048));
    assert_eq!(capacity_for(region_len(4096)), Some(4096));
    assert_eq!(capacity_for(HEADER_SIZE + MIN_CAPACITY), Some(MIN_CAPACITY));
    assert_eq!(capacity_for(HEADER_SIZE + MIN_CAPACITY - 1), None);
    assert_eq!(capacity_for(usize::MAX), Some(MAX_CAPACITY));
    assert_eq!(record_size(0), 8);
    assert_eq!(record_size(4), 8);
    assert_eq!(record_size(5), 16);
    assert_eq!(record_size(MAX_RECORD), 264);
}

#[test]
fn push_pop_in_order_across_wraps() {
    let mut ring = RingStorage::<64>::new();
    let (mut producer, mut consumer) = ring.split();
    for round in 0u32..100 {
        let len = (round % 20) as usize;
        let payload: Vec<u8> = (0..len)
            .map(|i| (round as u8).wrapping_add(i as u8))
            .collect();
        producer.push(&payload).unwrap();
        assert_eq!(consumer.len().unwrap(), record_size(len));
        let record = consumer.pop().unwrap().unwrap();
        assert_eq!(&*record, &payload[..]);
        assert_eq!(consumer.pop().unwrap().map(|r| r.len()), None);
    }
    assert_eq!(producer.dropped(), 0);
}

#[test]
fn full_ring_counts_drops_and_recovers() {
    let mut ring = RingStorage::<32>::new();
    let (mut producer, mut consumer) = ring.split();
    for i in 0..4u8 {
        producer.push(&[i; 3]).unwrap(); // 8 bytes each
    }
    assert!(producer.is_full().unwrap());
    assert!(consumer.is_full().unwrap());
    assert_eq!(
        producer.push(&[9]),
        Err(PushError::Full { needed: 8, free: 0 })
    );
    assert_eq!(
        producer.try_push(&[9]),
        Err(PushError::Full { needed: 8, free: 0 })
    );
    assert_eq!(producer.dropped(), 1, "try_push must not count");
    assert_eq!(consumer.dropped_by_producer(), 1);
    assert_eq!(&*consumer.pop().unwrap().unwrap(), &[0; 3]);
    producer.push(&[4; 2]).unwrap();
    let mut seen = Vec::new();
    assert_eq!(
        consumer.pop_batch(10, |r| seen.push(r.to_vec())).unwrap(),
        4
    );
    assert_eq!(seen, [vec![1; 3], vec![2; 3], vec![3; 3], vec![4; 2]]);
    assert!(consumer.is_empty().unwrap() && producer.is_empty().unwrap());
}

#[test]
fn too_large_is_refused_not_dropped() {
    let mut ring = RingStorage::<16>::new();
    let (mut producer, _consumer) = ring.split();
    producer.try_push(&[0; 12]).unwrap(); // 4 + 12 = 16: exactly the whole ring
    assert_eq!(
        producer.push(&[0; 13]),
        Err(PushError::TooLarge { len: 13 })
    ); // 24 > 16
    assert_eq!(producer.dropped(), 0);
}

#[test]
fn max_record_limit() {
    let mut ring = RingStorage::<1024>::new();
    let (mut producer, mut consumer) = ring.split();
    producer.push(&[7; MAX_RECORD]).unwrap();
    assert_eq!(
        producer.push(&[7; MAX_RECORD + 1]),
        Err(PushError::TooLarge {
            len: MAX_RECORD + 1
        })
    );
    assert_eq!(consumer.pop().unwrap().unwrap().len(), MAX_RECORD);
}

#[test]
fn batches_publish_once_and_stop_when_full() {
    let mut ring = RingStorage::<64>::new();
    let (mut producer, mut consumer) = ring.split();
    {
        let mut batch = producer.batch();
        batch.push(b"one").unwrap();
        batch.push(b"two").unwrap();
        assert!(
            consumer.is_empty().unwrap(),
            "nothing visible before the batch ends"
        );
        assert_eq!(batch.commit(), 2);
    }
    assert_eq!(consumer.len().unwrap(), 16);
    let records: [&[u8]; 8] = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"];
    assert_eq!(producer.push_batch(records).unwrap(), 6);
    assert_eq!(producer.dropped(), 0);
    let mut seen = Vec::new();
    assert_eq!(consumer.pop_batch(3, |r| seen.push(r.to_vec())).unwrap(), 3);
    assert_eq!(
        consumer
            .pop_batch(usize::MAX, |r| seen.push(r.to_vec()))
            .unwrap(),
        5
    );
    let expected: Vec<Vec<u8>> = [&b"one"[..], b"two", b"a", b"b", b"c", b"d", b"e", b"f"]
        .iter()
        .map(|r| r.to_vec())
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_leaked_batch_leaves_the_ring_as_it_was() {
    let mut ring = RingStorage::<64>::new();
    let (mut producer, mut consumer) = ring.split();
    producer.push(b"before").unwrap();
    let mut batch = producer.batch();
    batch.push(b"staged, never written").unwrap();
    core::mem::forget(batch);
    producer.push(b"after").unwrap();
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"before");
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"after");
    assert_eq!(consumer.pop().unwrap().map(|r| r.len()), None);
}

#[test]
fn an_abandoned_batch_publishes_nothing_even_after_flushing() {
    let mut ring = RingStorage::<1024>::new();
    let (mut producer, mut consumer) = ring.split();
    producer.push(b"before").unwrap();
    let mut batch = producer.batch();
    // Enough records to overflow the staging buffer, so some bytes reach the ring.
    let mut pushed = 0;
    while batch.try_push(&[7u8; 200]).is_ok() {
        pushed += 1;
    }
    assert!(pushed >= 3);
    assert_eq!(batch.abandon(), pushed);
    producer.count_drops(pushed as u32 + 1);
    producer.push(b"after").unwrap();
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"before");
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"after");
    assert_eq!(consumer.pop().unwrap().map(|r| r.len()), None);
    assert_eq!(consumer.dropped_by_producer(), pushed as u32 + 1);
}

#[test]
fn split_again_keeps_contents() {
    let mut ring = RingStorage::<64>::new();
    ring.split().0.push(b"kept").unwrap();
    let (_, mut consumer) = ring.split();
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"kept");
}

#[test]
fn attach_checks_the_region() {
    let mut page = page();
    let base = page.0.as_mut_ptr();
    // SAFETY: `page` outlives every handle in this test; one producer and one consumer.
    let misaligned = unsafe { Producer::attach(base.wrapping_add(8), 512) };
    assert_eq!(
        misaligned.err(),
        Some(AttachError::Misaligned {
            addr: base as usize + 8
        })
    );
    // SAFETY: as above.
    let small = unsafe { Consumer::attach(base, HEADER_SIZE + 8) };
    assert_eq!(
        small.err(),
        Some(AttachError::TooSmall {
            len: HEADER_SIZE + 8
        })
    );
    write_u32(&mut page, HEAD_OFFSET, 12);
    let base = page.0.as_mut_ptr();
    // SAFETY: as above.
    let corrupt = unsafe { Consumer::attach(base, 1024) };
    assert_eq!(
        corrupt.err(),
        Some(AttachError::Corrupt(RingCorrupt::Head {
            head: 12,
            tail: 0
        }))
    );
    // SAFETY: as above.
    assert_eq!(unsafe { init(base, 1024) }, Ok(512));
    // SAFETY: as above.
    let mut producer = unsafe { Producer::attach(base, 1024) }.unwrap();
    // SAFETY: as above.
    let mut consumer = unsafe { Consumer::attach(base, 1024) }.unwrap();
    assert_eq!(producer.capacity(), 512);
    producer.push(b"through a page").unwrap();
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"through a page");
}

/// The peer (here: this test, writing the page directly) scribbles over the header.
#[test]
fn hostile_indices_and_lengths_are_typed_errors() {
    let mut page = page();
    let base = page.0.as_mut_ptr();
    // SAFETY: `page` outlives the handles; the raw writes below stand in for a hostile
    // peer and happen while no handle method runs.
    let mut producer = unsafe { Producer::attach(base, 1024) }.unwrap();
    // SAFETY: as above.
    let mut consumer = unsafe { Consumer::attach(base, 1024) }.unwrap();
    producer.push(b"hello").unwrap();

    // SAFETY: `base` is valid for the whole page; no handle is running.
    let poke = |offset: usize, value: u32| unsafe {
        ptr::write_unaligned(base.add(offset).cast::<u32>(), value.to_le())
    };

    poke(HEAD_OFFSET, 4096);
    assert_eq!(
        consumer.pop().err(),
        Some(RingCorrupt::Head {
            head: 4096,
            tail: 0
        })
    );
    assert_eq!(
        consumer.len(),
        Err(RingCorrupt::Head {
            head: 4096,
            tail: 0
        })
    );
    poke(HEAD_OFFSET, 4); // misaligned
    assert!(consumer.pop().is_err());
    poke(HEAD_OFFSET, 16);
    poke(HEADER_SIZE, 1000); // the length of the first record
    assert_eq!(
        consumer.pop().err(),
        Some(RingCorrupt::Length {
            at: 0,
            len: 1000,
            available: 16
        })
    );
    poke(HEADER_SIZE, 13); // would need 24 bytes, 16 published
    assert!(matches!(
        consumer.pop(),
        Err(RingCorrupt::Length { len: 13, .. })
    ));
    poke(HEADER_SIZE, 5);
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"hello");

    // The producer's head is 16 (one 16-byte record).
    poke(TAIL_OFFSET, 0xffff_fff8); // 24 behind head: legal, if odd
    assert_eq!(producer.len(), Ok(24));
    poke(TAIL_OFFSET, 0x1000); // ahead of head
    assert_eq!(
        producer.len(),
        Err(RingCorrupt::Tail {
            head: 16,
            tail: 0x1000
        })
    );
    for _ in 0..100 {
        // The cached tail still has room for a few; then the bad tail is seen.
        if let Err(e) = producer.push(&[1; 40]) {
            assert!(matches!(e, PushError::Corrupt(RingCorrupt::Tail { .. })));
            return;
        }
    }
    panic!("a corrupt tail was never reported");
}

/// The fast paths' look: empty only when the peer's index equals ours, so a hostile index
/// never reads as empty (it sends the caller to the checked `is_empty`).
#[test]
fn empty_at_a_glance_is_empty_only_for_equal_indices() {
    let mut page = page();
    let base = page.0.as_mut_ptr();
    // SAFETY: as in `hostile_indices_and_lengths_are_typed_errors`.
    let mut producer = unsafe { Producer::attach(base, 1024) }.unwrap();
    // SAFETY: as above.
    let mut consumer = unsafe { Consumer::attach(base, 1024) }.unwrap();
    assert!(producer.empty_at_a_glance() && consumer.empty_at_a_glance());
    producer.push(b"hello").unwrap();
    assert!(!producer.empty_at_a_glance() && !consumer.empty_at_a_glance());
    assert_eq!(&*consumer.pop().unwrap().unwrap(), b"hello");
    assert!(producer.empty_at_a_glance() && consumer.empty_at_a_glance());
    // SAFETY: `base` is valid for the whole page; no handle is running.
    let poke = |offset: usize, value: u32| unsafe {
        ptr::write_unaligned(base.add(offset).cast::<u32>(), value.to_le())
    };
    poke(TAIL_OFFSET, 0x1000);
    assert!(!producer.empty_at_a_glance());
    assert!(producer.is_empty().is_err());
    poke(HEAD_OFFSET, 4096);
    assert!(!consumer.empty_at_a_glance());
    assert!(consumer.is_empty().is_err());
}

#[test]
fn errors_display_one_line() {
    let text = std::format!(
        "{}",
        RingCorrupt::Length {
            at: 8,
            len: 999,
            available: 16
        }
    );
    assert_eq!(
        text,
        "ring corrupt: record at 0x8 claims 999 bytes, 16 published"
    );
    let text = std::format!(
        "{}",
        PushError::Full {
            needed: 16,
            free: 8
        }
    );
    assert_eq!(text, "ring full: need 16 bytes, 8 free");
}
