//! Single-producer, single-consumer ring of fixed-size slots, for streams whose records all
//! have one size: no length field to write, read or check, and every copy is `SLOT` bytes
//! known at compile time, so it is a few whole-word (or vector) moves.
//!
//! Same rules as the byte ring (the parent module): the region is shared with another address
//! space, holds only indices and bytes, and whatever the peer wrote is an allegation. Each side
//! keeps its own index privately and only publishes it; each caches the other side's index and
//! reloads it only when the cached one says "full" / "empty"; a slot is copied out of the region
//! into a private value, word by word and once, before anyone looks at it, so a peer that
//! rewrites a slot under us gives us garbage bytes, never bytes that change after a check. A
//! peer that scribbles over an index makes us return [`RingCorrupt`], never touch memory outside
//! the region, loop without bound or panic.
//!
//! # Layout (the ABI: both sides compute it from `SLOT` and the region length)
//!
//! The header is the byte ring's ([`HEAD_OFFSET`](super::HEAD_OFFSET),
//! [`DROPPED_OFFSET`](super::DROPPED_OFFSET), [`TAIL_OFFSET`](super::TAIL_OFFSET), each index
//! alone on its pair of cache lines); the data area at [`HEADER_SIZE`] holds `slots` slots of
//! `SLOT` bytes, `slots` = [`slots_for`]`(SLOT, len)`, a power of two. `head` and `tail` count
//! *slots*, free-running (they wrap at 2³²); slot `i` is at data offset `(i & (slots - 1)) *
//! SLOT`. A slot never straddles the end of the data area, so nothing is copied in two parts.
//! `SLOT` is part of the type on both sides: the two must agree on it as on the region's length.
//!
//! # Memory ordering
//!
//! As in the byte ring: the producer writes a slot with plain stores and publishes `head` with
//! `Release`; the consumer loads `head` with `Acquire` before it reads any slot below it,
//! copies slots out, and publishes `tail` with `Release`; the producer loads `tail` with
//! `Acquire` before it reuses a slot below it. A stale cached index under-states free slots or
//! available ones, never over-states them. Batches ([`SlotBatch`], [`SlotConsumer::pop_batch`])
//! publish once per batch and load the other side's index at most once per batch.
//!
//! # Lazy release
//!
//! Single pops do not publish `tail` each time: only once it is [`release_every`] slots
//! (about [`RELEASE_BYTES`]) ahead of what was published, whenever a pop finds the ring empty
//! (before it reloads `head`), at the end of a [`pop_batch`](SlotConsumer::pop_batch), on
//! [`release_now`](SlotConsumer::release_now) and when the consumer is dropped. A producer
//! that streams into a fuller ring than its consumer drains then reloads `tail` once per a few
//! cache lines of slots, not once per slot, and the `tail` line crosses between the cores as
//! seldom. The price: the producer may see up to `release_every - 1` slots as taken that the
//! consumer has read, so `Full` means "full by the published `tail`"; a consumer that waits
//! only after it found the ring empty has always published everything it read, so a producer
//! waiting for room and a consumer waiting for records never wait for each other.
//!
//! # Modules
//!
//! This file holds the geometry, the errors and [`SlotStorage`]; `region` every access to the
//! slots (copies, prefetches), `producer` [`SlotProducer`] and [`SlotBatch`], `consumer`
//! [`SlotConsumer`].
//!
//! # Copies and prefetches
//!
//! On hosts with SSE2 a slot of a multiple of 16 bytes is copied in and out as 16-byte
//! volatile accesses (fewer store-buffer entries for the producer, vector work for the
//! receiver), elsewhere (the nucleus) as words. Consumers ask the cache for lines they are
//! about to read, only ever of published slots in a batch ([`PREFETCH_BYTES`] ahead) and the
//! next slot beside a reload of `head`; a prefetch is a hint, never a read the program sees,
//! so none of the rules above depend on it. `docs/architecture-notes.md` has what each
//! bought.
//!
//! `tests/loom.rs` model-checks this protocol (a tracked shadow cell per slot),
//! `tests/hostile.rs` plays a peer that scribbles over the header and the slots, and
//! `tests/stress.rs` moves 10⁶ slots between two threads.

