//! The start-of-day memory layout of a PV64 domain (pv64-abi.md §2.1).
//!
//! From pfn 0 (VA `virt_base`) upward, page aligned and packed: the image with its padding,
//! the p2m list, start_info, the xenstore ring, the console ring, the bootstrap page tables
//! (L4, L3s, L2s, L1s), the boot stack. The region then runs on to `v_end`, a 4 MiB boundary
//! at least 512 KiB past the stack; every pfn below `v_end` is backed and mapped at
//! `virt_base + (pfn << 12)`. The page tables map the region, and the region contains the
//! page tables, so their number is found by iterating until it stops growing.

use core::ops::Range;

use xen_abi::PAGE_SIZE;
pub use xen_abi::Pfn;
use xen_abi::layout::{HYPERVISOR_VIRT_START, in_hypervisor_window};

use super::error::BuildError;
use super::image::GuestImage;

/// Free room the region keeps after the boot stack (§2.1).
const SLACK_PAGES: u64 = (512 << 10) / PAGE_SIZE;
/// `v_end` is a multiple of this many pages (4 MiB).
const V_END_ALIGN_PAGES: u64 = (4 << 20) / PAGE_SIZE;
/// Bytes one entry covers at L1..L4.
const L1_SPAN: u64 = 1 << 12;
const L2_SPAN: u64 = 1 << 21;
const L3_SPAN: u64 = 1 << 30;
const L4_SPAN: u64 = 1 << 39;

/// How many tables of each level map a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub l4: u64,
    pub l3: u64,
    pub l2: u64,
    pub l1: u64,
}

impl TableCounts {
    /// Tables needed to map `[start, end)` (`end > start`): one per distinct slot of the
    /// level above that the range touches.
    pub fn for_range(start: u64, end: u64) -> Self {
        let last = end - 1;
        let spans = |span: u64| last / span - start / span + 1;
        Self {
            l4: 1,
            l3: spans(L4_SPAN),
            l2: spans(L3_SPAN),
            l1: spans(L2_SPAN),
        }
    }

    pub const fn total(&self) -> u64 {
        self.l4 + self.l3 + self.l2 + self.l1
    }
}

/// Where everything of the start-of-day region lives. All ranges are pfns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// VA of pfn 0.
    pub virt_base: u64,
    /// Pages the domain owns (`start_info.nr_pages`).
    pub nr_pages: u64,
    pub image: Range<u64>,
    pub p2m: Range<u64>,
    pub start_info: Pfn,
    pub store: Pfn,
    pub console: Pfn,
    /// L4 first, then the L3s, L2s and L1s.
    pub page_tables: Range<u64>,
    pub tables: TableCounts,
    pub boot_stack: Pfn,
    /// One past the last mapped pfn.
    pub v_end: u64,
}

impl Layout {
    /// Lays out a domain of `nr_pages` for `image`, refusing what does not fit. `free_pages`
    /// is what the hypervisor could give (the domain's memory must come from it).
    pub fn plan(
        image: &GuestImage<'_>,
        nr_pages: u64,
        free_pages: u64,
    ) -> Result<Self, BuildError> {
        if nr_pages > free_pages {
            return Err(BuildError::NotEnoughMemory {
                requested_pages: nr_pages,
                available_pages: free_pages,
            });
        }
        let mem = nr_pages.saturating_mul(PAGE_SIZE);
        for (index, segment) in image.segments.iter().enumerate() {
            let end = segment.pseudo_phys.saturating_add(segment.memsz);
            if end > mem {
                return Err(BuildError::SegmentOutsideMemory {
                    index,
                    start: segment.pseudo_phys,
                    end,
                    mem,
                });
            }
        }
        let image_pages = image.image_pages();
        let p2m_pages = nr_pages.saturating_mul(8).div_ceil(PAGE_SIZE);
        let p2m = image_pages..image_pages.saturating_add(p2m_pages);
        let start_info = p2m.end;
        let (store, console, pt_start) = (start_info + 1, start_info + 2, start_info + 3);

        let mut tables = TableCounts::default();
        let v_end = loop {
            let stack = pt_start + tables.total();
            let v_end = (stack + 1 + SLACK_PAGES).next_multiple_of(V_END_ALIGN_PAGES);
            let region = image.virt_base..region_end(image.virt_base, v_end)?;
            let needed = TableCounts::for_range(region.start, region.end);
            if needed == tables {
                break v_end;
            }
            tables = needed;
        };
        if v_end > nr_pages {
            return Err(BuildError::ImageDoesNotFit {
                needed_pages: v_end,
                nr_pages,
            });
        }
        let page_tables = pt_start..pt_start + tables.total();
        Ok(Self {
            virt_base: image.virt_base,
            nr_pages,
            image: 0..image_pages,
            p2m,
            start_info: Pfn(start_info),
            store: Pfn(store),
            console: Pfn(console),
            boot_stack: Pfn(page_tables.end),
            page_tables,
            tables,
            v_end,
        })
    }

