//! Two-thread stress tests: 10⁶ records of pseudo-random length through one 4 KiB ring, and 10⁶
//! fixed-size records through a slot ring.
//!
//! Both threads derive every record from its sequence number with the same generator, so the
//! consumer knows exactly what must come next: a lost, duplicated, reordered or torn record
//! fails on the spot with its sequence number. A checksum over every payload byte, computed
//! independently on each side, is compared at the end. Pushes and pops alternate between the
//! single and the batched paths. A waiting side yields instead of spinning hard: the CI
//! machine has two cores, shared with the build.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use ipc::ring::{MAX_RECORD, PushError, RingStorage};

const MESSAGES: u64 = 1_000_000;

/// splitmix64: a good enough hash of the sequence number.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Record `seq`: a length in 8..=MAX_RECORD (mostly short, as real messages are), the
/// sequence number in the first 8 bytes, then bytes derived from the hash.
fn fill(seq: u64, buf: &mut [u8; MAX_RECORD]) -> usize {
    let hash = mix(seq);
    let len = if hash & 7 == 0 {
        8 + (hash >> 8) as usize % (MAX_RECORD - 7)
    } else {
        8 + (hash >> 8) as usize % 57
    };
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let seed = (hash >> 32) as u8;
    for (i, byte) in buf[8..len].iter_mut().enumerate() {
        *byte = seed.wrapping_add(i as u8);
    }
    len
}

/// A checksum that depends on byte order within and across records (FNV-1a over 8-byte
/// words, the tail bytes one by one).
fn checksum(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        sum = (sum ^ u64::from_le_bytes(word.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &byte in words.remainder() {
        sum = (sum ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    sum ^ bytes.len() as u64
}

/// Set when the consumer stops (normally or by a failed assertion), so a producer waiting for
/// space gives up instead of hanging the test.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_million_records_arrive_exactly_once_in_order() {
    let mut ring = Box::new(RingStorage::<4096>::new());
    let (mut producer, mut consumer) = ring.split();

    let consumer_stopped = AtomicBool::new(false);
    let stopped = &consumer_stopped;

    let (sent_sum, received_sum) = thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut sum = 0xcbf2_9ce4_8422_2325u64;
            let mut buf = [0u8; MAX_RECORD];
            let mut seq = 0;
            while seq < MESSAGES && !stopped.load(Ordering::Relaxed) {
                if mix(seq) & 0x10 == 0 {
                    // Batched: up to 16 records, one publish.
                    let mut batch = producer.batch();
                    while seq < MESSAGES && batch.len() < 16 {
                        let len = fill(seq, &mut buf);
                        match batch.try_push(&buf[..len]) {
                            Ok(()) => {
                                sum = checksum(sum, &buf[..len]);
                                seq += 1;
                            }
                            Err(PushError::Full { .. }) => break,
                            Err(e) => panic!("push {seq}: {e}"),
                        }
                    }
                    if batch.commit() == 0 {
                        thread::yield_now();
                    }
                } else {
                    let len = fill(seq, &mut buf);
                    match producer.try_push(&buf[..len]) {
                        Ok(()) => {
                            sum = checksum(sum, &buf[..len]);
                            seq += 1;
                        }
                        Err(PushError::Full { .. }) => thread::yield_now(),
                        Err(e) => panic!("push {seq}: {e}"),
                    }
                }
            }
            assert_eq!(producer.dropped(), 0, "try_push never counts drops");
            sum
        });

        let _stop = StopOnDrop(stopped);
        let mut sum = 0xcbf2_9ce4_8422_2325u64;
        let mut expected = [0u8; MAX_RECORD];
        let mut seq = 0u64;
        let mut check = |record: &[u8], seq: &mut u64, sum: &mut u64| {
            let len = fill(*seq, &mut expected);
            assert!(record.len() >= 8, "record {seq}: {} bytes", record.len());
            let got = u64::from_le_bytes(record[..8].try_into().unwrap());
            assert_eq!(
                got, *seq,
                "expected record {seq}, got {got} (lost, duplicated or reordered)"
            );
            assert_eq!(record, &expected[..len], "record {seq} torn or misframed");
            *sum = checksum(*sum, record);
            *seq += 1;
        };
        while seq < MESSAGES {
            let taken = if seq.is_multiple_of(3) {
                match consumer.pop() {
                    Ok(Some(record)) => {
                        check(&record, &mut seq, &mut sum);
                        1
                    }
                    Ok(None) => 0,
                    Err(e) => panic!("pop at {seq}: {e}"),
                }
            } else {
                match consumer.pop_batch(32, |record| check(record, &mut seq, &mut sum)) {
                    Ok(taken) => taken,
                    Err(e) => panic!("pop at {seq}: {e}"),
                }
            };
            if taken == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(
            consumer.pop().map(|r| r.is_none()),
            Ok(true),
            "nothing after the last record"
        );
        (writer.join().unwrap(), sum)
    });
    assert_eq!(
        sent_sum, received_sum,
        "checksums of all payload bytes differ"
    );
}

