//! The writing half of a slot ring and its batches.

use core::marker::PhantomData;

use super::{AttachError, RingCorrupt, SlotPushError, Slots, Words, check_region, indices_ok};
use crate::sync::Ordering;

/// The writing half of a slot ring. Aligned like the byte ring's [`Producer`](crate::ring::Producer),
/// so its private state never shares a cache line (or prefetch pair) with a consumer's.
#[repr(align(128))]
pub struct SlotProducer<'a, const SLOT: usize> {
    slots: Slots<SLOT>,
    /// Our index: the next slot to fill. Published to `head`, never read back.
    head: u32,
    /// The last believable `tail` we loaded.
    cached_tail: u32,
    /// Pushes refused because the ring was full. Published to `dropped`, never read back.
    dropped: u32,
    _region: PhantomData<&'a mut [u8]>,
}

// SAFETY: a producer is the only writer of `head`, `dropped` and the free slots of its ring;
// moving it to another thread moves that role with it and shares nothing.
unsafe impl<const SLOT: usize> Send for SlotProducer<'_, SLOT> {}

impl<const SLOT: usize> SlotProducer<'static, SLOT> {
    /// Attaches the producing side to a slot-ring region (for example a shared page); it
    /// resumes at the `head` found there, after checking it against `tail`.
    ///
    /// # Safety
    ///
    /// As for the byte ring's [`Producer::attach`](crate::ring::Producer::attach): `base` valid for
    /// reads and writes of `len` bytes while the producer is used, one producer per region, and
    /// both sides given the same `len` and `SLOT`.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, AttachError> {
        let slots = check_region::<SLOT>(base, len)?;
        // SAFETY: `check_region` proved alignment and `len >= HEADER_SIZE + slots * SLOT`;
        // the caller guarantees validity for the producer's lifetime.
        let region = unsafe { Slots::new(base, slots) };
        let header = region.header();
        let head = header.producer.0.head.load(Ordering::Relaxed);
        let tail = header.consumer.0.tail.load(Ordering::Acquire);
        if !indices_ok(head, tail, region.slots()) {
            return Err(AttachError::Corrupt(RingCorrupt::Tail { head, tail }));
        }
        let dropped = header.producer.0.dropped.load(Ordering::Relaxed);
        Ok(Self::new(region, head, tail, dropped))
    }
}

impl<'a, const SLOT: usize> SlotProducer<'a, SLOT> {
    pub(super) const fn new(slots: Slots<SLOT>, head: u32, tail: u32, dropped: u32) -> Self {
        Self {
            slots,
            head,
            cached_tail: tail,
            dropped,
            _region: PhantomData,
        }
    }

    /// Number of slots.
    pub const fn slots(&self) -> usize {
        self.slots.slots() as usize
    }

    /// Pushes refused because the ring was full, since the ring was created.
    pub const fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Loads the consumer's `tail` and checks it against our `head`.
    #[inline(always)]
    fn load_tail(&self) -> Result<u32, RingCorrupt> {
        // Acquire: the consumer's reads of the slots below `tail` happen before we reuse them.
        let tail = self.slots.header().consumer.0.tail.load(Ordering::Acquire);
        if indices_ok(self.head, tail, self.slots.slots()) {
            Ok(tail)
        } else {
            Err(RingCorrupt::Tail {
                head: self.head,
                tail,
            })
        }
    }

    /// Slots in use (published and not yet consumed), from a fresh look at `tail`.
    pub fn len(&self) -> Result<usize, RingCorrupt> {
        Ok(self.head.wrapping_sub(self.load_tail()?) as usize)
    }

