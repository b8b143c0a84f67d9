//! Single-producer, single-consumer ring of byte records over one shared memory region.
//!
//! One ring carries one direction of one server's traffic (architecture.md §5). The region is
//! a page (or more) mapped into two address spaces at different addresses, so it holds only
//! indices and bytes, never pointers, and the other side is an *allegation*: whatever we read
//! from the region is checked or masked before it is used. A peer that scribbles over the
//! indices or a length makes us return [`RingCorrupt`]; it can never make us touch memory
//! outside the region, loop without bound or panic. The two halves are [`Producer`] and
//! [`Consumer`]; each keeps its own index in private memory and only *publishes* it to the
//! region, so nothing the peer writes there is ever read back as our own position.
//!
//! # Layout (the ABI: both sides compute it from the region length they were given)
//!
//! | offset | size | written by | contents |
//! |---|---|---|---|
//! | 0 ([`HEAD_OFFSET`]) | 128 | producer | `head: u32`, then `dropped: u32` at [`DROPPED_OFFSET`] |
//! | 128 ([`TAIL_OFFSET`]) | 128 | consumer | `tail: u32` |
//! | 256 ([`HEADER_SIZE`]) | `capacity` | producer | data area, `capacity` = [`capacity_for`]`(len)` |
//!
//! `head` and `tail` each sit alone on their 64-byte cache line, and the line after each is
//! padding too: x86 cores prefetch cache lines in aligned pairs, so two indices 64 bytes apart
//! would still bounce between the cores together. The handles ([`Producer`], [`Consumer`]) are
//! 128-byte aligned for the same reason.
//!
//! `head` and `tail` are free-running byte counts (they wrap at 2³²); a position `p` lives at
//! data offset `p & (capacity - 1)`. A record is a little-endian `u32` payload length, the
//! payload, and padding up to a multiple of [`RECORD_ALIGN`] (8) bytes, so every record and
//! every length field starts 8-byte aligned and a length never straddles the end of the data
//! area; a payload may, and is then copied in two parts.
//!
//! # Why variable-length records and not fixed slots
//!
//! Messages are `postcard` varints: an `Event` is ~40–80 bytes, a `Reply::Resume` ~5, a dump
//! record up to [`MAX_RECORD`]. Fixed slots would have to be `MAX_RECORD` wide, so a 2 KiB data
//! area would hold 8 messages; with length prefixes it holds 30–250. A stream whose records all
//! have one size takes the slot ring instead ([`slots`]: same header and rules, no lengths). The price is one length
//! check per record (the length is read once, with a volatile load, then bounds-checked
//! against `MAX_RECORD` and against the bytes the producer published) and a two-part copy at
//! the wrap. Records are always *copied out* of the region before anyone looks at them: the
//! peer may rewrite the bytes under us, so we never hand out a reference into shared memory.
//!
//! The other price is bytes and stores: a 16-byte payload takes a 24-byte record, written
//! with three stores (length and two payload words) besides the index. Between two cores the
//! cache-line traffic and the stores waiting on it set the rate, so the bench (`cargo bench
//! -p ipc`) sees queues of bare 16-byte elements (one store each) move single messages about
//! twice as fast as this ring; with 24-byte elements they are no faster than it. Within one
//! address space of a single CPU (the nucleus today) only instructions count.
//!
//! # Memory ordering
//!
//! * The producer writes a record's length and payload with plain stores, then publishes
//!   `head` with a `Release` store; the consumer loads `head` with `Acquire` before it reads
//!   any byte below it. So every byte the consumer reads was written before it looked.
//! * The consumer copies records out, then publishes `tail` with a `Release` store; the
//!   producer loads `tail` with `Acquire` before it reuses the space below it. So the
//!   producer never overwrites bytes the consumer is still reading.
//! * Each side caches the other's index (`cached_tail`, `cached_head`) and reloads it only
//!   when the cached value says "no room" / "nothing to read". A stale value is always
//!   conservative: it under-states free space or available records, never over-states them.
//! * Each side's own index and the drop counter are only ever *stored* by their owner, from
//!   its private copy. `dropped` is statistics and uses `Relaxed`.
//!
//! Batching ([`Batch`], [`Consumer::pop_batch`]) publishes once per batch: one `Release` store
//! and at most one `Acquire` load per batch instead of per record. Both sides of a batch also
//! move bytes in bulk: the producer encodes records into a private 1 KiB stage and copies it
//! into the ring just before it publishes; the consumer copies up to 1 KiB of published bytes
//! out in one go and parses the records from its private copy. Measured on two cores, this is
//! what pays: a record's few small stores or its length-then-payload loads, each waiting on a
//! cache line the other core owns, cost far more than the extra private copy (record by
//! record, batches of 16- and 128-byte messages moved at half the rate they move now).
//!
//! # The fast path
//!
//! A push whose record does not reach the end of the data area costs: one comparison of the
//! length against a precomputed limit, one of the record size against the free space the
//! *cached* `tail` leaves (no shared load), one bounds test, a length store and one inline copy
//! (a few overlapping moves from both ends, up to 128 bytes), then the `Release` store of
//! `head`. A pop: at most one `Acquire` load of `head` (only when the cached one is used up),
//! the volatile length load and its two checks, one bounds test, one inline copy into an
//! uninitialised private buffer, and the `Release` store of `tail`. Records that wrap, a full
//! ring and drop counting take out-of-line `#[cold]` paths; the checks on everything read from
//! the region are the same on both paths.
//!
//! `tests/loom.rs` model-checks these rules (loom also checks every data-area access against
//! the happens-before order); `tests/stress.rs` pushes 10⁶ records through two threads.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr;

use crate::sync::{AtomicU32, Ordering};

pub mod slots;

/// Size of the header in front of the data area: two pairs of cache lines.
pub const HEADER_SIZE: usize = 256;
/// Offset of the producer's `head` index in the region.
pub const HEAD_OFFSET: usize = 0;
/// Offset of the producer's drop counter in the region.
pub const DROPPED_OFFSET: usize = 4;
/// Offset of the consumer's `tail` index in the region.
pub const TAIL_OFFSET: usize = 128;
/// Records start at multiples of this many bytes; `head` and `tail` always are multiples of it.
pub const RECORD_ALIGN: usize = 8;
/// The length prefix in front of every payload.
pub const LENGTH_SIZE: usize = 4;
/// Largest payload a record may carry (the codec's [`crate::codec::MAX_MESSAGE`] too).
pub const MAX_RECORD: usize = 256;
/// Smallest data area: room for two empty records.
pub const MIN_CAPACITY: usize = 16;
/// Largest data area: indices are `u32`, so the distance between them must stay well below 2³².
pub const MAX_CAPACITY: usize = 1 << 30;
/// Alignment the region's base address must have (the header's cache lines).
pub const REGION_ALIGN: usize = 128;

