//! Physical frame allocator: 4 KiB frames from the boot memory map, fixed capacity.
//!
//! Owns the set of frames the nucleus may hand out. It is built once from the firmware's usable
//! ranges minus everything already in use (kernel image, modules, boot info, the first MiB),
//! and it never allocates: ranges and the recycled list are `heapless` vectors, so it can
//! live in a `static` and work before any heap exists.
//!
//! The memory map is an allegation, like any boot input: ranges may be unsorted, overlapping or
//! unaligned. Usable ranges are rounded inward and reserved ones outward, so rounding can only
//! lose a partial frame, never hand out a reserved byte. When more ranges arrive than fit, the
//! smallest are dropped (and counted): losing memory is safe, overflowing is not.
//!
//! Allocation takes the lowest free frame of the lowest range; freed frames go back to their
//! range when adjacent, else onto a bounded LIFO list.

use core::fmt;
use core::ops::Range;

use heapless::Vec;

use crate::paging::{PhysAddr, SIZE_4K};

/// Ranges kept after merging and subtracting reservations.
pub const MAX_RANGES: usize = 64;
/// Freed frames that are not adjacent to a free range wait here.
pub const MAX_RECYCLED: usize = 512;
/// Nothing below 1 MiB is handed out: real-mode IVT, BDA, EBDA, VGA and BIOS areas live there,
/// and frame 0 doubles as "null".
pub const LOW_MEMORY_END: u64 = 1 << 20;
/// One past the highest physical address (52 address bits).
const PHYS_END: u64 = 1 << 52;

/// Why [`FrameAllocator::free`] refused a frame. The frame stays the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// Not 4 KiB aligned.
    Misaligned(PhysAddr),
    /// Not a frame this allocator was built with (reserved, below 1 MiB, or not usable).
    NotOwned(PhysAddr),
    /// Already free: a double free.
    AlreadyFree(PhysAddr),
    /// The recycled list and the range list are full, and the frame is not adjacent to a free range.
    RecycleListFull(PhysAddr),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misaligned(frame) => write!(f, "free {frame}: not 4 KiB aligned"),
            Self::NotOwned(frame) => write!(f, "free {frame}: not an allocatable frame"),
            Self::AlreadyFree(frame) => write!(f, "free {frame}: already free (double free)"),
            Self::RecycleListFull(frame) => write!(f, "free {frame}: recycle list full"),
        }
    }
}

/// The physical frame allocator. About 6 KiB, no heap.
pub struct FrameAllocator {
    /// Every frame this allocator may ever hand out: sorted, disjoint, page aligned. Fixed.
    owned: Vec<Range<u64>, MAX_RANGES>,
    /// Frames not handed out yet (or returned adjacent to a range): sorted, disjoint.
    free: Vec<Range<u64>, MAX_RANGES>,
    /// Returned frames, taken first by `alloc` (LIFO).
    recycled: Vec<u64, MAX_RECYCLED>,
    total_frames: u64,
    dropped_frames: u64,
}

const fn frames(range: &Range<u64>) -> u64 {
    (range.end - range.start) / SIZE_4K
}

const fn align_down(addr: u64, align: u64) -> u64 {
    addr & !(align - 1)
}

const fn align_up(addr: u64, align: u64) -> Option<u64> {
    match addr.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}

/// Pushes `range`; when full, keeps the larger of `range` and the smallest element.
fn push_or_drop(ranges: &mut Vec<Range<u64>, MAX_RANGES>, range: Range<u64>, dropped: &mut u64) {
    if let Err(range) = ranges.push(range) {
        let smallest = ranges
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| frames(r))
            .map(|(i, r)| (i, frames(r)));
        match smallest {
            Some((index, size)) if size < frames(&range) => {
                *dropped += size;
                ranges[index] = range;
            }
            _ => *dropped += frames(&range),
        }
    }
}

impl FrameAllocator {
    /// An allocator with no frames, for a `static` that boot code later replaces with [`Self::new`].
    pub const fn empty() -> Self {
        Self {
            owned: Vec::new(),
            free: Vec::new(),
            recycled: Vec::new(),
            total_frames: 0,
            dropped_frames: 0,
        }
    }