    /// Whether nothing is waiting for the consumer.
    pub fn is_empty(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == 0)
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == self.slots())
    }

    /// Free slots according to the cached `tail`: never more than there really are.
    /// `cached_tail` passed `indices_ok` against a `head` at most this one, and `head` moved
    /// only into free slots since, so the difference is at most `slots`.
    #[inline(always)]
    const fn cached_free(&self) -> u32 {
        self.slots.slots() - self.head.wrapping_sub(self.cached_tail)
    }

    /// The cached `tail` says every slot is taken: reloads it. On `Full`, counts a drop if
    /// `count_drop`. Inline and without a call: a producer that waits for room polls this,
    /// and as a call returning its `Result` through memory it cost that poll 3-4x what
    /// `rtrb`'s does (9 ns against 2.5 on the development VM), paid on every spin.
    #[inline(always)]
    fn make_room(&mut self, count_drop: bool) -> Result<(), SlotPushError> {
        self.cached_tail = self.load_tail().map_err(SlotPushError::Corrupt)?;
        if self.cached_free() > 0 {
            return Ok(());
        }
        if count_drop {
            self.count_drops(1);
        }
        Err(SlotPushError::Full)
    }

    /// Makes sure one slot is free at our `head`. The fast path touches no shared index.
    #[inline(always)]
    fn reserve(&mut self, count_drop: bool) -> Result<(), SlotPushError> {
        if self.cached_free() == 0 {
            self.make_room(count_drop)?;
        }
        Ok(())
    }

    /// Writes `record` into the slot at `head`, which must be free, and advances our private
    /// `head`; does not publish.
    #[inline(always)]
    fn write(&mut self, record: &Words<SLOT>) {
        let head = self.head;
        self.head = head.wrapping_add(1);
        self.slots.write(head, record);
    }

    /// Makes every slot written so far visible to the consumer.
    #[inline(always)]
    fn publish(&self) {
        // Release: the slot bytes written before this store are visible to a consumer that
        // loads this `head` with Acquire.
        self.slots
            .header()
            .producer
            .0
            .head
            .store(self.head, Ordering::Release);
    }

    /// Pushes one record and publishes it. If the ring is full the record is dropped, the drop
    /// counter goes up and `Full` is returned (a nucleus never waits for a server).
    #[inline(always)]
    pub fn push(&mut self, record: &[u8; SLOT]) -> Result<(), SlotPushError> {
        self.reserve(true)?;
        self.write(&Words(*record));
        self.publish();
        Ok(())
    }

    /// Like [`push`](Self::push), but a full ring is not counted as a drop: for a caller that
    /// will wait and try again.
    #[inline(always)]
    pub fn try_push(&mut self, record: &[u8; SLOT]) -> Result<(), SlotPushError> {
        self.reserve(false)?;
        self.write(&Words(*record));
        self.publish();
        Ok(())
    }

    /// Lets `fill` write the record, then pushes it as [`try_push`](Self::try_push) does. The
    /// room is checked first, so `fill` runs only if the record will go out. `fill` writes into
    /// a private, zeroed record (the peer never sees our stack), which the compiler keeps in
    /// registers for small slots; it is copied into the slot in whole words.
    #[inline(always)]
    pub fn try_push_with<R>(
        &mut self,
        fill: impl FnOnce(&mut [u8; SLOT]) -> R,
    ) -> Result<R, SlotPushError> {
        self.reserve(false)?;
        let mut record = Words([0; SLOT]);
        let result = fill(&mut record.0);
        self.write(&record);
        self.publish();
        Ok(result)
    }

    /// Counts `records` messages the caller could not send in the ring's `dropped` counter,
    /// which the consumer can read.
    pub fn count_drops(&mut self, records: u32) {
        self.dropped = self.dropped.wrapping_add(records);
        // Relaxed: a statistic for diagnostics; it orders nothing.
        self.slots
            .header()
            .producer
            .0
            .dropped
            .store(self.dropped, Ordering::Relaxed);
    }

    /// Starts a batch: records pushed into it are written straight into their slots and
    /// published together, with one store, when the batch is committed or dropped.
    #[inline(always)]
    pub fn batch(&mut self) -> SlotBatch<'_, 'a, SLOT> {
        SlotBatch {
            start: self.head,
            head: self.head,
            limit: self.cached_tail.wrapping_add(self.slots.slots()),
            slots: self.slots,
            producer: self,
        }
    }
}