/// Bytes a record with `payload_len` bytes of payload occupies in the data area.
#[inline]
pub const fn record_size(payload_len: usize) -> usize {
    (LENGTH_SIZE + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Data-area capacity of a region of `len` bytes: the largest power of two that fits after the
/// header (at most [`MAX_CAPACITY`]), or `None` if that is below [`MIN_CAPACITY`].
///
/// A 4 KiB page therefore carries a 2 KiB ring; give the ring `region_len(4096)` bytes (two
/// pages) to get a full 4 KiB data area.
pub const fn capacity_for(len: usize) -> Option<usize> {
    if len < HEADER_SIZE + MIN_CAPACITY {
        return None;
    }
    let mut room = len - HEADER_SIZE;
    if room > MAX_CAPACITY {
        room = MAX_CAPACITY;
    }
    // Largest power of two <= room (room >= MIN_CAPACITY > 0).
    Some(1 << (usize::BITS - 1 - room.leading_zeros()))
}

/// Region length needed for a data area of `capacity` bytes.
pub const fn region_len(capacity: usize) -> usize {
    HEADER_SIZE + capacity
}

/// What was wrong with the shared indices or a length: the ring cannot be trusted any more.
///
/// Each variant carries the offending values as read from shared memory. The ring stays in
/// this state until the peer fixes it (or is restarted and the ring re-initialised): every
/// later call checks again and reports again, none of them acts on the bad value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingCorrupt {
    /// The consumer saw a `head` that is not within `capacity` bytes ahead of its `tail`, or
    /// not [`RECORD_ALIGN`]-aligned.
    Head { head: u32, tail: u32 },
    /// The producer saw a `tail` that is ahead of its `head` or more than `capacity` behind, or
    /// not [`RECORD_ALIGN`]-aligned.
    Tail { head: u32, tail: u32 },
    /// A record's length field is above [`MAX_RECORD`] or its record runs past `head`.
    Length { at: u32, len: u32, available: u32 },
}

impl fmt::Display for RingCorrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Head { head, tail } => {
                write!(f, "ring corrupt: head {head:#x} vs tail {tail:#x}")
            }
            Self::Tail { head, tail } => {
                write!(f, "ring corrupt: tail {tail:#x} vs head {head:#x}")
            }
            Self::Length { at, len, available } => write!(
                f,
                "ring corrupt: record at {at:#x} claims {len} bytes, {available} published"
            ),
        }
    }
}

/// Why a push did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Not enough free space for the record right now.
    Full { needed: u32, free: u32 },
    /// The payload is longer than [`MAX_RECORD`] or than the data area can ever hold.
    TooLarge { len: usize },
    /// The consumer's `tail` is not believable.
    Corrupt(RingCorrupt),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { needed, free } => write!(f, "ring full: need {needed} bytes, {free} free"),
            Self::TooLarge { len } => write!(f, "record of {len} bytes exceeds the ring's limit"),
            Self::Corrupt(e) => e.fmt(f),
        }
    }
}

/// Why a region could not be used as a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The base address is not [`REGION_ALIGN`]-aligned.
    Misaligned { addr: usize },
    /// The region cannot hold the header and a [`MIN_CAPACITY`] data area.
    TooSmall { len: usize },
    /// The indices already in the region are not believable.
    Corrupt(RingCorrupt),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned { addr } => write!(
                f,
                "ring region at {addr:#x} is not {REGION_ALIGN}-byte aligned"
            ),
            Self::TooSmall { len } => write!(f, "ring region of {len} bytes is too small"),
            Self::Corrupt(e) => e.fmt(f),
        }
    }
}

/// A pair of 64-byte cache lines holding `T`, so the producer's and consumer's fields are
/// never in the same line or in the same prefetch pair.
#[repr(C, align(128))]
struct CacheLine<T>(T);

/// Fields written only by the producer.
#[repr(C)]
struct ProducerLine {
    head: AtomicU32,
    dropped: AtomicU32,
}

/// Fields written only by the consumer.
#[repr(C)]
struct ConsumerLine {
    tail: AtomicU32,
}

/// The header at the start of the region (see the layout table above).
#[repr(C)]
pub struct RingHeader {
    producer: CacheLine<ProducerLine>,
    consumer: CacheLine<ConsumerLine>,
}

// The layout is the ABI; loom's atomics are bigger, so only real builds check it.
#[cfg(not(loom))]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<RingHeader>() == HEADER_SIZE);
    assert!(core::mem::align_of::<RingHeader>() == REGION_ALIGN);
    assert!(offset_of!(RingHeader, producer) + offset_of!(ProducerLine, head) == HEAD_OFFSET);
    assert!(offset_of!(RingHeader, producer) + offset_of!(ProducerLine, dropped) == DROPPED_OFFSET);
    assert!(offset_of!(RingHeader, consumer) + offset_of!(ConsumerLine, tail) == TAIL_OFFSET);
    assert!(record_size(MAX_RECORD) <= MAX_CAPACITY);
};
const _: () = assert!(MIN_CAPACITY.is_power_of_two() && MIN_CAPACITY >= 2 * RECORD_ALIGN);

impl RingHeader {
    /// An empty ring: all indices and the drop counter zero (an all-zero page is the same).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            producer: CacheLine(ProducerLine {
                head: AtomicU32::new(0),
                dropped: AtomicU32::new(0),
            }),
            consumer: CacheLine(ConsumerLine {
                tail: AtomicU32::new(0),
            }),
        }
    }

    /// An empty ring (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            producer: CacheLine(ProducerLine {
                head: AtomicU32::new(0),
                dropped: AtomicU32::new(0),
            }),
            consumer: CacheLine(ConsumerLine {
                tail: AtomicU32::new(0),
            }),
        }
    }
}

impl Default for RingHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks that `head` is at most `capacity` bytes ahead of `tail` and both are aligned.
#[inline]
const fn indices_ok(head: u32, tail: u32, capacity: u32) -> bool {
    let aligned = (head | tail).is_multiple_of(RECORD_ALIGN as u32);
    aligned && head.wrapping_sub(tail) <= capacity
}

/// Where the ring lives: the header and the data area, as seen from this address space.
///
/// Every access to the data area goes through the four accessors below, which mask the
/// position with `capacity - 1` and clamp the length to `capacity`, so they stay inside the
/// data area whatever the caller computed.
#[derive(Clone, Copy)]
struct Region {
    header: *const RingHeader,
    data: *mut u8,
    /// A power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
    capacity: u32,
    /// Longest payload a record may carry here: [`MAX_RECORD`], or less if the whole record
    /// would not fit in `capacity` (`record_size(len) <= capacity` iff `len <= capacity - 4`,
    /// the capacity being a multiple of [`RECORD_ALIGN`]). One comparison on the push path.
    max_len: u32,
    /// `(capacity - 1) & !(RECORD_ALIGN - 1)`: masks a position to the aligned data offset of
    /// a record (see [`record_offset`](Self::record_offset)) with one instruction.
    offset_mask: u32,
    /// Loom builds: one tracked cell per 8-byte granule of the data area, or none (attached).
    #[cfg(loom)]
    shadow: *const crate::sync::ShadowCell,
    #[cfg(loom)]
    shadow_len: usize,
}

impl Region {
    /// # Safety
    ///
    /// `base` is [`REGION_ALIGN`]-aligned and valid for reads and writes of
    /// `HEADER_SIZE + capacity` bytes for as long as the returned value (or any copy) is used,
    /// `capacity` is a power of two in `MIN_CAPACITY..=MAX_CAPACITY`, and the first
    /// `HEADER_SIZE` bytes hold a [`RingHeader`] (for real builds any bit pattern does: it is
    /// three `AtomicU32`s and padding).
    unsafe fn new(base: *mut u8, capacity: usize) -> Self {
        Self {
            header: base.cast::<RingHeader>(),
            // SAFETY: the caller guarantees `HEADER_SIZE + capacity` bytes from `base`, so
            // `base + HEADER_SIZE` is inside (or one past) the same allocation.
            data: unsafe { base.add(HEADER_SIZE) },
            capacity: capacity as u32,
            max_len: if capacity - LENGTH_SIZE < MAX_RECORD {
                capacity - LENGTH_SIZE
            } else {
                MAX_RECORD
            } as u32,
            offset_mask: (capacity as u32 - 1) & !(RECORD_ALIGN as u32 - 1),
            #[cfg(loom)]
            shadow: ptr::null(),
            #[cfg(loom)]
            shadow_len: 0,
        }
    }

