//! Where a slot ring lives: the region's addresses and geometry, and every access to its
//! slots (copies in and out, prefetches).

use core::mem::MaybeUninit;
use core::ptr;

use super::{CACHE_LINE, HEADER_SIZE, RingHeader, Words, slot_size_ok};

/// Where the ring lives, as seen from this address space. Every access to the data area goes
/// through [`write`](Self::write) and [`read`](Self::read), which mask the index, so they stay
/// inside the data area whatever the caller computed.
#[derive(Clone, Copy)]
pub(super) struct Slots<const SLOT: usize> {
    header: *const RingHeader,
    data: *mut u8,
    /// `slots - 1`; `slots` a power of two in `MIN_SLOTS..=MAX_SLOTS`.
    mask: u32,
    /// Loom builds: one tracked cell per slot, or none (attached).
    #[cfg(loom)]
    pub(super) shadow: *const crate::sync::ShadowCell,
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
    pub(super) unsafe fn new(base: *mut u8, slots: usize) -> Self {
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
    pub(super) const fn slots(&self) -> u32 {
        self.mask + 1
    }

    #[inline(always)]
    pub(super) fn header(&self) -> &RingHeader {
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
    pub(super) fn write(&self, index: u32, record: &Words<SLOT>) {
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
    pub(super) fn read(&self, index: u32) -> Words<SLOT> {
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
    pub(super) fn prefetch(&self, index: u32, bytes: usize) {
        let at = (index & self.mask) as usize * SLOT;
        let first = bytes.min(self.slots() as usize * SLOT - at);
        self.prefetch_lines(at, at + first);
        if first < bytes {
            self.prefetch_lines(0, bytes - first);
        }
    }

    /// Asks the cache for the lines of slot `index` (which never wraps).
    #[inline(always)]
    pub(super) fn prefetch_slot(&self, index: u32) {
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
