//! The reading half of a slot ring: single pops with lazy release, and batches.

use core::marker::PhantomData;

use super::{
    AttachError, CACHE_LINE, PREFETCH_BYTES, RingCorrupt, Slots, check_region, indices_ok,
};
use crate::sync::Ordering;

/// The reading half of a slot ring. Aligned for the same reason as [`SlotProducer`](super::SlotProducer).
///
/// Single pops publish `tail` lazily (see the module's "Lazy release"); dropping the consumer
/// publishes it.
#[repr(align(128))]
pub struct SlotConsumer<'a, const SLOT: usize> {
    slots: Slots<SLOT>,
    /// Our index: the next slot to read. Published to `tail`, never read back.
    tail: u32,
    /// The last believable `head` we loaded.
    cached_head: u32,
    /// The `tail` we published last.
    released: u32,
    /// Single pops publish `tail` when it is this many slots ahead of `released`.
    release_every: u32,
    _region: PhantomData<&'a mut [u8]>,
}

// SAFETY: a consumer is the only writer of `tail` and the only reader of the published slots;
// moving it to another thread moves that role with it and shares nothing.
unsafe impl<const SLOT: usize> Send for SlotConsumer<'_, SLOT> {}

impl<const SLOT: usize> SlotConsumer<'static, SLOT> {
    /// Attaches the consuming side to a slot-ring region; it resumes at the `tail` found there,
    /// after checking it against `head`.
    ///
    /// # Safety
    ///
    /// As for [`SlotProducer::attach`](super::SlotProducer::attach), with "one consumer per region".
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, AttachError> {
        let slots = check_region::<SLOT>(base, len)?;
        // SAFETY: as in `SlotProducer::attach`.
        let region = unsafe { Slots::new(base, slots) };
        let header = region.header();
        let tail = header.consumer.0.tail.load(Ordering::Relaxed);
        let head = header.producer.0.head.load(Ordering::Acquire);
        if !indices_ok(head, tail, region.slots()) {
            return Err(AttachError::Corrupt(RingCorrupt::Head { head, tail }));
        }
        Ok(Self::new(region, tail, head))
    }
}

/// Bytes a consumer's single pops take out of the ring before they publish `tail`: four cache
/// lines (but half the ring at most, and at least one slot).
pub const RELEASE_BYTES: usize = 256;

/// Slots a consumer of `slots` slots of `slot` bytes pops before it publishes `tail` (unless it
/// finds the ring empty first).
pub const fn release_every(slot: usize, slots: usize) -> usize {
    let mut every = RELEASE_BYTES / slot;
    if every > slots / 2 {
        every = slots / 2;
    }
    if every == 0 { 1 } else { every }
}

impl<'a, const SLOT: usize> SlotConsumer<'a, SLOT> {
    pub(super) const fn new(slots: Slots<SLOT>, tail: u32, head: u32) -> Self {
        Self {
            slots,
            tail,
            cached_head: head,
            released: tail,
            release_every: release_every(SLOT, slots.slots() as usize) as u32,
            _region: PhantomData,
        }
    }

    /// Number of slots.
    pub const fn slots(&self) -> usize {
        self.slots.slots() as usize
    }

    /// The producer's drop counter, as it claims it (diagnostics only).
    pub fn dropped_by_producer(&self) -> u32 {
        self.slots
            .header()
            .producer
            .0
            .dropped
            .load(Ordering::Relaxed)
    }

    /// Loads the producer's `head` and checks it against our `tail`.
    #[inline(always)]
    fn load_head(&self) -> Result<u32, RingCorrupt> {
        // Acquire: the producer's writes of the slots below `head` happen before our reads.
        let head = self.slots.header().producer.0.head.load(Ordering::Acquire);
        if indices_ok(head, self.tail, self.slots.slots()) {
            Ok(head)
        } else {
            Err(RingCorrupt::Head {
                head,
                tail: self.tail,
            })
        }
    }