    #[inline]
    fn header(&self) -> &RingHeader {
        // SAFETY: `Region::new`'s contract: the header is valid for the life of the handle
        // that owns this `Region`; it consists of atomics only, so a shared reference is sound
        // even though the peer writes to it concurrently.
        unsafe { &*self.header }
    }

    #[inline]
    const fn mask(&self) -> u32 {
        self.capacity - 1
    }

    /// Data offset of the record at ring position `pos`: masked to the data area and rounded
    /// down to [`RECORD_ALIGN`] (a no-op for the aligned positions callers pass), so at least
    /// `RECORD_ALIGN` bytes remain between it and the end of the data area.
    #[inline(always)]
    const fn record_offset(&self, pos: u32) -> usize {
        (pos & self.offset_mask) as usize
    }

    /// Writes a whole record (length field, then payload) at ring position `pos`.
    ///
    /// The common case, a record that does not reach the end of the data area, is one length
    /// store and one copy behind a single bounds test; a record that wraps takes
    /// [`write_record_wrapping`](Self::write_record_wrapping).
    #[inline(always)]
    fn write_record(&self, pos: u32, payload: &[u8]) {
        let offset = self.record_offset(pos);
        let len = payload.len();
        if (8..=16).contains(&len) {
            // SAFETY: `8 <= len`, so both 8-byte loads are inside `payload`.
            let (first, last) = unsafe {
                (
                    ptr::read_unaligned(payload.as_ptr().cast::<u64>()),
                    ptr::read_unaligned(payload.as_ptr().add(len - 8).cast::<u64>()),
                )
            };
            return self.write_small_record(pos, offset, len, first, last);
        }
        // `offset <= capacity - RECORD_ALIGN`, so this does not underflow.
        if len <= self.capacity as usize - offset - LENGTH_SIZE {
            self.track(pos & !(RECORD_ALIGN as u32 - 1), LENGTH_SIZE + len, true);
            // SAFETY: `offset + LENGTH_SIZE + len <= capacity`, so both writes stay inside the
            // data area, which `Region::new`'s contract makes valid for writes. `offset` is a
            // multiple of 8 and the data area starts `REGION_ALIGN`-aligned, so the `u32`
            // store is aligned. `payload` is private memory: the ranges cannot overlap.
            unsafe {
                let at = self.data.add(offset);
                ptr::write_volatile(at.cast::<u32>(), (len as u32).to_le());
                copy_bytes(payload.as_ptr(), at.add(LENGTH_SIZE), len);
            }
        } else {
            self.write_record_wrapping(pos, payload);
        }
    }

    /// [`write_record`](Self::write_record) of an 8- to 16-byte payload, given as its first and
    /// last eight bytes. Passed by value, even to the cold wrapping path, so a caller's small
    /// message can stay in registers: between two cores every store the producer issues waits
    /// its turn for a contended cache line, and the two stores that spilled the message to the
    /// stack first cost a third of the single-message rate.
    #[inline(always)]
    fn write_small_record(&self, pos: u32, offset: usize, len: usize, first: u64, last: u64) {
        // `offset <= capacity - RECORD_ALIGN`, so this does not underflow.
        if len <= self.capacity as usize - offset - LENGTH_SIZE {
            self.track(pos & !(RECORD_ALIGN as u32 - 1), LENGTH_SIZE + len, true);
            // SAFETY: `offset + LENGTH_SIZE + len <= capacity` and `len >= 8`: all three stores
            // are inside the data area, valid for writes; the `u32` store is aligned as in
            // `write_record`.
            unsafe {
                let at = self.data.add(offset);
                ptr::write_volatile(at.cast::<u32>(), (len as u32).to_le());
                ptr::write_unaligned(at.add(LENGTH_SIZE).cast::<u64>(), first);
                ptr::write_unaligned(at.add(LENGTH_SIZE + len - 8).cast::<u64>(), last);
            }
        } else {
            self.write_small_record_wrapping(pos, len, first, last);
        }
    }

    /// [`write_small_record`](Self::write_small_record) for a record that wraps.
    #[cold]
    #[inline(never)]
    fn write_small_record_wrapping(&self, pos: u32, len: usize, first: u64, last: u64) {
        let mut payload = [0; 16];
        payload[len - 8..len].copy_from_slice(&last.to_ne_bytes());
        payload[..8].copy_from_slice(&first.to_ne_bytes());
        self.write_record_wrapping(pos, &payload[..len]);
    }

    /// [`write_record`](Self::write_record) for a record whose payload runs past the end of
    /// the data area: the payload is copied in two parts. Once per lap at most.
    #[cold]
    #[inline(never)]
    fn write_record_wrapping(&self, pos: u32, payload: &[u8]) {
        self.write_length(pos, payload.len() as u32);
        self.write_bytes(pos.wrapping_add(LENGTH_SIZE as u32), payload);
    }

    /// Copies the `len`-byte payload of the record at ring position `pos` (its length field
    /// already read and checked) into private memory at `dst`; returns how many bytes it wrote
    /// there (`len`, or `capacity` if `len` was larger). One copy behind a single bounds test
    /// unless the payload wraps.
    ///
    /// # Safety
    ///
    /// As for [`read_bytes`](Self::read_bytes).
    #[inline(always)]
    unsafe fn read_payload(&self, pos: u32, dst: *mut u8, len: usize) -> usize {
        let offset = self.record_offset(pos);
        // `offset <= capacity - RECORD_ALIGN`, so this does not underflow.
        if len <= self.capacity as usize - offset - LENGTH_SIZE {
            self.track(
                (pos & !(RECORD_ALIGN as u32 - 1)).wrapping_add(LENGTH_SIZE as u32),
                len,
                false,
            );
            // SAFETY: `[offset + LENGTH_SIZE, offset + LENGTH_SIZE + len)` is inside the data
            // area, valid for reads; the caller guarantees `dst` valid for `len` bytes and
            // outside the region. Concurrent writes by a peer that breaks the protocol only
            // give us garbage bytes, as in `read_bytes`.
            unsafe { copy_bytes(self.data.add(offset + LENGTH_SIZE), dst, len) };
            len
        } else {
            // SAFETY: the caller's guarantee, passed on.
            unsafe { self.read_payload_wrapping(pos, dst, len) }
        }
    }