/// Records pushed but not yet published; publishing happens on [`commit`](Self::commit) or
/// drop. Free slots are checked record by record against the cached `tail`, which is reloaded
/// (at most once per record that finds the ring full by it).
///
/// The batch keeps what its pushes need in itself (our `head`, where the cached `tail` says
/// the ring is full, the ring's geometry), a local value the compiler keeps in registers, so a
/// push is a compare and the slot's stores: nothing is reloaded through the producer after
/// each slot write, which the compiler could not tell apart from the producer's own fields,
/// and nothing is stored into it either. The producer's `head` is brought up to date only
/// where it is read: before a reload of `tail` and when the batch ends. (Storing it after
/// every slot cost a third store per 16-byte record, and a producer whose slots' lines are in
/// the consumer's cache waits on its store buffer: the 16 B batched row went from 0.68x of
/// `rtrb` to 0.95x without that store.)
pub struct SlotBatch<'p, 'a, const SLOT: usize> {
    /// The producer's private `head` when the batch began.
    start: u32,
    /// The next slot to fill: the producer's `head` runs behind it until the batch ends.
    head: u32,
    /// `cached_tail + slots`: `head` has reached it when the cached `tail` says "full".
    limit: u32,
    /// The producer's region (a copy: it never changes).
    slots: Slots<SLOT>,
    producer: &'p mut SlotProducer<'a, SLOT>,
}

impl<const SLOT: usize> SlotBatch<'_, '_, SLOT> {
    /// Makes sure the slot at our `head` is free: by the cached `tail` (a compare), else by a
    /// fresh one ([`SlotProducer::make_room`]).
    #[inline(always)]
    fn reserve(&mut self, count_drop: bool) -> Result<(), SlotPushError> {
        if self.head == self.limit {
            // `make_room` checks `tail` against the producer's `head`.
            self.producer.head = self.head;
            self.producer.make_room(count_drop)?;
            self.limit = self.producer.cached_tail.wrapping_add(self.slots.slots());
        }
        Ok(())
    }

    /// Writes `record` into the slot at our `head`, which must be free, and advances our
    /// `head` (not yet the producer's); does not publish.
    #[inline(always)]
    fn write(&mut self, record: &Words<SLOT>) {
        let head = self.head;
        self.head = head.wrapping_add(1);
        self.slots.write(head, record);
    }

    /// Adds a record to the batch; a full ring counts a drop, as [`SlotProducer::push`] does.
    #[inline(always)]
    pub fn push(&mut self, record: &[u8; SLOT]) -> Result<(), SlotPushError> {
        self.reserve(true)?;
        self.write(&Words(*record));
        Ok(())
    }

    /// Adds a record to the batch; a full ring is not counted, as [`SlotProducer::try_push`].
    #[inline(always)]
    pub fn try_push(&mut self, record: &[u8; SLOT]) -> Result<(), SlotPushError> {
        self.reserve(false)?;
        self.write(&Words(*record));
        Ok(())
    }

    /// Adds a record `fill` writes, as [`SlotProducer::try_push_with`] does.
    #[inline(always)]
    pub fn try_push_with<R>(
        &mut self,
        fill: impl FnOnce(&mut [u8; SLOT]) -> R,
    ) -> Result<R, SlotPushError> {
        self.reserve(false)?;
        let mut record = Words([0; SLOT]);
        let result = fill(&mut record.0);
        self.write(&record);
        Ok(result)
    }

    /// Records added so far.
    pub const fn len(&self) -> usize {
        self.head.wrapping_sub(self.start) as usize
    }

    /// Whether no record was added yet.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes the batch and returns how many records it held.
    #[inline]
    pub fn commit(self) -> usize {
        self.len() // publishing happens in `drop`
    }

    /// Forgets every record of the batch: nothing is published, the ring is as it was before
    /// [`SlotProducer::batch`]. Returns how many records were forgotten.
    pub fn abandon(mut self) -> usize {
        let forgotten = self.len();
        // The slots written stay invisible to the consumer, which reads only below the
        // published `head`; the next push overwrites them. `drop` hands `start` back to the
        // producer as its `head`.
        self.head = self.start;
        forgotten
    }
}

impl<const SLOT: usize> Drop for SlotBatch<'_, '_, SLOT> {
    #[inline(always)]
    fn drop(&mut self) {
        self.producer.head = self.head;
        if self.head != self.start {
            self.producer.publish();
        }
    }
}