mod consumer;
mod producer;
mod region;

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr;

pub use consumer::{RELEASE_BYTES, SlotConsumer, release_every};
pub use producer::{SlotBatch, SlotProducer};
use region::Slots;

use super::{AttachError, HEADER_SIZE, REGION_ALIGN, RingCorrupt, RingHeader};
use crate::sync::Ordering;

/// Largest slot: records of fixed size are small messages, and a slot is copied into a
/// private value (on the stack) for every pop.
pub const MAX_SLOT: usize = 1024;
/// Bytes of published slots a batch consumer asks the cache for ahead of the slot it reads:
/// eight cache lines. The hardware's own prefetchers see a stream only after a few misses and
/// fetch one line after another; a batch knows which slots it will read, so it asks for their
/// lines together, and their transfers from the producer's core overlap (`cargo bench -p
/// ipc`, 16 B and 128 B batched: about 1.0x of `rtrb` without, 1.02x-1.31x with).
pub const PREFETCH_BYTES: usize = 512;

/// Cache line size the prefetches step by.
const CACHE_LINE: usize = 64;

/// Smallest number of slots a ring has.
pub const MIN_SLOTS: usize = 2;
/// Largest number of slots: indices are `u32`, so their distance must stay well below 2³².
pub const MAX_SLOTS: usize = 1 << 24;

/// Whether `SLOT` is a slot size the ring accepts: a multiple of 8 in `8..=MAX_SLOT`, so every
/// slot starts 8-byte aligned and copies as whole words.
pub const fn slot_size_ok(slot: usize) -> bool {
    slot >= 8 && slot <= MAX_SLOT && slot.is_multiple_of(8)
}

/// Slots of `slot` bytes a region of `len` bytes holds: the largest power of two whose slots
/// fit after the header (at most [`MAX_SLOTS`]), or `None` if that is below [`MIN_SLOTS`] or
/// `slot` is not a valid slot size.
pub const fn slots_for(slot: usize, len: usize) -> Option<usize> {
    if !slot_size_ok(slot) || len < HEADER_SIZE + MIN_SLOTS * slot {
        return None;
    }
    let mut room = (len - HEADER_SIZE) / slot;
    if room > MAX_SLOTS {
        room = MAX_SLOTS;
    }
    // Largest power of two <= room (room >= MIN_SLOTS > 0).
    Some(1 << (usize::BITS - 1 - room.leading_zeros()))
}

/// Region length needed for `slots` slots of `slot` bytes.
pub const fn slot_region_len(slot: usize, slots: usize) -> usize {
    HEADER_SIZE + slot * slots
}

/// Why a slot was not pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPushError {
    /// Every slot is taken right now.
    Full,
    /// The consumer's `tail` is not believable.
    Corrupt(RingCorrupt),
}

impl fmt::Display for SlotPushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("slot ring full"),
            Self::Corrupt(e) => e.fmt(f),
        }
    }
}

/// Checks that `head` is at most `slots` slots ahead of `tail`.
#[inline(always)]
const fn indices_ok(head: u32, tail: u32, slots: u32) -> bool {
    head.wrapping_sub(tail) <= slots
}

/// A record in private memory, 8-byte aligned, so that it is copied into and out of its slot
/// in whole words (and kept in registers when small). A bare `[u8; SLOT]` may sit at any
/// address: inside an `Option` it does, one byte in, and every copy of it is then split into
/// 2- and 4-byte pieces whose reassembly stalls on store forwarding.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Words<const SLOT: usize>([u8; SLOT]);

/// A validated region: checks alignment and size, and returns the number of slots.
fn check_region<const SLOT: usize>(base: *mut u8, len: usize) -> Result<usize, AttachError> {
    if base.is_null() || !(base as usize).is_multiple_of(REGION_ALIGN) {
        return Err(AttachError::Misaligned {
            addr: base as usize,
        });
    }
    slots_for(SLOT, len).ok_or(AttachError::TooSmall { len })
}