    /// [`read_payload`](Self::read_payload) for a payload that runs past the end of the data
    /// area.
    ///
    /// # Safety
    ///
    /// As for [`read_bytes`](Self::read_bytes).
    #[cold]
    #[inline(never)]
    unsafe fn read_payload_wrapping(&self, pos: u32, dst: *mut u8, len: usize) -> usize {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.read_bytes(pos.wrapping_add(LENGTH_SIZE as u32), dst, len) }
    }

    /// Copies `src` to ring position `pos`, wrapping at the end of the data area.
    #[inline]
    fn write_bytes(&self, pos: u32, src: &[u8]) {
        let capacity = self.capacity as usize;
        let offset = (pos & self.mask()) as usize;
        let src = &src[..src.len().min(capacity)];
        self.track(pos, src.len(), true);
        let (first, second) = src.split_at(src.len().min(capacity - offset));
        // SAFETY: `offset < capacity` and `first.len() <= capacity - offset`, so the
        // destination lies inside the data area, which `Region::new`'s contract makes valid for
        // writes; `src` is private memory, so the ranges cannot overlap.
        unsafe { copy_bytes(first.as_ptr(), self.data.add(offset), first.len()) };
        if !second.is_empty() {
            // SAFETY: the copy wrapped, so `second.len() = src.len() - (capacity - offset)
            // <= offset < capacity`: it fits at the start of the data area. Same validity and
            // non-overlap argument as above.
            unsafe { ptr::copy_nonoverlapping(second.as_ptr(), self.data, second.len()) };
        }
    }

    /// Copies `len` bytes at ring position `pos` into private memory at `dst`, wrapping at the
    /// end of the data area; returns how many bytes it wrote there (`len`, or `capacity` if
    /// `len` was larger).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes and must not point into the region.
    #[inline]
    unsafe fn read_bytes(&self, pos: u32, dst: *mut u8, len: usize) -> usize {
        let capacity = self.capacity as usize;
        let offset = (pos & self.mask()) as usize;
        let len = len.min(capacity);
        self.track(pos, len, false);
        let first = len.min(capacity - offset);
        // SAFETY: `[offset, offset + first)` is inside the data area (as in `write_bytes`),
        // valid for reads; the caller guarantees `dst` is valid for `len >= first` bytes and
        // outside the region, so the ranges cannot overlap. The peer may be writing these bytes
        // concurrently only if it breaks the protocol; then we copy garbage, which the caller
        // treats as an allegation like any other bytes.
        unsafe { copy_bytes(self.data.add(offset), dst, first) };
        if first < len {
            // SAFETY: the copy wrapped: `len - first <= offset < capacity` bytes from the start
            // of the data area, into `dst + first`, which is within the caller's `len` bytes.
            unsafe { ptr::copy_nonoverlapping(self.data, dst.add(first), len - first) };
        }
        len
    }

    /// Writes a record's length field at `pos` with one store.
    #[inline]
    fn write_length(&self, pos: u32, len: u32) {
        // As in `read_length`: a 4-byte field at a multiple of 4 below the capacity.
        let offset = (pos & self.mask() & !3) as usize;
        self.track(pos & !3, LENGTH_SIZE, true);
        // SAFETY: `offset + 4 <= capacity`, inside the data area, valid for writes, and
        // 4-byte aligned as in `read_length`.
        unsafe { ptr::write_volatile(self.data.add(offset).cast::<u32>(), len.to_le()) };
    }

    /// Reads a record's length field at `pos` with a single load the compiler cannot repeat,
    /// so the value we check is the value we use.
    #[inline]
    fn read_length(&self, pos: u32) -> u32 {
        // Rounding down to RECORD_ALIGN keeps the 4-byte field inside the data area even for a
        // misaligned `pos` (capacity is a multiple of 8); callers pass aligned positions. Same
        // offset as `read_payload` computes, so the two share it.
        let offset = self.record_offset(pos);
        self.track(pos & !(RECORD_ALIGN as u32 - 1), LENGTH_SIZE, false);
        // SAFETY: `offset + 8 <= capacity` (offset is a multiple of 8 below the capacity, a
        // multiple of 8), so the read is inside the data area, and 4-byte aligned (the data
        // area starts at `REGION_ALIGN + HEADER_SIZE`).
        let raw = unsafe { ptr::read_volatile(self.data.add(offset).cast::<u32>()) };
        u32::from_le(raw)
    }

    /// Loom builds: records an access to ring bytes `[pos, pos + len)` in the shadow cells,
    /// which panics if it is not ordered with the accesses before it.
    #[cfg(loom)]
    fn track(&self, pos: u32, len: usize, write: bool) {
        if self.shadow.is_null() || len == 0 {
            return;
        }
        let first = pos as usize / RECORD_ALIGN;
        let last = (pos as usize + len - 1) / RECORD_ALIGN;
        for granule in first..=last {
            let index = granule & (self.shadow_len - 1);
            // SAFETY: `index < shadow_len`, and the shadow slice lives as long as the
            // `RingStorage` this region was split from (the handles borrow it).
            let cell = unsafe { &*self.shadow.add(index) };
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track(&self, _pos: u32, _len: usize, _write: bool) {}
}

/// Copies `len` bytes from `src` to `dst`: inline for the payloads messages have (up to 128
/// bytes, as a few possibly overlapping moves of equal width from both ends), `memcpy` for
/// longer ones and for the very short ones.
///
/// # Safety
///
/// As for `ptr::copy_nonoverlapping(src, dst, len)`.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    /// Copies `[0, N·W)` and `[len - N·W, len)` in `W`-byte units: all of `[0, len)` when
    /// `N·W <= len <= 2·N·W`.
    ///
    /// # Safety
    ///
    /// As for `copy_bytes`, and `N * size_of::<T>() <= len`.
    #[inline(always)]
    unsafe fn ends<T: Copy, const N: usize>(src: *const u8, dst: *mut u8, len: usize) {
        let span = N * size_of::<T>();
        // SAFETY: `span <= len`, so `[0, span)` and `[len - span, len)` are within both ranges,
        // which the caller guarantees valid and non-overlapping (so no write below changes a
        // later read); all accesses are unaligned ones, and every bit pattern is a valid `T`
        // (integers only). One unit at a time keeps every unit in a register.
        unsafe {
            for start in [0, len - span] {
                for i in 0..N {
                    let at = start + i * size_of::<T>();
                    ptr::write_unaligned(
                        dst.add(at).cast::<T>(),
                        ptr::read_unaligned(src.add(at).cast::<T>()),
                    );
                }
            }
        }
    }
    // SAFETY: (all branches) the caller's guarantee; each branch's lower bound on `len` is
    // the `span` of the `ends` it calls. Tested in order of how common the sizes are.
    unsafe {
        if len <= 16 {
            if len >= 8 {
                ends::<u64, 1>(src, dst, len);
            } else if len >= 4 {
                ends::<u32, 1>(src, dst, len);
            } else {
                ptr::copy_nonoverlapping(src, dst, len);
            }
        } else if len <= 32 {
            ends::<u128, 1>(src, dst, len);
        } else if len <= 64 {
            ends::<u128, 2>(src, dst, len);
        } else if len <= 128 {
            ends::<u128, 4>(src, dst, len);
        } else {
            ptr::copy_nonoverlapping(src, dst, len);
        }
    }
}

/// A validated region: checks alignment and size, and returns the capacity.
fn check_region(base: *mut u8, len: usize) -> Result<usize, AttachError> {
    if base.is_null() || !(base as usize).is_multiple_of(REGION_ALIGN) {
        return Err(AttachError::Misaligned {
            addr: base as usize,
        });
    }
    capacity_for(len).ok_or(AttachError::TooSmall { len })
}

/// Writes an empty header into a region, making it a fresh ring.
///
/// The nucleus does this once when it creates a ring page, before either side attaches.
/// (A zero-filled page is already an empty ring; this is for reused memory.)
///
/// # Safety
///
/// `base` must be valid for writes of `len` bytes and no [`Producer`] or [`Consumer`] may be
/// attached to the region while this runs.
pub unsafe fn init(base: *mut u8, len: usize) -> Result<usize, AttachError> {
    let capacity = check_region(base, len)?;
    // SAFETY: `check_region` proved `base` is aligned for `RingHeader` and `len` covers the
    // header; the caller guarantees validity for writes and that nobody else uses the region.
    unsafe { ptr::write(base.cast::<RingHeader>(), RingHeader::new()) };
    Ok(capacity)
}

/// The writing half of a ring.
///
/// Its private state changes on every push; the alignment keeps it off the cache lines (and
/// their prefetch pair) of a consumer that happens to live next to it (in one struct, or one
/// stack frame).
#[repr(align(128))]
pub struct Producer<'a> {
    region: Region,
    /// Our index: where the next record goes. Published to `head`, never read back.
    head: u32,
    /// The last believable `tail` we loaded.
    cached_tail: u32,
    /// Pushes refused because the ring was full. Published to `dropped`, never read back.
    dropped: u32,
    _region: PhantomData<&'a mut [u8]>,
}

