//! The bootstrap page tables (pv64-abi.md §2.1, item g): they map the whole start-of-day
//! region at `virt_base + (pfn << 12)`.
//!
//! Tables are written in the layout's order (L4, L3s, L2s, L1s, each level by ascending
//! VA). Leaf entries are `P|RW|A`, except that the page-table frames themselves are mapped
//! without RW; entries above L1 are `P|RW|A|D|U`. These are the flags a guest sees from
//! Xen's builder; the nucleus validates the tables (and adds what its rules force) before
//! any of them is loaded into CR3. The hypervisor's L4 slots 256-271 stay empty here: the
//! region never reaches them (the layout checks), and the nucleus fills them itself.

use super::error::BuildError;
use super::frames::{DomainFrames, FrameWriter, write_frame};
use super::layout::{Layout, Pfn};

/// L1 entries: present, writable, accessed.
pub const L1_PROT: u64 = 0x23;
/// L1 entries that map a page-table frame: present, accessed, read-only.
pub const L1_PROT_RO: u64 = L1_PROT & !0x2;
/// L2-L4 entries: present, writable, accessed, dirty, user.
pub const LX_PROT: u64 = 0x67;

/// Bytes one table covers, by level (index 1 = L1 … 4 = L4; L4 covers a whole half).
const TABLE_SPAN_SHIFT: [u32; 5] = [0, 21, 30, 39, 48];
/// Bytes one entry covers, by level.
const ENTRY_SPAN_SHIFT: [u32; 5] = [0, 12, 21, 30, 39];

/// The tables of one level: consecutive pfns, each covering the next aligned chunk of VA.
#[derive(Clone, Copy, Debug)]
struct Level {
    level: usize,
    first_pfn: u64,
    first_chunk: u64,
    count: u64,
}

impl Level {
    fn chunk_range(&self) -> core::ops::Range<u64> {
        self.first_chunk..self.first_chunk + self.count
    }
}

fn levels(layout: &Layout) -> [Level; 4] {
    let start = layout.virt_base;
    let counts = [
        layout.tables.l1,
        layout.tables.l2,
        layout.tables.l3,
        layout.tables.l4,
    ];
    // Pfns: L4 first, then L3s, L2s, L1s.
    let l4_pfn = layout.page_tables.start;
    let l3_pfn = l4_pfn + counts[3];
    let l2_pfn = l3_pfn + counts[2];
    let l1_pfn = l2_pfn + counts[1];
    let first_pfn = [l1_pfn, l2_pfn, l3_pfn, l4_pfn];
    core::array::from_fn(|i| Level {
        level: i + 1,
        first_pfn: first_pfn[i],
        first_chunk: start >> TABLE_SPAN_SHIFT[i + 1],
        count: counts[i],
    })
}

/// Writes every bootstrap table into the domain's frames.
pub fn write(
    layout: &Layout,
    frames: &DomainFrames<'_>,
    writer: &mut impl FrameWriter,
) -> Result<(), BuildError> {
    let levels = levels(layout);
    let region = layout.virt_base..layout.region_end_va();
    // Highest level first: the order of the pfns.
    for level in levels.iter().rev() {
        for chunk in level.chunk_range() {
            let mut table = [0u8; 4096];
            let mut set = |slot: u64, entry: u64| {
                let at = (slot as usize % 512) * 8;
                table[at..at + 8].copy_from_slice(&entry.to_le_bytes());
            };
            let table_start = chunk << TABLE_SPAN_SHIFT[level.level];
            let entry_shift = ENTRY_SPAN_SHIFT[level.level];
            if level.level == 1 {
                let first = table_start.max(region.start);
                let end = (table_start + (1 << TABLE_SPAN_SHIFT[1])).min(region.end);
                for va in (first..end).step_by(4096) {
                    let pfn = (va - layout.virt_base) >> 12;
                    let prot = if layout.is_page_table(pfn) {
                        L1_PROT_RO
                    } else {
                        L1_PROT
                    };
                    set(va >> entry_shift, frames.mfn(Pfn(pfn)).addr() | prot);
                }
            } else {
                // Children: the tables of the level below whose chunk lies in this table.
                let below = &levels[level.level - 2];
                let per_table = 1u64 << (TABLE_SPAN_SHIFT[level.level] - entry_shift);
                for child in below.chunk_range() {
                    if child / per_table != chunk {
                        continue;
                    }
                    let pfn = below.first_pfn + (child - below.first_chunk);
                    set(child, frames.mfn(Pfn(pfn)).addr() | LX_PROT);
                }
            }
            let pfn = level.first_pfn + (chunk - level.first_chunk);
            write_frame(writer, frames.mfn(Pfn(pfn)), 0, &table)?;
        }
    }
    Ok(())
}