    /// Builds the allocator from the usable RAM ranges of the memory map and the ranges in use
    /// inside them (kernel image, modules, boot info, the memory map itself). Byte ranges,
    /// end exclusive, in any order.
    pub fn new(
        usable: impl IntoIterator<Item = Range<u64>>,
        reserved: impl IntoIterator<Item = Range<u64>>,
    ) -> Self {
        let mut dropped = 0;
        let mut free: Vec<Range<u64>, MAX_RANGES> = Vec::new();
        for range in usable {
            let Some(start) = align_up(range.start.max(LOW_MEMORY_END), SIZE_4K) else {
                continue;
            };
            let end = align_down(range.end.min(PHYS_END), SIZE_4K);
            if start < end {
                Self::add_merged(&mut free, start..end, &mut dropped);
            }
        }
        for range in reserved {
            if range.start >= range.end {
                continue;
            }
            let start = align_down(range.start, SIZE_4K);
            let end = align_up(range.end, SIZE_4K).unwrap_or(u64::MAX);
            free = Self::subtract(&free, start..end, &mut dropped);
        }
        free.sort_unstable_by_key(|r| r.start);
        let total_frames = free.iter().map(frames).sum();
        Self {
            owned: free.clone(),
            free,
            recycled: Vec::new(),
            total_frames,
            dropped_frames: dropped,
        }
    }

    /// Adds `range` to the disjoint, non-adjacent set `ranges`, merging what it touches.
    fn add_merged(ranges: &mut Vec<Range<u64>, MAX_RANGES>, range: Range<u64>, dropped: &mut u64) {
        let mut merged = range;
        // Existing ranges never touch each other, so one pass finds all that touch the union.
        ranges.retain(|r| {
            let touches = r.start <= merged.end && merged.start <= r.end;
            if touches {
                merged = merged.start.min(r.start)..merged.end.max(r.end);
            }
            !touches
        });
        push_or_drop(ranges, merged, dropped);
    }

    /// `ranges` without the bytes of `hole`.
    fn subtract(
        ranges: &Vec<Range<u64>, MAX_RANGES>,
        hole: Range<u64>,
        dropped: &mut u64,
    ) -> Vec<Range<u64>, MAX_RANGES> {
        let mut out = Vec::new();
        for r in ranges {
            if r.end <= hole.start || hole.end <= r.start {
                push_or_drop(&mut out, r.clone(), dropped);
                continue;
            }
            if r.start < hole.start {
                push_or_drop(&mut out, r.start..hole.start, dropped);
            }
            if hole.end < r.end {
                push_or_drop(&mut out, hole.end..r.end, dropped);
            }
        }
        out
    }

    /// One free 4 KiB frame, or `None` when memory is exhausted. Contents are not cleared.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        if let Some(frame) = self.recycled.pop() {
            return Some(PhysAddr::new(frame));
        }
        let first = self.free.first_mut()?;
        let frame = first.start;
        first.start += SIZE_4K;
        if first.start == first.end {
            self.free.remove(0);
        }
        Some(PhysAddr::new(frame))
    }

    /// `count` physically contiguous frames starting at a multiple of `align` (a power of two;
    /// values below 4 KiB mean 4 KiB). Only takes from the never-allocated ranges, and never
    /// splits a range when that would need a slot the allocator does not have.
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Option<PhysAddr> {
        if count == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = align.max(SIZE_4K);
        let bytes = count.checked_mul(SIZE_4K)?;
        for index in 0..self.free.len() {
            let range = self.free[index].clone();
            let Some(start) = align_up(range.start, align) else {
                continue;
            };
            let Some(end) = start.checked_add(bytes) else {
                continue;
            };
            if end > range.end {
                continue;
            }
            let (head, tail) = (range.start..start, end..range.end);
            match (head.is_empty(), tail.is_empty()) {
                (true, true) => {
                    self.free.remove(index);
                }
                (true, false) => self.free[index] = tail,
                (false, true) => self.free[index] = head,
                (false, false) => {
                    if self.free.insert(index + 1, tail).is_err() {
                        continue;
                    }
                    self.free[index] = head;
                }
            }
            return Some(PhysAddr::new(start));
        }
        None
    }

    /// Returns `frame` for reuse. Checks alignment, ownership and double frees; it cannot tell
    /// whether the caller still uses the frame.
    pub fn free(&mut self, frame: PhysAddr) -> Result<(), FreeError> {
        let addr = frame.as_u64();
        if !frame.is_aligned(SIZE_4K) {
            return Err(FreeError::Misaligned(frame));
        }
        if !self.owned.iter().any(|r| r.contains(&addr)) {
            return Err(FreeError::NotOwned(frame));
        }
        if self.free.iter().any(|r| r.contains(&addr)) || self.recycled.contains(&addr) {
            return Err(FreeError::AlreadyFree(frame));
        }
        // Grow a neighbouring range when possible: keeps free memory contiguous.
        if let Some(index) = self.free.iter().position(|r| r.end == addr) {
            self.free[index].end += SIZE_4K;
            let joins_next = self
                .free
                .get(index + 1)
                .is_some_and(|next| next.start == self.free[index].end);
            if joins_next {
                let next = self.free.remove(index + 1);
                self.free[index].end = next.end;
            }
            return Ok(());
        }
        if let Some(range) = self.free.iter_mut().find(|r| r.start == addr + SIZE_4K) {
            range.start = addr;
            return Ok(());
        }
        if self.recycled.push(addr).is_ok() {
            return Ok(());
        }
        // List full: a spare range slot holds the frame as a one-frame range.
        let index = self
            .free
            .iter()
            .position(|r| r.start > addr)
            .unwrap_or(self.free.len());
        self.free
            .insert(index, addr..addr + SIZE_4K)
            .map_err(|_| FreeError::RecycleListFull(frame))
    }

    /// Frames that `alloc` can still hand out.
    pub fn free_frames(&self) -> u64 {
        self.free.iter().map(frames).sum::<u64>() + self.recycled.len() as u64
    }

    /// Frames under management (usable minus reserved, low memory and dropped ranges).
    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Frames lost because the memory map had more pieces than [`MAX_RANGES`].
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// The managed ranges (sorted, page aligned), for the boot log.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.owned
    }
}