// SAFETY: a `Producer` is the only writer of `head`, `dropped` and the free part of the data
// area of its ring; moving it to another thread moves that role with it and shares nothing.
unsafe impl Send for Producer<'_> {}

/// The reading half of a ring.
///
/// Aligned for the same reason as [`Producer`].
#[repr(align(128))]
pub struct Consumer<'a> {
    region: Region,
    /// Our index: where the next record starts. Published to `tail`, never read back.
    tail: u32,
    /// The last believable `head` we loaded.
    cached_head: u32,
    _region: PhantomData<&'a mut [u8]>,
}

// SAFETY: a `Consumer` is the only writer of `tail` and the only reader of the published part
// of the data area; moving it to another thread moves that role with it and shares nothing.
unsafe impl Send for Consumer<'_> {}

impl Producer<'static> {
    /// Attaches the producing side to a ring region (for example a shared page).
    ///
    /// The producer resumes at the `head` found in the region (0 for a fresh ring), after
    /// checking it against `tail`.
    ///
    /// # Safety
    ///
    /// * `base` must be valid for reads and writes of `len` bytes for as long as the returned
    ///   producer (or anything derived from it) is used: mapped, and not freed or remapped.
    /// * At most one `Producer` may be attached to a region at a time; the only other party
    ///   writing to the region is its consumer (which may be hostile: that is handled).
    /// * Both sides must be given the same `len`, or they disagree about the capacity and
    ///   exchange garbage (which stays inside the region, but is garbage).
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, AttachError> {
        let capacity = check_region(base, len)?;
        // SAFETY: `check_region` proved alignment and `len >= HEADER_SIZE + capacity`; the
        // caller guarantees validity for the producer's lifetime.
        let region = unsafe { Region::new(base, capacity) };
        let header = region.header();
        let head = header.producer.0.head.load(Ordering::Relaxed);
        let tail = header.consumer.0.tail.load(Ordering::Acquire);
        if !indices_ok(head, tail, region.capacity) {
            return Err(AttachError::Corrupt(RingCorrupt::Tail { head, tail }));
        }
        let dropped = header.producer.0.dropped.load(Ordering::Relaxed);
        Ok(Self {
            region,
            head,
            cached_tail: tail,
            dropped,
            _region: PhantomData,
        })
    }
}

impl Consumer<'static> {
    /// Attaches the consuming side to a ring region (for example a shared page).
    ///
    /// The consumer resumes at the `tail` found in the region (0 for a fresh ring), after
    /// checking it against `head`.
    ///
    /// # Safety
    ///
    /// As for [`Producer::attach`], with "at most one `Consumer`".
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Self, AttachError> {
        let capacity = check_region(base, len)?;
        // SAFETY: `check_region` proved alignment and `len >= HEADER_SIZE + capacity`; the
        // caller guarantees validity for the consumer's lifetime.
        let region = unsafe { Region::new(base, capacity) };
        let header = region.header();
        let tail = header.consumer.0.tail.load(Ordering::Relaxed);
        let head = header.producer.0.head.load(Ordering::Acquire);
        if !indices_ok(head, tail, region.capacity) {
            return Err(AttachError::Corrupt(RingCorrupt::Head { head, tail }));
        }
        Ok(Self {
            region,
            tail,
            cached_head: head,
            _region: PhantomData,
        })
    }
}

impl<'a> Producer<'a> {
    /// Size of the data area in bytes.
    pub const fn capacity(&self) -> usize {
        self.region.capacity as usize
    }

    /// Pushes refused because the ring was full, since the ring was created.
    pub const fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Loads the consumer's `tail` and checks it against our `head`.
    #[inline]
    fn load_tail(&self) -> Result<u32, RingCorrupt> {
        // Acquire: the consumer's reads of the bytes below `tail` happen before we reuse them.
        let tail = self.region.header().consumer.0.tail.load(Ordering::Acquire);
        if indices_ok(self.head, tail, self.region.capacity) {
            Ok(tail)
        } else {
            Err(RingCorrupt::Tail {
                head: self.head,
                tail,
            })
        }
    }

    /// Bytes in use (published and not yet consumed), from a fresh look at `tail`.
    pub fn len(&self) -> Result<usize, RingCorrupt> {
        Ok(self.head.wrapping_sub(self.load_tail()?) as usize)
    }

    /// Whether nothing is waiting for the consumer.
    pub fn is_empty(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == 0)
    }

    /// [`Producer::is_empty`] from one look at `tail`, for fast paths: a corrupt `tail` reads
    /// as not empty (`false`), which sends the caller to the checked way.
    #[inline(always)]
    pub fn empty_at_a_glance(&self) -> bool {
        self.region.header().consumer.0.tail.load(Ordering::Acquire) == self.head
    }

    /// Whether not even an empty record fits.
    pub fn is_full(&self) -> Result<bool, RingCorrupt> {
        Ok(self.capacity() - self.len()? < RECORD_ALIGN)
    }

    /// Free bytes according to the cached `tail`: never more than there really are.
    #[inline(always)]
    const fn cached_free(&self) -> u32 {
        // `cached_tail` passed `indices_ok` against a `head` at most this one, and `head` has
        // advanced by at most the free space since, so the difference is at most `capacity`;
        // unless a consumer moved `tail` back while a batch held staged bytes it had already
        // reserved (the batch still writes them). Then there is no room, and the next reload
        // of `tail` reports the lie.
        self.region
            .capacity
            .saturating_sub(self.head.wrapping_sub(self.cached_tail))
    }

    /// The cached `tail` says there is no room for `needed` bytes: reloads it. On `Full`,
    /// counts a drop if `count_drop`.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, needed: u32, count_drop: bool) -> Result<(), PushError> {
        self.cached_tail = self.load_tail().map_err(PushError::Corrupt)?;
        let free = self.cached_free();
        if free >= needed {
            return Ok(());
        }
        if count_drop {
            self.dropped = self.dropped.wrapping_add(1);
            // Relaxed: a statistic for diagnostics; it orders nothing.
            self.region
                .header()
                .producer
                .0
                .dropped
                .store(self.dropped, Ordering::Relaxed);
        }
        Err(PushError::Full { needed, free })
    }

    /// Writes one record at `head` and advances our private `head`; does not publish. The fast
    /// path touches no shared index: one comparison against the cached `tail`.
    #[inline(always)]
    fn write_record(&mut self, payload: &[u8], count_drop: bool) -> Result<(), PushError> {
        if payload.len() > self.region.max_len as usize {
            return Err(PushError::TooLarge { len: payload.len() });
        }
        // `len <= max_len` implies `size <= capacity`.
        let size = record_size(payload.len()) as u32;
        if self.cached_free() < size {
            self.make_room(size, count_drop)?;
        }
        // Advanced before the copy, so the compiler need not reload it after.
        let head = self.head;
        self.head = head.wrapping_add(size);
        self.region.write_record(head, payload);
        Ok(())
    }

    /// Makes every record written so far visible to the consumer.
    #[inline(always)]
    fn publish(&self) {
        // Release: the record bytes written before this store are visible to a consumer that
        // loads this `head` with Acquire.
        self.region
            .header()
            .producer
            .0
            .head
            .store(self.head, Ordering::Release);
    }

    /// Pushes one record and publishes it. If the ring is full the record is dropped, the drop
    /// counter goes up and `Full` is returned (the nucleus never waits for a server).
    #[inline(always)]
    pub fn push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.write_record(payload, true)?;
        self.publish();
        Ok(())
    }

    /// Like [`push`](Self::push), but a full ring is not counted as a drop: for a caller that
    /// will wait and try again (a guest thread blocked on its trap).
    #[inline(always)]
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.write_record(payload, false)?;
        self.publish();
        Ok(())
    }

    /// Counts `records` messages the caller could not send (a batch it abandoned because the
    /// ring was full) in the ring's `dropped` counter, which the consumer can read.
    pub fn count_drops(&mut self, records: u32) {
        self.dropped = self.dropped.wrapping_add(records);
        // Relaxed: a statistic for diagnostics; it orders nothing.
        self.region
            .header()
            .producer
            .0
            .dropped
            .store(self.dropped, Ordering::Relaxed);
    }

    /// Starts a batch: records pushed into it are published together, with one store, when
    /// the batch is committed or dropped.
    #[inline(always)]
    pub fn batch(&mut self) -> Batch<'_, 'a> {
        Batch {
            start: self.head,
            producer: self,
            pushed: 0,
            staged: 0,
            stage: Stage::new(),
        }
    }

    /// Pushes records from `payloads` until one does not fit, publishing them once; returns how
    /// many were pushed. The one that did not fit is *not* counted as dropped: the caller still
    /// has it.
    pub fn push_batch<'p, I>(&mut self, payloads: I) -> Result<usize, PushError>
    where
        I: IntoIterator<Item = &'p [u8]>,
    {
        let mut batch = self.batch();
        for payload in payloads {
            match batch.try_push(payload) {
                Ok(()) => {}
                Err(PushError::Full { .. }) => break,
                Err(e) => return Err(e), // earlier records are still published by the drop
            }
        }
        Ok(batch.commit())
    }
}