    /// VA of a pfn inside the region.
    pub const fn va(&self, pfn: u64) -> u64 {
        self.virt_base + pfn * PAGE_SIZE
    }

    /// VA one past the region's end.
    pub const fn region_end_va(&self) -> u64 {
        self.va(self.v_end)
    }

    pub fn is_page_table(&self, pfn: u64) -> bool {
        self.page_tables.contains(&pfn)
    }
}

/// `virt_base + v_end * 4K`, refused unless the whole region is guest address space: below
/// the canonical hole, or in the upper half but clear of the hypervisor's slots 256-271.
fn region_end(virt_base: u64, v_end: u64) -> Result<u64, BuildError> {
    let end = v_end
        .checked_mul(PAGE_SIZE)
        .and_then(|bytes| virt_base.checked_add(bytes));
    let lower_half = 0..=1u64 << 47;
    let refused = |end| BuildError::RegionNotGuestVirtual {
        start: virt_base,
        end,
    };
    let end = end.ok_or(refused(u64::MAX))?;
    // In the upper half the window is at its bottom: a region starting above it is clear.
    let fits = if virt_base < 1 << 47 {
        lower_half.contains(&end)
    } else {
        virt_base >= HYPERVISOR_VIRT_START && !in_hypervisor_window(virt_base)
    };
    if fits { Ok(end) } else { Err(refused(end)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts() {
        assert_eq!(
            TableCounts::for_range(0, 4 << 20),
            TableCounts {
                l4: 1,
                l3: 1,
                l2: 1,
                l1: 2
            }
        );
        // Crossing a 1 GiB and a 512 GiB boundary.
        let counts = TableCounts::for_range(L4_SPAN - L2_SPAN, L4_SPAN + L2_SPAN);
        assert_eq!(
            counts,
            TableCounts {
                l4: 1,
                l3: 2,
                l2: 2,
                l1: 2
            }
        );
        assert_eq!(counts.total(), 7);
        // Linux's kernel mapping at -2 GiB.
        let linux = TableCounts::for_range(0xffff_ffff_8000_0000, 0xffff_ffff_8200_0000);
        assert_eq!(
            linux,
            TableCounts {
                l4: 1,
                l3: 1,
                l2: 1,
                l1: 16
            }
        );
    }

    #[test]
    fn region_must_be_guest_space() {
        assert_eq!(region_end(0, 1024), Ok(4 << 20));
        assert_eq!(
            region_end(0xffff_ffff_8000_0000, 1024),
            Ok(0xffff_ffff_8040_0000)
        );
        // Linux's direct map slot 273 is the guest's.
        assert!(region_end(0xffff_8880_0000_0000, 1024).is_ok());
        for (base, pages) in [
            // Runs into the canonical hole.
            ((1 << 47) - PAGE_SIZE, 2),
            // Inside the hypervisor's window.
            (HYPERVISOR_VIRT_START, 1),
            (0xffff_87ff_ffff_f000, 1),
            // Wraps past 2^64.
            (0xffff_ffff_ffff_f000, 2),
            // Non-canonical start.
            (0x0000_9000_0000_0000, 1),
        ] {
            assert!(
                matches!(
                    region_end(base, pages),
                    Err(BuildError::RegionNotGuestVirtual { .. })
                ),
                "{base:#x} + {pages} pages"
            );
        }
    }
}