/// Writes an empty header into a region, making it a fresh slot ring of `SLOT`-byte slots;
/// returns its number of slots. (A zero-filled region is already an empty ring.)
///
/// # Safety
///
/// `base` must be valid for writes of `len` bytes and no [`SlotProducer`] or [`SlotConsumer`]
/// may be attached to the region while this runs.
pub unsafe fn init<const SLOT: usize>(base: *mut u8, len: usize) -> Result<usize, AttachError> {
    let slots = check_region::<SLOT>(base, len)?;
    // SAFETY: `check_region` proved `base` aligned for `RingHeader` and `len` covers the
    // header; the caller guarantees validity for writes and that nobody else uses the region.
    unsafe { ptr::write(base.cast::<RingHeader>(), RingHeader::new()) };
    Ok(slots)
}

/// A slot ring in memory the caller owns: `SLOTS` slots of `SLOT` bytes (`SLOTS` a power of
/// two in `MIN_SLOTS..=MAX_SLOTS`), laid out as a shared region would be.
#[repr(C)]
pub struct SlotStorage<const SLOT: usize, const SLOTS: usize> {
    header: RingHeader,
    data: UnsafeCell<[[u8; SLOT]; SLOTS]>,
    #[cfg(loom)]
    shadow: std::boxed::Box<[crate::sync::ShadowCell]>,
}

impl<const SLOT: usize, const SLOTS: usize> SlotStorage<SLOT, SLOTS> {
    const VALID: () = assert!(
        slot_size_ok(SLOT) && SLOTS.is_power_of_two() && SLOTS >= MIN_SLOTS && SLOTS <= MAX_SLOTS,
        "a slot ring has a power of two of MIN_SLOTS..=MAX_SLOTS slots of a valid size"
    );

    /// An empty ring.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::VALID;
        Self {
            header: RingHeader::new(),
            data: UnsafeCell::new([[0; SLOT]; SLOTS]),
        }
    }

    /// An empty ring whose slot accesses loom checks.
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::VALID;
        Self {
            header: RingHeader::new(),
            data: UnsafeCell::new([[0; SLOT]; SLOTS]),
            shadow: (0..SLOTS)
                .map(|_| crate::sync::ShadowCell::new(()))
                .collect(),
        }
    }

    /// Splits the ring into its two halves, which borrow it. The ring keeps its contents and
    /// indices across splits.
    pub fn split(&mut self) -> (SlotProducer<'_, SLOT>, SlotConsumer<'_, SLOT>) {
        let base = ptr::from_mut(self).cast::<u8>();
        // SAFETY: `Self` is `repr(C)` with the header (128-byte aligned, `HEADER_SIZE` bytes)
        // first and the `SLOTS * SLOT`-byte data area right after it; `VALID` checked `SLOTS`.
        // The data area is inside an `UnsafeCell`, so writing it through the handles is
        // allowed, and the `&mut self` borrow held by both handles keeps anyone else out.
        #[allow(unused_mut)]
        let mut region = unsafe { Slots::new(base, SLOTS) };
        #[cfg(loom)]
        {
            region.shadow = self.shadow.as_ptr();
        }
        let header = region.header();
        // Ordinary memory, but checked like any other ring.
        let head = header.producer.0.head.load(Ordering::Acquire);
        let tail = header.consumer.0.tail.load(Ordering::Acquire);
        let dropped = header.producer.0.dropped.load(Ordering::Relaxed);
        let (head, tail) = if indices_ok(head, tail, SLOTS as u32) {
            (head, tail)
        } else {
            (0, 0)
        };
        (
            SlotProducer::new(region, head, tail, dropped),
            SlotConsumer::new(region, tail, head),
        )
    }
}

#[cfg(not(loom))]
impl<const SLOT: usize, const SLOTS: usize> Default for SlotStorage<SLOT, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