/// The payload of one record being written in place ([`FixedRecord`]): `N`
/// bytes of the ring's data area, or of a private buffer for a record that wraps.
pub struct Slot<'s, const N: usize> {
    at: *mut u8,
    _bytes: PhantomData<&'s mut [u8; N]>,
}

impl<const N: usize> Slot<'_, N> {
    /// Writes `bytes` at payload offset `at`. Panics if they do not fit in the `N` bytes; with
    /// the constant offsets and lengths of a fixed record the check folds away.
    #[inline(always)]
    pub fn put(&mut self, at: usize, bytes: &[u8]) {
        assert!(
            at <= N && bytes.len() <= N - at,
            "a slot write past the record"
        );
        // SAFETY: `[at, at + len)` lies within the slot's `N` bytes, which `try_push_with`
        // made valid for writes for the slot's life (free ring space no one reads, or a
        // private buffer); `bytes` is the caller's memory, never the slot.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.at.add(at), bytes.len()) };
    }
}

/// A message of exactly `N` payload bytes that writes itself into a ring record in place
/// ([`Producer::try_push_with`]). A trait, not a closure, so that its `write` can be
/// `#[inline(always)]`: the point is that the caller's fields go straight into the ring.
pub trait FixedRecord<const N: usize> {
    /// Writes every one of the `N` bytes through `slot` (any it leaves hold whatever the
    /// ring held there).
    fn write(&self, slot: &mut Slot<'_, N>);
}

impl Producer<'_> {
    /// Pushes `record`, written straight into the ring with no private copy first: for
    /// fixed-size messages written field by field (the nucleus' `int3` event). `write` runs
    /// only once the room is certain. A full ring is not counted as a drop, as in
    /// [`try_push`](Self::try_push).
    #[inline(always)]
    pub fn try_push_with<const N: usize>(
        &mut self,
        record: &impl FixedRecord<N>,
    ) -> Result<(), PushError> {
        if N > self.region.max_len as usize {
            return Err(PushError::TooLarge { len: N });
        }
        // `N <= max_len` implies `size <= capacity`.
        let size = record_size(N) as u32;
        if self.cached_free() < size {
            self.make_room(size, false)?;
        }
        let head = self.head;
        let offset = self.region.record_offset(head);
        // A record that would run past the end of the data area is written into a private
        // buffer and copied in two parts; `write` is inlined once for both cases.
        let mut wrapped = [MaybeUninit::<u8>::uninit(); N];
        // `offset <= capacity - RECORD_ALIGN`, so this does not underflow.
        let wraps = N > self.region.capacity as usize - offset - LENGTH_SIZE;
        let at = if wraps {
            // Zeroed first: the copy below reads every byte, whatever `write` wrote.
            wrapped = [MaybeUninit::new(0); N];
            wrapped.as_mut_ptr().cast::<u8>()
        } else {
            self.region
                .track(head & !(RECORD_ALIGN as u32 - 1), LENGTH_SIZE + N, true);
            // SAFETY: `offset + LENGTH_SIZE + N <= capacity`: the length field and the slot
            // are inside the data area, valid for writes (`Region::new`'s contract), and
            // free space the consumer does not read until `publish`. The `u32` store is
            // aligned as in `Region::write_record`.
            unsafe {
                let at = self.region.data.add(offset);
                ptr::write_volatile(at.cast::<u32>(), (N as u32).to_le());
                at.add(LENGTH_SIZE)
            }
        };
        record.write(&mut Slot {
            at,
            _bytes: PhantomData,
        });
        if wraps {
            // SAFETY: every byte of `wrapped` was initialised (zeroed, then maybe written).
            let payload = unsafe { &*wrapped.as_ptr().cast::<[u8; N]>() };
            self.region.write_record_wrapping(head, payload);
        }
        self.head = head.wrapping_add(size);
        self.publish();
        Ok(())
    }
}

/// Records pushed but not yet published; publishing happens on [`commit`](Self::commit) or drop.
///
/// A batch encodes its records into a private staging buffer and copies them into the ring in
/// one go when the buffer fills or the batch ends. Writing a shared cache line the consumer
/// may hold costs an ownership transfer, and a core can only have as many of those in flight
/// as its store buffer has entries: three small stores per record (length, two halves of the
/// payload) tie up several entries per line, a bulk copy one or two. Space is still reserved
/// (and `Full` still reported) record by record, against the cached `tail`.
pub struct Batch<'p, 'a> {
    /// The producer's private `head` when the batch began: where [`Batch::abandon`] goes back.
    start: u32,
    producer: &'p mut Producer<'a>,
    pushed: usize,
    /// Bytes encoded in `stage` and not yet copied into the ring: the records just below the
    /// producer's private `head`.
    staged: usize,
    stage: Stage,
}

