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

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr;

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

/// Where the ring lives, as seen from this address space. Every access to the data area goes
/// through [`write`](Self::write) and [`read`](Self::read), which mask the index, so they stay
/// inside the data area whatever the caller computed.
#[derive(Clone, Copy)]
struct Slots<const SLOT: usize> {
    header: *const RingHeader,
    data: *mut u8,
    /// `slots - 1`; `slots` a power of two in `MIN_SLOTS..=MAX_SLOTS`.
    mask: u32,
    /// Loom builds: one tracked cell per slot, or none (attached).
    #[cfg(loom)]
    shadow: *const crate::sync::ShadowCell,
}

impl<const SLOT: usize> Slots<SLOT> {
    const VALID: () = assert!(
        slot_size_ok(SLOT),
        "a slot is a multiple of 8 bytes in 8..=MAX_SLOT"
    );

    /// # Safety
    ///
    /// `base` is [`REGION_ALIGN`]-aligned and valid for reads and writes of
    /// `HEADER_SIZE + slots * SLOT` bytes for as long as the returned value (or any copy) is
    /// used, `slots` is a power of two in `MIN_SLOTS..=MAX_SLOTS`, and the first `HEADER_SIZE`
    /// bytes hold a [`RingHeader`] (any bit pattern does in real builds).
    unsafe fn new(base: *mut u8, slots: usize) -> Self {
        let () = Self::VALID;
        Self {
            header: base.cast::<RingHeader>(),
            // SAFETY: the caller guarantees `HEADER_SIZE + slots * SLOT` bytes from `base`.
            data: unsafe { base.add(HEADER_SIZE) },
            mask: slots as u32 - 1,
            #[cfg(loom)]
            shadow: ptr::null(),
        }
    }

    #[inline(always)]
    const fn slots(&self) -> u32 {
        self.mask + 1
    }

    #[inline(always)]
    fn header(&self) -> &RingHeader {
        // SAFETY: `new`'s contract: the header is valid for the life of the handle that owns
        // this value; it consists of atomics only, so a shared reference is sound even though
        // the peer writes to it concurrently.
        unsafe { &*self.header }
    }

    /// Address of slot `index`: masked, so always one of the ring's slots.
    #[inline(always)]
    fn slot(&self, index: u32) -> *mut u8 {
        // SAFETY: `(index & mask) * SLOT <= (slots - 1) * SLOT`: the slot lies inside the data
        // area `new`'s contract makes valid.
        unsafe { self.data.add((index & self.mask) as usize * SLOT) }
    }

    /// Copies `record` into slot `index`. Where the slot is a multiple of 16 bytes, as 16-byte
    /// volatile stores: half the store-buffer entries of word stores (the compiler splits plain
    /// copies into words), and a producer whose slots' lines are still in the consumer's cache
    /// stalls on its store buffer, not on its instructions.
    #[inline(always)]
    fn write(&self, index: u32, record: &Words<SLOT>) {
        self.track(index, true);
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if SLOT.is_multiple_of(16) {
            use core::arch::x86_64::__m128i;
            let slot = self.slot(index).cast::<__m128i>();
            let chunks = ptr::from_ref(record).cast::<__m128i>();
            for chunk in 0..SLOT / 16 {
                // SAFETY: chunk `chunk` of the slot lies inside the slot (`SLOT` bytes inside
                // the data area, valid for writes, `slot`) and is 16-byte aligned (the data
                // area starts at `HEADER_SIZE` of a `REGION_ALIGN`-aligned region and `SLOT`
                // is a multiple of 16); `record` is private memory, `SLOT` bytes but only
                // 8-byte aligned, hence the unaligned load from it.
                unsafe {
                    slot.add(chunk)
                        .write_volatile(chunks.add(chunk).read_unaligned())
                };
            }
            return;
        }
        // SAFETY: the slot is `SLOT` bytes inside the data area, valid for writes (`slot`),
        // and 8-byte aligned (the data area starts at `HEADER_SIZE` of a `REGION_ALIGN`-aligned
        // region and `SLOT` is a multiple of 8), as `Words` asks; `record` is private memory,
        // so the two cannot overlap.
        unsafe { ptr::write(self.slot(index).cast::<Words<SLOT>>(), *record) }
    }