    /// Slots published and not yet consumed, from a fresh look at `head`.
    pub fn len(&self) -> Result<usize, RingCorrupt> {
        Ok(self.load_head()?.wrapping_sub(self.tail) as usize)
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == 0)
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == self.slots())
    }

    /// Published slots not yet read, by the cached `head`, reloaded if fewer than `wanted`
    /// (at most one shared load); `beside_head`: ask for the next slot's line with it. Before
    /// it looks, publishes the slots read so far: a consumer that finds the ring empty (and
    /// may wait) has freed every slot it read.
    #[inline(always)]
    fn available(&mut self, wanted: u32, beside_head: bool) -> Result<u32, RingCorrupt> {
        // `cached_head` passed `indices_ok` against a `tail` at most this one, and `tail` moved
        // only over published slots since, so this is at most `slots`.
        let available = self.cached_head.wrapping_sub(self.tail);
        if available >= wanted {
            return Ok(available);
        }
        self.release_read();
        // The next slot's line, asked for beside `head`'s: if `head` shows it published, its
        // bytes are on the way already instead of being fetched only after `head` arrived (a
        // ping-pong round trip of 16-byte records: two transfers after each other became two
        // at once, 515 -> 428 ns). Only for single pops of slots smaller than a line: a
        // consumer that keeps catching up with a stream of line-sized records pulled the line
        // the producer was filling at every poll (the 128 B single row: ~25 M/s with it, ~37
        // without), and a batch, whose window asks for its lines once `head` shows them, did
        // the same to a producer filling its batch (16 B batched: 0.97-1.03x with it,
        // 1.01-1.40x without, 4 runs each).
        if beside_head && SLOT < CACHE_LINE {
            self.slots.prefetch(self.tail, 1);
        }
        self.cached_head = self.load_head()?;
        Ok(self.cached_head.wrapping_sub(self.tail))
    }

    /// Tells the producer the slots below our `tail` are free again.
    #[inline(always)]
    fn release(&mut self) {
        self.released = self.tail;
        // Release: our copies out of the freed slots happen before the producer reuses them.
        self.slots
            .header()
            .consumer
            .0
            .tail
            .store(self.tail, Ordering::Release);
    }

    /// [`release`](Self::release) if some slots were read since the last one.
    #[inline(always)]
    fn release_read(&mut self) {
        if self.released != self.tail {
            self.release();
        }
    }

    /// Takes the next record, copied out of its slot; `None` if the ring is empty. Its slot is
    /// freed lazily: `tail` is published every [`release_every`] pops, when a pop finds the
    /// ring empty, by [`pop_batch`](Self::pop_batch) and when the consumer is dropped.
    #[inline(always)]
    pub fn pop(&mut self) -> Result<Option<[u8; SLOT]>, RingCorrupt> {
        self.pop_with(|record| *record)
    }

    /// Takes the next record and hands its private copy to `f`; `None` if the ring is empty.
    /// Its slot is freed as by [`pop`](Self::pop). The copy is word-aligned and never moved,
    /// so this is the way for a hot path.
    #[inline(always)]
    pub fn pop_with<R>(
        &mut self,
        f: impl FnOnce(&[u8; SLOT]) -> R,
    ) -> Result<Option<R>, RingCorrupt> {
        if self.available(1, true)? == 0 {
            return Ok(None);
        }
        let record = self.slots.read(self.tail);
        self.tail = self.tail.wrapping_add(1);
        // `f` first: the copy is private, and a small one goes from the slot straight into
        // `f`'s work instead of waiting in registers (or on the stack) across the release.
        let result = f(&record.0);
        if self.tail.wrapping_sub(self.released) >= self.release_every {
            self.release();
        }
        Ok(Some(result))
    }

    /// Takes up to `max` records, handing each (a private copy) to `f` in order, and frees
    /// their slots (and any that single pops read before) with one store at the end; returns
    /// how many were taken. Loads `head` at most once.
    #[inline]
    pub fn pop_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8; SLOT]),
    ) -> Result<usize, RingCorrupt> {
        let wanted = max.min(self.slots()) as u32;
        let count = self.available(wanted, false)?.min(wanted);
        if count == 0 {
            // The poll of a waiting consumer: straight out, past the loop's setup.
            self.release_read();
            return Ok(0);
        }
        // Locals, which the compiler keeps in registers across the copies and `f` (through
        // `self` it would reload the region's address, its mask and our `tail` per record,
        // and a store of `tail` per record costs a store-buffer entry the copies need when
        // the peer's core holds the slots' lines).
        let slots = self.slots;
        let mut tail = TakenUpTo {
            tail: self.tail,
            to: &mut self.tail,
        };
        // Every line of the first `PREFETCH_BYTES` of the batch at once, then each slot read
        // moves that window on by a slot (within the batch: the slots past it may be unwritten,
        // and their lines the producer's). Slots smaller than a line move the window only at
        // the start: a batch of them is mostly inside the first window (32 of 16 bytes are),
        // and a check per slot cost the 16 B rows more than the rest of the window gave.
        let count_bytes = count as usize * SLOT;
        slots.prefetch(tail.tail, PREFETCH_BYTES.min(count_bytes));
        let ahead = PREFETCH_BYTES.div_ceil(SLOT) as u32;
        for n in 0..count {
            if SLOT >= CACHE_LINE && n + ahead < count {
                slots.prefetch_slot(tail.tail.wrapping_add(ahead));
            }
            let record = slots.read(tail.tail);
            tail.tail = tail.tail.wrapping_add(1);
            f(&record.0);
        }
        drop(tail);
        self.release_read();
        Ok(count as usize)
    }

    /// Publishes `tail` now: frees every slot read so far. Single pops do it by themselves
    /// every [`release_every`] slots and whenever they find the ring empty; a consumer that
    /// stops reading before that (and is not dropped) calls this.
    pub fn release_now(&mut self) {
        self.release_read();
    }
}

/// A batch's `tail` in a local, stored into the consumer's when the batch ends or `f` unwinds,
/// so a record handed out is taken either way.
struct TakenUpTo<'c> {
    tail: u32,
    to: &'c mut u32,
}

impl Drop for TakenUpTo<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.to = self.tail;
    }
}

impl<const SLOT: usize> Drop for SlotConsumer<'_, SLOT> {
    fn drop(&mut self) {
        self.release_read();
    }
}