/// Slot `seq` of the slot-ring stress test: the sequence number, then words derived from it.
fn slot(seq: u64) -> [u8; 32] {
    let mut bytes = [0; 32];
    for (i, word) in bytes.chunks_exact_mut(8).enumerate() {
        let value = if i == 0 { seq } else { mix(seq ^ i as u64) };
        word.copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// The slot ring (`ipc::ring::slots`): 10⁶ 32-byte slots through a 64-slot ring, single and
/// batched pushes and pops mixed as above.
#[test]
fn a_million_slots_arrive_exactly_once_in_order() {
    use ipc::ring::slots::{SlotPushError, SlotStorage};

    let mut ring = Box::new(SlotStorage::<32, 64>::new());
    let (mut producer, mut consumer) = ring.split();
    let consumer_stopped = AtomicBool::new(false);
    let stopped = &consumer_stopped;

    thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut seq = 0;
            while seq < MESSAGES && !stopped.load(Ordering::Relaxed) {
                if mix(seq) & 0x10 == 0 {
                    let mut batch = producer.batch();
                    while seq < MESSAGES && batch.len() < 16 {
                        match batch.try_push_with(|record| *record = slot(seq)) {
                            Ok(()) => seq += 1,
                            Err(SlotPushError::Full) => break,
                            Err(e) => panic!("push {seq}: {e}"),
                        }
                    }
                    if batch.commit() == 0 {
                        thread::yield_now();
                    }
                } else {
                    match producer.try_push(&slot(seq)) {
                        Ok(()) => seq += 1,
                        Err(SlotPushError::Full) => thread::yield_now(),
                        Err(e) => panic!("push {seq}: {e}"),
                    }
                }
            }
            assert_eq!(producer.dropped(), 0, "try_push never counts drops");
        });

        let _stop = StopOnDrop(stopped);
        let mut seq = 0u64;
        let check = |record: &[u8; 32], seq: &mut u64| {
            let got = u64::from_le_bytes(record[..8].try_into().unwrap());
            assert_eq!(
                got, *seq,
                "expected slot {seq}, got {got} (lost, duplicated or reordered)"
            );
            assert_eq!(*record, slot(*seq), "slot {seq} torn");
            *seq += 1;
        };
        while seq < MESSAGES {
            let taken = if seq.is_multiple_of(3) {
                match consumer.pop() {
                    Ok(Some(record)) => {
                        check(&record, &mut seq);
                        1
                    }
                    Ok(None) => 0,
                    Err(e) => panic!("pop at {seq}: {e}"),
                }
            } else {
                match consumer.pop_batch(32, |record| check(record, &mut seq)) {
                    Ok(taken) => taken,
                    Err(e) => panic!("pop at {seq}: {e}"),
                }
            };
            if taken == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(consumer.pop(), Ok(None), "nothing after the last slot");
        writer.join().unwrap();
    });
}