impl Batch<'_, '_> {
    /// Adds a record to the batch; a full ring counts a drop, as [`Producer::push`] does.
    #[inline(always)]
    pub fn push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.stage_record(payload, true)
    }

    /// Adds a record to the batch; a full ring is not counted, as [`Producer::try_push`].
    #[inline(always)]
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.stage_record(payload, false)
    }

    /// Reserves room for the record in the ring and encodes it into the staging buffer.
    #[inline(always)]
    fn stage_record(&mut self, payload: &[u8], count_drop: bool) -> Result<(), PushError> {
        let len = payload.len();
        if len > self.producer.region.max_len as usize {
            return Err(PushError::TooLarge { len });
        }
        // `len <= max_len` implies `size <= capacity`, and `size <= STAGE_SIZE`.
        let size = record_size(len);
        if self.staged + size > STAGE_SIZE {
            self.flush();
        }
        self.reserve(size as u32, count_drop)?;
        // SAFETY: `staged + size <= STAGE_SIZE`, so the record lies inside the buffer; `size`
        // is at least 8 and a multiple of 8, so the zeroed `u64` at its end (the padding and
        // possibly the end of the payload, rewritten just after) is inside it too. `payload`
        // is the caller's memory, never the stage.
        unsafe {
            let at = self.stage.0.as_mut_ptr().cast::<u8>().add(self.staged);
            ptr::write_unaligned(at.add(size - 8).cast::<u64>(), 0);
            ptr::write_unaligned(at.cast::<u32>(), (len as u32).to_le());
            copy_bytes(payload.as_ptr(), at.add(LENGTH_SIZE), len);
        }
        self.staged += size;
        self.pushed += 1;
        Ok(())
    }

    /// Checks, against the cached `tail` (reloaded if need be), that `size` more bytes fit
    /// after the staged ones. The producer's `head` does not move until the staged bytes are
    /// in the ring, so a batch that is leaked instead of dropped leaves the ring as it was.
    #[inline(always)]
    fn reserve(&mut self, size: u32, count_drop: bool) -> Result<(), PushError> {
        let staged = self.staged as u32;
        // `saturating_sub`: a consumer that moves `tail` back can make the cached free space
        // smaller than what was staged; that is its own problem, not a reason to overflow.
        if self.producer.cached_free().saturating_sub(staged) >= size {
            return Ok(());
        }
        match self.producer.make_room(staged + size, count_drop) {
            Err(PushError::Full { free, .. }) => Err(PushError::Full {
                needed: size,
                free: free.saturating_sub(staged),
            }),
            result => result,
        }
    }

    /// Copies the staged records into the ring at the producer's `head` and advances it (not
    /// published yet).
    #[inline]
    fn flush(&mut self) {
        if self.staged == 0 {
            return;
        }
        let producer = &mut *self.producer;
        // SAFETY: every byte of `[0, staged)` was written by `stage_record` (lengths,
        // payloads and zeroed padding), and `staged <= STAGE_SIZE`.
        let staged = unsafe { self.stage.prefix(self.staged) };
        producer.region.write_bytes(producer.head, staged);
        producer.head = producer.head.wrapping_add(self.staged as u32);
        self.staged = 0;
    }

    /// Records added so far.
    pub const fn len(&self) -> usize {
        self.pushed
    }

    /// Whether no record was added yet.
    pub const fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// Publishes the batch and returns how many records it held.
    #[inline]
    pub fn commit(self) -> usize {
        self.pushed // publishing happens in `drop`
    }

    /// Forgets every record of the batch: nothing is published, the ring is as it was before
    /// [`Producer::batch`]. For messages that belong together (a dump and its event), so that
    /// a full ring gets all of them or none. Returns how many records were forgotten.
    pub fn abandon(mut self) -> usize {
        let forgotten = self.pushed;
        // Bytes already copied past the published `head` stay invisible to the consumer,
        // which reads only up to the published index; the next push overwrites them.
        self.producer.head = self.start;
        self.staged = 0;
        self.pushed = 0;
        forgotten
    }
}

impl Drop for Batch<'_, '_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.pushed > 0 {
            self.flush();
            self.producer.publish();
        }
    }
}

/// Size of the private buffers batches stage records in: several records of any size (at
/// least [`record_size`]`(MAX_RECORD)`), small enough for a nucleus stack.
const STAGE_SIZE: usize = 1024;
const _: () =
    assert!(STAGE_SIZE >= 2 * record_size(MAX_RECORD) && STAGE_SIZE.is_multiple_of(RECORD_ALIGN));

/// Private bytes a record (or, for batches, several) is copied into; left uninitialised, since
/// it is written before it is read and zeroing it would cost as much as the copy.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Private<const N: usize>([MaybeUninit<u8>; N]);

/// Where one record is copied out.
type Scratch = Private<MAX_RECORD>;
/// Where a batch stages its records, or a consumer its bulk copy.
type Stage = Private<STAGE_SIZE>;

impl<const N: usize> Private<N> {
    #[inline(always)]
    const fn new() -> Self {
        Self([MaybeUninit::uninit(); N])
    }

    /// The first `len` bytes.
    ///
    /// # Safety
    ///
    /// `len <= N` and the first `len` bytes have been written.
    #[inline(always)]
    const unsafe fn prefix(&self, len: usize) -> &[u8] {
        // SAFETY: the caller's guarantee: in bounds and initialised.
        unsafe { core::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), len) }
    }
}

/// One record copied out of the ring.
#[derive(Clone)]
pub struct Record {
    /// At most `MAX_RECORD`; the first `len` bytes of `bytes` are initialised.
    len: usize,
    bytes: Scratch,
}

impl core::ops::Deref for Record {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `Record`'s invariant: `len <= MAX_RECORD` bytes were copied in by `pop`.
        unsafe { self.bytes.prefix(self.len) }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Record").field(&&**self).finish()
    }
}

impl<'a> Consumer<'a> {
    /// Size of the data area in bytes.
    pub const fn capacity(&self) -> usize {
        self.region.capacity as usize
    }

    /// The producer's drop counter, as it claims it (diagnostics only).
    pub fn dropped_by_producer(&self) -> u32 {
        self.region
            .header()
            .producer
            .0
            .dropped
            .load(Ordering::Relaxed)
    }

    /// Loads the producer's `head` and checks it against our `tail`.
    #[inline(always)]
    fn load_head(&self) -> Result<u32, RingCorrupt> {
        // Acquire: the producer's writes of the bytes below `head` happen before our reads.
        let head = self.region.header().producer.0.head.load(Ordering::Acquire);
        if indices_ok(head, self.tail, self.region.capacity) {
            Ok(head)
        } else {
            Err(RingCorrupt::Head {
                head,
                tail: self.tail,
            })
        }
    }