    /// Copies slot `index` out into a private value: each word is read once, here, by a
    /// volatile load (what C's `READ_ONCE` is for memory another side writes), which the
    /// compiler may neither repeat nor replace by a later read of the slot, so what the caller
    /// checks is what it uses, though a peer may rewrite the slot at any time. No fence: the
    /// `Acquire` load of `head` before the copy and the `Release` store of `tail` after it
    /// order the slot, and volatile loads order nothing else, so the caller's own memory stays
    /// in registers across pops (a compiler fence made it store and reload every value it kept
    /// in memory, such as a running sum, once per record) and the compiler may still fold a
    /// load into the instruction that uses the word.
    #[inline(always)]
    fn read(&self, index: u32) -> Words<SLOT> {
        self.track(index, false);
        let mut record = MaybeUninit::<Words<SLOT>>::uninit();
        // 16-byte loads where the slot is a multiple of 16 bytes: a receiver that sums or
        // compares the words then works on vectors (a 128-byte record was a chain of 16
        // dependent adds, and the consumer, not the producer, set the 128 B rows' rate).
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if SLOT.is_multiple_of(16) {
            use core::arch::x86_64::__m128i;
            let slot = self.slot(index).cast::<__m128i>();
            let chunks = record.as_mut_ptr().cast::<__m128i>();
            for chunk in 0..SLOT / 16 {
                // SAFETY: as for the words below, in 16-byte chunks: a slot of a multiple of
                // 16 bytes starts 16-byte aligned (as in `write`); `record` is only 8-byte
                // aligned, hence the unaligned store (into a value the compiler keeps in
                // registers anyway).
                unsafe {
                    chunks
                        .add(chunk)
                        .write_unaligned(slot.add(chunk).read_volatile())
                };
            }
            // SAFETY: every byte of `record` was written above, and any bytes are a valid
            // `Words`.
            return unsafe { record.assume_init() };
        }
        let slot = self.slot(index).cast::<u64>();
        let words = record.as_mut_ptr().cast::<u64>();
        for word in 0..SLOT / 8 {
            // SAFETY: word `word` of the slot lies inside the slot (`SLOT` bytes inside the
            // data area, valid for reads, `slot`) and is 8-byte aligned (as in `write`). A peer
            // that writes it concurrently breaks the protocol and only gives us garbage bytes,
            // which the caller treats as an allegation like any other. `words.add(word)` is
            // inside `record`, `SLOT` bytes and 8-byte aligned.
            unsafe { words.add(word).write(slot.add(word).read_volatile()) };
        }
        // SAFETY: every one of `record`'s `SLOT / 8` words was written above, and any bytes
        // are a valid `Words`.
        unsafe { record.assume_init() }
    }

    /// Asks the cache for every line holding one of the `bytes` bytes of slots from the start
    /// of slot `index` on (`bytes` at most the data area's length; past its end they go on at
    /// its start, as the slots do): hints, which read nothing the program sees (none where
    /// there is no SSE, as in the nucleus).
    #[inline(always)]
    fn prefetch(&self, index: u32, bytes: usize) {
        let at = (index & self.mask) as usize * SLOT;
        let first = bytes.min(self.slots() as usize * SLOT - at);
        self.prefetch_lines(at, at + first);
        if first < bytes {
            self.prefetch_lines(0, bytes - first);
        }
    }

    /// Asks the cache for the lines of slot `index` (which never wraps).
    #[inline(always)]
    fn prefetch_slot(&self, index: u32) {
        let at = (index & self.mask) as usize * SLOT;
        self.prefetch_lines(at, at + SLOT);
    }

    /// Asks the cache for the lines holding bytes `from..to` of the data area, which starts on
    /// a line (`to` at most its length).
    #[inline(always)]
    fn prefetch_lines(&self, from: usize, to: usize) {
        debug_assert!(to <= self.slots() as usize * SLOT);
        let mut line = from & !(CACHE_LINE - 1);
        while line < to {
            #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
            // SAFETY: a prefetch only hints: it reads no memory the program sees and faults on
            // no address; this one is inside the data area anyway (`line < to <= its length`).
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.data.add(line).cast::<i8>(),
                );
            }
            line += CACHE_LINE;
        }
    }

    /// Loom builds: records an access to slot `index` in its shadow cell, which panics if it
    /// is not ordered with the accesses before it.
    #[cfg(loom)]
    fn track(&self, index: u32, write: bool) {
        if self.shadow.is_null() {
            return;
        }
        // SAFETY: `index & mask < slots`, the shadow slice's length, and it lives as long as
        // the `SlotStorage` this value was split from (the handles borrow it).
        let cell = unsafe { &*self.shadow.add((index & self.mask) as usize) };
        if write {
            cell.with_mut(|_| ());
        } else {
            cell.with(|_| ());
        }
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track(&self, _index: u32, _write: bool) {}
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

/// The writing half of a slot ring. Aligned like the byte ring's [`Producer`](super::Producer),
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

/// The reading half of a slot ring. Aligned for the same reason as [`SlotProducer`].
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

impl<const SLOT: usize> SlotProducer<'static, SLOT> {
    /// Attaches the producing side to a slot-ring region (for example a shared page); it
    /// resumes at the `head` found there, after checking it against `tail`.
    ///
    /// # Safety
    ///
    /// As for the byte ring's [`Producer::attach`](super::Producer::attach): `base` valid for
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

impl<const SLOT: usize> SlotConsumer<'static, SLOT> {
    /// Attaches the consuming side to a slot-ring region; it resumes at the `tail` found there,
    /// after checking it against `head`.
    ///
    /// # Safety
    ///
    /// As for [`SlotProducer::attach`], with "one consumer per region".
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

impl<'a, const SLOT: usize> SlotProducer<'a, SLOT> {
    const fn new(slots: Slots<SLOT>, head: u32, tail: u32, dropped: u32) -> Self {
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
    const fn new(slots: Slots<SLOT>, tail: u32, head: u32) -> Self {
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
    /// (at most one shared load). Before it looks, publishes the slots read so far: a consumer
    /// that finds the ring empty (and may wait) has freed every slot it read.
    #[inline(always)]
    fn available(&mut self, wanted: u32) -> Result<u32, RingCorrupt> {
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
        // at once, 515 -> 428 ns). Only for slots smaller than a line: a consumer that keeps
        // catching up with a stream of line-sized records pulled the line the producer was
        // filling at every poll (the 128 B single row: ~25 M/s with it, ~37 without).
        if SLOT < CACHE_LINE {
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
        if self.available(1)? == 0 {
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
        let count = self.available(wanted)?.min(wanted);
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
