//! Loom models of the ring: every interleaving of one producer and one consumer on tiny rings.
//!
//! Built only with `RUSTFLAGS="--cfg loom"` (`tests/loom_models.rs` runs it from an ordinary
//! `cargo test`). Under loom the ring's atomics are loom's and each 8-byte granule of the data
//! area has a tracked shadow cell, so besides the content checks below, loom itself fails a
//! model if the consumer reads bytes that are not ordered after the producer's write of them,
//! or the producer overwrites bytes the consumer may still be reading. The rings are 16 or 32
//! bytes (two or four minimal records), so every model wraps around the data area. The slot
//! ring's models (at the end) do the same with a shadow cell per slot and two or four slots.
//!
//! Waiting sides call `loom::thread::yield_now()`: loom then runs the other thread, which is
//! how it explores spin loops without an unbounded state space.
#![cfg(loom)]

use ipc::ring::{PushError, RingStorage};
use ipc::{Reply, ServerMessage, Token};
use loom::thread;

/// A `'static` ring for loom's `'static` threads. Each model iteration leaks one (a few hundred
/// bytes); loom only reports leaks of its own `Arc`s and allocations.
fn leaked<const CAPACITY: usize>() -> &'static mut RingStorage<CAPACITY> {
    Box::leak(Box::new(RingStorage::new()))
}

/// A payload that says which record it is: `len` bytes, each `tag + index`.
fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

/// Pushes without counting drops, yielding while the ring is full.
fn push_waiting(producer: &mut ipc::Producer<'_>, bytes: &[u8]) {
    loop {
        match producer.try_push(bytes) {
            Ok(()) => return,
            Err(PushError::Full { .. }) => thread::yield_now(),
            Err(e) => panic!("push failed: {e}"),
        }
    }
}

/// Pops one record, yielding while the ring is empty.
fn pop_waiting(consumer: &mut ipc::Consumer<'_>) -> Vec<u8> {
    loop {
        match consumer.pop() {
            Ok(Some(record)) => return record.to_vec(),
            Ok(None) => thread::yield_now(),
            Err(e) => panic!("ring reported corrupt: {e}"),
        }
    }
}

#[test]
fn records_arrive_whole_and_in_order() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked::<16>().split();
        let lengths = [1, 4, 2];
        let writer = thread::spawn(move || {
            for (tag, len) in lengths.into_iter().enumerate() {
                push_waiting(&mut producer, &payload(tag as u8 * 16, len));
            }
        });
        for (tag, len) in lengths.into_iter().enumerate() {
            assert_eq!(pop_waiting(&mut consumer), payload(tag as u8 * 16, len));
        }
        writer.join().unwrap();
        assert_eq!(consumer.pop().unwrap().map(|r| r.len()), None);
    });
}

#[test]
fn a_payload_that_wraps_is_copied_in_two_parts() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked::<32>().split();
        // 24 bytes (0..24), then a 16-byte record at 24 whose payload runs 28..37: it wraps.
        let writer = thread::spawn(move || {
            push_waiting(&mut producer, &payload(1, 20));
            push_waiting(&mut producer, &payload(100, 9));
        });
        assert_eq!(pop_waiting(&mut consumer), payload(1, 20));
        assert_eq!(pop_waiting(&mut consumer), payload(100, 9));
        writer.join().unwrap();
    });
}

#[test]
fn batches_publish_together() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked::<32>().split();
        let writer = thread::spawn(move || {
            let records = [
                payload(10, 3),
                payload(20, 1),
                payload(30, 4),
                payload(40, 2),
            ];
            let mut sent = 0;
            while sent < records.len() {
                let batch = records[sent..].iter().map(Vec::as_slice);
                match producer.push_batch(batch) {
                    Ok(0) => thread::yield_now(),
                    Ok(pushed) => sent += pushed,
                    Err(e) => panic!("batch failed: {e}"),
                }
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match consumer.pop_batch(usize::MAX, |record| seen.push(record.to_vec())) {
                Ok(0) => thread::yield_now(),
                Ok(_) => {}
                Err(e) => panic!("ring reported corrupt: {e}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(
            seen,
            [
                payload(10, 3),
                payload(20, 1),
                payload(30, 4),
                payload(40, 2)
            ]
        );
    });
}

#[test]
fn a_full_ring_drops_with_a_count_and_loses_nothing_else() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked::<16>().split();
        let writer = thread::spawn(move || {
            let mut accepted = Vec::new();
            for tag in 0..4u8 {
                match producer.push(&[tag; 3]) {
                    Ok(()) => accepted.push(tag),
                    Err(PushError::Full { .. }) => {}
                    Err(e) => panic!("push failed: {e}"),
                }
            }
            assert_eq!(producer.dropped() as usize, 4 - accepted.len());
            accepted
        });
        let mut seen = Vec::new();
        // Race the producer for a bit, then collect what is left after it is done.
        for _ in 0..2 {
            if let Some(record) = consumer.pop().unwrap() {
                seen.push(record[0]);
            }
        }
        let accepted = writer.join().unwrap();
        while let Some(record) = consumer.pop().unwrap() {
            assert_eq!(&*record, &[record[0]; 3]);
            seen.push(record[0]);
        }
        assert_eq!(
            seen, accepted,
            "every accepted record arrives once, in order"
        );
        assert!(
            accepted.len() >= 2,
            "an empty 16-byte ring takes two 8-byte records"
        );
        assert_eq!(consumer.dropped_by_producer() as usize, 4 - accepted.len());
    });
}