    /// Bytes published and not yet consumed, from a fresh look at `head`.
    pub fn len(&self) -> Result<usize, RingCorrupt> {
        Ok(self.load_head()?.wrapping_sub(self.tail) as usize)
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> Result<bool, RingCorrupt> {
        Ok(self.len()? == 0)
    }

    /// [`Consumer::is_empty`] from one look at `head`, for fast paths: a corrupt `head` reads
    /// as not empty (`false`), which sends the caller to the checked way.
    #[inline(always)]
    pub fn empty_at_a_glance(&self) -> bool {
        self.region.header().producer.0.head.load(Ordering::Acquire) == self.tail
    }

    /// Whether the producer could not add even an empty record.
    pub fn is_full(&self) -> Result<bool, RingCorrupt> {
        Ok(self.capacity() - self.len()? < RECORD_ALIGN)
    }

    /// Copies the next record into `scratch` and advances our private `tail` (not published);
    /// returns the copy. Reloads `head` only when the cached one says the ring is empty.
    /// The returned length is at most `MAX_RECORD`, and that many bytes of `scratch` are
    /// initialised.
    #[inline(always)]
    fn read_record(&mut self, scratch: &mut Scratch) -> Result<Option<usize>, RingCorrupt> {
        // Our own fields are read once and written before the copy, so the compiler need not
        // assume the copy into `scratch` changed them.
        let tail = self.tail;
        if self.cached_head == tail {
            self.cached_head = self.load_head()?;
            if self.cached_head == tail {
                return Ok(None);
            }
        }
        // `cached_head` passed `indices_ok`, so 8 <= available <= capacity.
        let available = self.cached_head.wrapping_sub(tail);
        let len = self.region.read_length(tail);
        if len as usize > MAX_RECORD || record_size(len as usize) > available as usize {
            return Err(RingCorrupt::Length {
                at: tail,
                len,
                available,
            });
        }
        let len = len as usize;
        self.tail = tail.wrapping_add(record_size(len) as u32);
        // SAFETY: `scratch` is private memory of `MAX_RECORD >= len` bytes.
        let copied = unsafe {
            self.region
                .read_payload(tail, scratch.0.as_mut_ptr().cast(), len)
        };
        // `read_payload` initialised the first `copied` (<= len <= MAX_RECORD) bytes.
        Ok(Some(copied))
    }

    /// Tells the producer the space below our `tail` is free again.
    #[inline(always)]
    fn release(&self) {
        // Release: our copies out of the freed bytes happen before the producer reuses them.
        self.region
            .header()
            .consumer
            .0
            .tail
            .store(self.tail, Ordering::Release);
    }

    /// Takes the next record, copied out of the ring; `None` if the ring is empty.
    #[inline]
    pub fn pop(&mut self) -> Result<Option<Record>, RingCorrupt> {
        // Copied straight into the record: no zeroing, no second copy.
        let mut bytes = Scratch::new();
        match self.read_record(&mut bytes)? {
            Some(len) => {
                self.release();
                Ok(Some(Record { len, bytes }))
            }
            None => Ok(None),
        }
    }

    /// Takes the next record and hands a private copy of it to `f`; `None` if the ring is empty.
    #[inline(always)]
    pub fn pop_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, RingCorrupt> {
        let mut scratch = Scratch::new();
        match self.read_record(&mut scratch)? {
            Some(len) => {
                self.release();
                // SAFETY: `read_record` initialised the first `len <= MAX_RECORD` bytes.
                Ok(Some(f(unsafe { scratch.prefix(len) })))
            }
            None => Ok(None),
        }
    }

    /// Takes up to `max` records, handing each to `f` in order, and frees their space with one
    /// store at the end. Returns how many were taken. On a corrupt record the ones before it
    /// have been delivered and freed, and the error is returned.
    ///
    /// The published bytes are copied into a private buffer in bulk (up to 1 KiB at
    /// a time) and the records are parsed there, so the lengths checked are the lengths used
    /// and each record costs no shared-memory access of its own.
    #[inline]
    pub fn pop_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, RingCorrupt> {
        let mut stage = Stage::new();
        // `stage[..filled]` holds the ring bytes from position `self.tail - at` on.
        let mut filled = 0;
        let mut at = 0;
        let mut taken = 0;
        let mut result = Ok(());
        while taken < max {
            let tail = self.tail;
            if self.cached_head == tail {
                match self.load_head() {
                    Ok(head) => self.cached_head = head,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                if self.cached_head == tail {
                    break;
                }
            }
            // `cached_head` passed `indices_ok`, so 8 <= available <= capacity.
            let available = self.cached_head.wrapping_sub(tail) as usize;
            if at + RECORD_ALIGN > filled {
                filled = self.refill(&mut stage, available);
                at = 0;
            }
            // SAFETY: `at + RECORD_ALIGN <= filled <= STAGE_SIZE`: the length field is inside
            // the initialised part of the stage (records start 8-byte aligned).
            let len = u32::from_le(unsafe {
                ptr::read_unaligned(stage.0.as_ptr().add(at).cast::<u32>())
            });
            let size = record_size(len as usize);
            if len as usize > MAX_RECORD || size > available {
                result = Err(RingCorrupt::Length {
                    at: tail,
                    len,
                    available: available as u32,
                });
                break;
            }
            if at + size > filled {
                // The record continues past what was copied: copy again from its start. It
                // fits (`size <= STAGE_SIZE`), and its length is read and checked again.
                filled = self.refill(&mut stage, available);
                at = 0;
                continue;
            }
            // SAFETY: `at + size <= filled`: the payload is initialised stage memory.
            f(unsafe { &stage.prefix(at + LENGTH_SIZE + len as usize)[at + LENGTH_SIZE..] });
            at += size;
            self.tail = tail.wrapping_add(size as u32);
            taken += 1;
        }
        if taken > 0 {
            self.release();
        }
        result.map(|()| taken)
    }

    /// Copies up to [`STAGE_SIZE`] of the `available` published bytes from our `tail` on into
    /// `stage`; returns how many (at least 8: `available` is).
    #[inline]
    fn refill(&self, stage: &mut Stage, available: usize) -> usize {
        let len = available.min(STAGE_SIZE);
        // SAFETY: the stage is private memory of `STAGE_SIZE >= len` bytes.
        unsafe {
            self.region
                .read_bytes(self.tail, stage.0.as_mut_ptr().cast::<u8>(), len)
        }
    }
}

/// A ring in memory the caller owns: the safe way to build one (tests, benches, and rings a
/// single address space uses). `CAPACITY` is the data-area size, a power of two in
/// `MIN_CAPACITY..=MAX_CAPACITY`. The layout is the same as a shared region's.
#[repr(C)]
pub struct RingStorage<const CAPACITY: usize> {
    header: RingHeader,
    data: UnsafeCell<[u8; CAPACITY]>,
    #[cfg(loom)]
    shadow: std::boxed::Box<[crate::sync::ShadowCell]>,
}

impl<const CAPACITY: usize> RingStorage<CAPACITY> {
    const VALID: () = assert!(
        CAPACITY.is_power_of_two() && CAPACITY >= MIN_CAPACITY && CAPACITY <= MAX_CAPACITY,
        "ring capacity must be a power of two in MIN_CAPACITY..=MAX_CAPACITY"
    );

    /// An empty ring.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        let () = Self::VALID;
        Self {
            header: RingHeader::new(),
            data: UnsafeCell::new([0; CAPACITY]),
        }
    }

    /// An empty ring whose data-area accesses loom checks.
    #[cfg(loom)]
    pub fn new() -> Self {
        let () = Self::VALID;
        let shadow = (0..CAPACITY / RECORD_ALIGN)
            .map(|_| crate::sync::ShadowCell::new(()))
            .collect();
        Self {
            header: RingHeader::new(),
            data: UnsafeCell::new([0; CAPACITY]),
            shadow,
        }
    }

    /// Splits the ring into its two halves, which borrow it. The ring keeps its contents and
    /// indices across splits.
    pub fn split(&mut self) -> (Producer<'_>, Consumer<'_>) {
        let base = ptr::from_mut(self).cast::<u8>();
        // SAFETY: `Self` is `repr(C)` with the header (128-byte aligned, `HEADER_SIZE` bytes)
        // first and the `CAPACITY`-byte data area right after it, so `base` is a valid,
        // aligned region of `HEADER_SIZE + CAPACITY` bytes; `VALID` checked `CAPACITY`. The
        // data area is inside an `UnsafeCell`, so writing it through the handles is allowed,
        // and the `&mut self` borrow held by both handles keeps anyone else out.
        #[allow(unused_mut)]
        let mut region = unsafe { Region::new(base, CAPACITY) };
        #[cfg(loom)]
        {
            region.shadow = self.shadow.as_ptr();
            region.shadow_len = self.shadow.len();
        }
        let header = region.header();
        // The indices were only ever written by earlier handles of this storage, but the
        // storage is ordinary memory: check them like any other.
        let head = header.producer.0.head.load(Ordering::Acquire);
        let tail = header.consumer.0.tail.load(Ordering::Acquire);
        let dropped = header.producer.0.dropped.load(Ordering::Relaxed);
        let (head, tail) = if indices_ok(head, tail, CAPACITY as u32) {
            (head, tail)
        } else {
            (0, 0)
        };
        (
            Producer {
                region,
                head,
                cached_tail: tail,
                dropped,
                _region: PhantomData,
            },
            Consumer {
                region,
                tail,
                cached_head: head,
                _region: PhantomData,
            },
        )
    }
}

#[cfg(not(loom))]
impl<const CAPACITY: usize> Default for RingStorage<CAPACITY> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