#[cfg(test)]
// One-range lists and reversed ranges are exactly the memory maps these tests feed in.
#[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn drain(allocator: &mut FrameAllocator) -> std::vec::Vec<u64> {
        std::iter::from_fn(|| allocator.alloc().map(PhysAddr::as_u64)).collect()
    }

    #[test]
    fn empty_hands_out_nothing() {
        static EMPTY: FrameAllocator = FrameAllocator::empty();
        assert_eq!((EMPTY.total_frames(), EMPTY.free_frames()), (0, 0));
        let mut allocator = FrameAllocator::empty();
        assert_eq!(allocator.alloc(), None);
        assert_eq!(
            allocator.free(PhysAddr::new(MIB)),
            Err(FreeError::NotOwned(PhysAddr::new(MIB)))
        );
    }

    #[test]
    fn low_memory_and_frame_zero_are_never_used() {
        let mut allocator = FrameAllocator::new([0..2 * MIB], []);
        assert_eq!(allocator.total_frames(), 256);
        assert_eq!(allocator.ranges(), &[MIB..2 * MIB]);
        let frames = drain(&mut allocator);
        assert_eq!(frames.len(), 256);
        assert_eq!(frames[0], MIB);
        assert_eq!(*frames.last().unwrap(), 2 * MIB - SIZE_4K);
        assert_eq!(allocator.free_frames(), 0);
        assert_eq!(allocator.alloc(), None);
    }

    #[test]
    fn usable_rounds_inward_reserved_outward() {
        // Usable 1 MiB + 1 .. 1 MiB + 5 pages - 1: only pages 1..4 are whole.
        // Reserved one byte inside page 2 takes the whole page.
        let usable = MIB + 1..MIB + 5 * SIZE_4K - 1;
        let reserved = MIB + 2 * SIZE_4K + 100..MIB + 2 * SIZE_4K + 101;
        let mut allocator = FrameAllocator::new([usable], [reserved]);
        assert_eq!(drain(&mut allocator), [MIB + SIZE_4K, MIB + 3 * SIZE_4K]);
    }

    #[test]
    fn unsorted_overlapping_input_is_merged() {
        let usable = [
            8 * MIB..9 * MIB,
            2 * MIB..3 * MIB,
            2 * MIB + SIZE_4K..4 * MIB, // overlaps the previous one
            4 * MIB..5 * MIB,           // adjacent
            8 * MIB + 123..8 * MIB + 456,
        ];
        let reserved = [4 * MIB - SIZE_4K..4 * MIB + SIZE_4K, 8 * MIB..8 * MIB + 1];
        let allocator = FrameAllocator::new(usable, reserved);
        assert_eq!(
            allocator.ranges(),
            &[
                2 * MIB..4 * MIB - SIZE_4K,
                4 * MIB + SIZE_4K..5 * MIB,
                8 * MIB + SIZE_4K..9 * MIB
            ]
        );
        assert_eq!(allocator.total_frames(), 4 * 256 - 2 - 1);
        assert_eq!(allocator.free_frames(), allocator.total_frames());
        assert_eq!(allocator.dropped_frames(), 0);
    }

    #[test]
    fn hostile_ranges() {
        let usable = [
            u64::MAX - 10..u64::MAX,
            5..3,
            MIB..MIB,
            (1 << 52) - SIZE_4K..u64::MAX,
            16 * MIB..17 * MIB,
        ];
        let reserved = [10..5, 16 * MIB + 5..16 * MIB + 5, u64::MAX - 1..u64::MAX];
        let allocator = FrameAllocator::new(usable, reserved);
        // The top frame below 2^52 survives; the empty reservation takes nothing.
        assert_eq!(
            allocator.ranges(),
            &[16 * MIB..17 * MIB, (1 << 52) - SIZE_4K..1 << 52]
        );
        assert_eq!(allocator.total_frames(), 257);
    }

    #[test]
    fn too_many_ranges_drop_the_smallest() {
        // 70 separate single-frame ranges and one big one: 7 single frames cannot be kept.
        let singles =
            (0..70).map(|i| 2 * MIB + i * 2 * SIZE_4K..2 * MIB + i * 2 * SIZE_4K + SIZE_4K);
        let allocator = FrameAllocator::new(singles.chain([64 * MIB..128 * MIB]), []);
        assert_eq!(allocator.ranges().len(), MAX_RANGES);
        assert!(allocator.ranges().contains(&(64 * MIB..128 * MIB)));
        assert_eq!(allocator.dropped_frames(), 7);
        assert_eq!(allocator.total_frames(), 63 + 64 * 256);
    }

    #[test]
    fn free_and_realloc() {
        let mut allocator = FrameAllocator::new([MIB..MIB + 8 * SIZE_4K], []);
        let a = allocator.alloc().unwrap();
        let b = allocator.alloc().unwrap();
        let c = allocator.alloc().unwrap();
        assert_eq!(allocator.free_frames(), 5);
        // `c` is adjacent to the free range and merges back; `a` goes to the recycle list.
        allocator.free(c).unwrap();
        allocator.free(a).unwrap();
        assert_eq!(allocator.free_frames(), 7);
        assert_eq!(allocator.free(a), Err(FreeError::AlreadyFree(a)));
        assert_eq!(allocator.free(c), Err(FreeError::AlreadyFree(c)));
        assert_eq!(allocator.alloc(), Some(a));
        assert_eq!(allocator.alloc(), Some(c));
        // `b` freed between two allocated neighbours, then everything back: one range again.
        allocator.free(b).unwrap();
        allocator.free(a).unwrap();
        allocator.free(c).unwrap();
        assert_eq!(allocator.free_frames(), 8);
        assert_eq!(drain(&mut allocator).len(), 8);
    }

    #[test]
    fn free_rejects_foreign_frames() {
        let mut allocator = FrameAllocator::new([0..4 * MIB], [2 * MIB..3 * MIB]);
        let frame = allocator.alloc().unwrap();
        assert_eq!(
            allocator.free(PhysAddr::new(frame.as_u64() + 8)),
            Err(FreeError::Misaligned(PhysAddr::new(frame.as_u64() + 8)))
        );
        for foreign in [0, 0x9_f000, 2 * MIB, 3 * MIB - SIZE_4K, 4 * MIB] {
            let foreign = PhysAddr::new(foreign);
            assert_eq!(allocator.free(foreign), Err(FreeError::NotOwned(foreign)));
        }
        assert_eq!(allocator.free(frame), Ok(()));
        assert_eq!(
            FreeError::NotOwned(PhysAddr::new(0)).to_string(),
            "free 0x0: not an allocatable frame"
        );
    }

    #[test]
    fn recycle_list_bound() {
        let capacity = MAX_RECYCLED + MAX_RANGES;
        let frames_total = 2 * capacity as u64 + 4;
        let mut allocator = FrameAllocator::new([MIB..MIB + frames_total * SIZE_4K], []);
        let frames = drain(&mut allocator);
        // Free every other frame, never adjacent to a free range: they fill the recycle list,
        // then the (now empty) range list.
        let mut odd = frames.iter().skip(1).step_by(2).map(|&f| PhysAddr::new(f));
        for frame in odd.by_ref().take(capacity) {
            allocator.free(frame).unwrap();
        }
        let overflow = odd.next().unwrap();
        assert_eq!(
            allocator.free(overflow),
            Err(FreeError::RecycleListFull(overflow))
        );
        assert_eq!(allocator.free_frames(), capacity as u64);
        // Frame 2 * MAX_RECYCLED + 2 sits between the first two one-frame ranges: freeing it
        // joins them, which frees a range slot for the overflow frame.
        let bridge = PhysAddr::new(frames[2 * MAX_RECYCLED + 2]);
        assert_eq!(allocator.free(bridge), Ok(()));
        assert_eq!(allocator.free(overflow), Ok(()));
        assert_eq!(allocator.free_frames(), capacity as u64 + 2);
        let again = drain(&mut allocator);
        let unique: HashSet<u64> = again.iter().copied().collect();
        assert_eq!((again.len(), unique.len()), (capacity + 2, capacity + 2));
    }

    #[test]
    fn contiguous_aligned() {
        let mut allocator = FrameAllocator::new([MIB + SIZE_4K..8 * MIB], []);
        let block = allocator.alloc_contiguous(512, 2 * MIB).unwrap();
        assert_eq!(block, PhysAddr::new(2 * MIB));
        // The head before the aligned block is still there, and so is the tail.
        assert_eq!(allocator.alloc(), Some(PhysAddr::new(MIB + SIZE_4K)));
        assert_eq!(allocator.free_frames(), 7 * 256 - 1 - 512 - 1);
        let next = allocator.alloc_contiguous(4, SIZE_4K).unwrap();
        assert_eq!(next, PhysAddr::new(MIB + 2 * SIZE_4K));
        assert_eq!(allocator.alloc_contiguous(0, SIZE_4K), None);
        assert_eq!(allocator.alloc_contiguous(1, 3 * SIZE_4K), None);
        assert_eq!(allocator.alloc_contiguous(8 * 256, SIZE_4K), None);
    }

    /// Coalesces raw input ranges the way the test sees them: a byte is usable if any range
    /// covers it.
    fn union(ranges: &[Range<u64>]) -> std::vec::Vec<Range<u64>> {
        let mut sorted: std::vec::Vec<_> =
            ranges.iter().filter(|r| r.start < r.end).cloned().collect();
        sorted.sort_by_key(|r| r.start);
        let mut out: std::vec::Vec<Range<u64>> = std::vec::Vec::new();
        for r in sorted {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }

    fn ranges(
        max_start: u64,
        max_len: u64,
        count: usize,
    ) -> impl Strategy<Value = std::vec::Vec<Range<u64>>> {
        prop::collection::vec(
            (0..max_start, 0..max_len).prop_map(|(start, len)| start..start + len),
            0..count,
        )
    }

    proptest! {
        #[test]
        fn never_hands_out_reserved_or_unusable_or_twice(
            usable in ranges(24 * MIB, 4 * MIB, 12),
            reserved in ranges(24 * MIB, MIB, 12),
            free_every in 2usize..5,
        ) {
            let mut allocator = FrameAllocator::new(usable.iter().cloned(), reserved.iter().cloned());
            let usable_union = union(&usable);
            let check = |frame: u64| -> Result<(), TestCaseError> {
                prop_assert_eq!(frame % SIZE_4K, 0);
                prop_assert!(frame >= LOW_MEMORY_END, "frame {:#x} below 1 MiB", frame);
                let end = frame + SIZE_4K;
                prop_assert!(usable_union.iter().any(|r| r.start <= frame && end <= r.end), "frame {:#x} not usable", frame);
                for r in &reserved {
                    prop_assert!(r.start >= r.end || end <= r.start || r.end <= frame, "frame {:#x} overlaps reserved {:?}", frame, r);
                }
                Ok(())
            };

            let total = allocator.total_frames();
            prop_assert_eq!(allocator.free_frames(), total);
            let mut outstanding = HashSet::new();
            while let Some(frame) = allocator.alloc() {
                check(frame.as_u64())?;
                prop_assert!(outstanding.insert(frame.as_u64()), "frame {:#x} handed out twice", frame.as_u64());
            }
            prop_assert_eq!(outstanding.len() as u64, total);

            // Free some, reallocate them all: still unique, still valid.
            let mut sorted: std::vec::Vec<u64> = outstanding.iter().copied().collect();
            sorted.sort_unstable();
            for &frame in sorted.iter().step_by(free_every) {
                match allocator.free(PhysAddr::new(frame)) {
                    Ok(()) => { outstanding.remove(&frame); }
                    Err(FreeError::RecycleListFull(_)) => {} // still ours, stays outstanding
                    Err(other) => prop_assert!(false, "free {:#x}: {}", frame, other),
                }
            }
            prop_assert_eq!(allocator.free_frames() + outstanding.len() as u64, total);
            while let Some(frame) = allocator.alloc() {
                check(frame.as_u64())?;
                prop_assert!(outstanding.insert(frame.as_u64()), "frame {:#x} handed out twice after free", frame.as_u64());
            }
            prop_assert_eq!(outstanding.len() as u64, total);
        }
    }
}