#[test]
fn typed_messages_cross_the_ring() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked::<32>().split();
        let writer = thread::spawn(move || {
            for token in 0..3 {
                let reply = ServerMessage::Reply(Reply::Resume {
                    token: Token(token),
                });
                loop {
                    match producer.try_push_message(&reply) {
                        Ok(()) => break,
                        Err(ipc::SendError::Push(PushError::Full { .. })) => thread::yield_now(),
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
            }
        });
        for token in 0..3 {
            let message = loop {
                match consumer.pop_message::<ServerMessage>() {
                    Ok(Some(message)) => break message,
                    Ok(None) => thread::yield_now(),
                    Err(e) => panic!("receive failed: {e}"),
                }
            };
            assert_eq!(
                message,
                ServerMessage::Reply(Reply::Resume {
                    token: Token(token)
                })
            );
        }
        writer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// The slot ring (`ipc::ring::slots`): the same protocol over slot counts, one shadow cell per
// slot. Two- and four-slot rings, so every model wraps.

use ipc::ring::slots::{SlotConsumer, SlotProducer, SlotPushError, SlotStorage};

fn leaked_slots<const SLOTS: usize>() -> &'static mut SlotStorage<8, SLOTS> {
    Box::leak(Box::new(SlotStorage::new()))
}

/// Pushes without counting drops, yielding while the ring is full.
fn push_slot_waiting(producer: &mut SlotProducer<'_, 8>, record: [u8; 8]) {
    loop {
        match producer.try_push(&record) {
            Ok(()) => return,
            Err(SlotPushError::Full) => thread::yield_now(),
            Err(e) => panic!("push failed: {e}"),
        }
    }
}

/// Pops one slot, yielding while the ring is empty.
fn pop_slot_waiting(consumer: &mut SlotConsumer<'_, 8>) -> [u8; 8] {
    loop {
        match consumer.pop() {
            Ok(Some(record)) => return record,
            Ok(None) => thread::yield_now(),
            Err(e) => panic!("ring reported corrupt: {e}"),
        }
    }
}

#[test]
fn slots_arrive_whole_and_in_order() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked_slots::<2>().split();
        let writer = thread::spawn(move || {
            for n in 0..3u64 {
                push_slot_waiting(&mut producer, (n * 0x0101_0101_0101_0101).to_le_bytes());
            }
        });
        for n in 0..3u64 {
            let record = pop_slot_waiting(&mut consumer);
            assert_eq!(record, (n * 0x0101_0101_0101_0101).to_le_bytes());
        }
        writer.join().unwrap();
        assert_eq!(consumer.pop().unwrap(), None);
    });
}

#[test]
fn slot_batches_publish_together() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked_slots::<4>().split();
        let writer = thread::spawn(move || {
            let mut sent = 0u8;
            while sent < 6 {
                let mut batch = producer.batch();
                while sent < 6 && batch.try_push(&[sent; 8]).is_ok() {
                    sent += 1;
                }
                if batch.commit() == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 6 {
            match consumer.pop_batch(usize::MAX, |record| seen.push(*record)) {
                Ok(0) => thread::yield_now(),
                Ok(_) => {}
                Err(e) => panic!("ring reported corrupt: {e}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(seen, (0..6u8).map(|n| [n; 8]).collect::<Vec<_>>());
    });
}

#[test]
fn a_full_slot_ring_drops_with_a_count_and_loses_nothing_else() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked_slots::<2>().split();
        let writer = thread::spawn(move || {
            let mut accepted = Vec::new();
            for tag in 0..4u8 {
                match producer.push(&[tag; 8]) {
                    Ok(()) => accepted.push(tag),
                    Err(SlotPushError::Full) => {}
                    Err(e) => panic!("push failed: {e}"),
                }
            }
            assert_eq!(producer.dropped() as usize, 4 - accepted.len());
            accepted
        });
        let mut seen = Vec::new();
        if let Some(record) = consumer.pop_with(|record| record[0]).unwrap() {
            seen.push(record);
        }
        let accepted = writer.join().unwrap();
        while let Some(record) = consumer.pop().unwrap() {
            assert_eq!(record, [record[0]; 8]);
            seen.push(record[0]);
        }
        assert_eq!(seen, accepted, "every accepted slot arrives once, in order");
        assert!(accepted.len() >= 2, "an empty ring takes two slots");
        assert_eq!(consumer.dropped_by_producer() as usize, 4 - accepted.len());
    });
}

/// Lazy release (a 4-slot ring publishes `tail` every 2 single pops): a producer that waits
/// for room and a consumer that waits for records never wait for each other, and nothing
/// read is overwritten before it was copied out.
#[test]
fn lazily_released_slots_free_the_ring_before_the_consumer_waits() {
    loom::model(|| {
        let (mut producer, mut consumer) = leaked_slots::<4>().split();
        let writer = thread::spawn(move || {
            for n in 0..6u8 {
                push_slot_waiting(&mut producer, [n; 8]);
            }
        });
        for n in 0..6u8 {
            assert_eq!(pop_slot_waiting(&mut consumer), [n; 8]);
        }
        writer.join().unwrap();
    });
}
