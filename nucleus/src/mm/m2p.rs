//! The machine-to-physical table (pv64-abi.md §5.4, I6): one u64 per machine frame of RAM,
//! the guest pfn that frame is, or `INVALID_M2P_ENTRY`. Guests read it directly at Xen's
//! `MACH2PHYS_VIRT_START` (L4 slot 256, mapped user-readable, never writable, no execute);
//! the nucleus writes it through the direct map, so its own accesses never touch a user
//! page (SMAP). Slot 256 holds nothing else, and only guest L4s carry it: servers get the
//! window from slot 257 on (`addrspace`).
use super::memory::{self, MemoryError};
use crate::layout::M2P_BASE;
use crate::racy::RacyCell;
use bsp_x86_64::paging::{PageTableFlags as F, PhysAddr, VirtAddr};
use xen_abi::Mfn;
use xen_abi::layout::{INVALID_M2P_ENTRY, MACH2PHYS_NR_ENTRIES};

struct Table {
    /// Physical base of the table's contiguous frames.
    base: u64,
    /// Entries: machine frames `[0, entries)`.
    entries: u64,
}

static TABLE: RacyCell<Table> = RacyCell::new(Table {
    base: 0,
    entries: 0,
});

fn table() -> &'static Table {
    // SAFETY: written once by `init` at boot (one CPU) before any reader exists.
    unsafe { &*TABLE.get() }
}

/// Builds the table for machine frames `[0, frames)`, every entry invalid, and maps it at
/// `M2P_BASE` (user, read-only, no execute; not global, so no server keeps it in its TLB).
/// Runs once the direct map is live, before the first address space copies slot 256.
pub fn init(frames: u64) -> Result<(), MemoryError> {
    let entries = frames.min(MACH2PHYS_NR_ENTRIES);
    let pages = (entries * 8).div_ceil(4096).max(1);
    let base = memory::alloc_contiguous(pages).ok_or(MemoryError::OutOfFrames)?;
    // SAFETY: `base` is a fresh run of `pages` frames the nucleus keeps for good, reached
    // through the direct map; 0xff in every byte makes every entry INVALID_M2P_ENTRY.
    unsafe {
        core::ptr::write_bytes(
            memory::phys_to_virt(base.as_u64()) as *mut u8,
            0xff,
            (pages * 4096) as usize,
        )
    };
    const _: () = assert!(INVALID_M2P_ENTRY == u64::MAX);
    for page in 0..pages {
        memory::with_mapper(|mapper, root| {
            mapper.map_4k(
                root,
                VirtAddr::new_truncate(M2P_BASE + page * 4096),
                PhysAddr::new(base.as_u64() + page * 4096),
                F::PRESENT | F::USER | F::NO_EXECUTE,
            )
        })?;
    }
    // SAFETY: boot, one CPU: nothing reads the table yet.
    unsafe {
        *TABLE.get() = Table {
            base: base.as_u64(),
            entries,
        }
    };
    Ok(())
}

/// Machine frames the table covers (`[0, entries)`).
pub fn entries() -> u64 {
    table().entries
}

fn entry(mfn: Mfn) -> Option<*mut u64> {
    let t = table();
    (mfn.0 < t.entries).then(|| memory::phys_to_virt(t.base + mfn.0 * 8) as *mut u64)
}

/// `M2P[mfn] = pfn` (a frame outside the table is no RAM a guest can own: ignored).
pub fn set(mfn: Mfn, pfn: u64) {
    if let Some(slot) = entry(mfn) {
        // SAFETY: `slot` is inside the table's frames (checked in `entry`), reached through
        // the direct map; single CPU, so no reader sees a torn write (an aligned u64 store is
        // atomic for a guest on another CPU too).
        unsafe { slot.write_volatile(pfn) };
    }
}

/// `M2P[mfn] = INVALID_M2P_ENTRY`: the frame is no guest's pfn any more.
pub fn clear(mfn: Mfn) {
    set(mfn, INVALID_M2P_ENTRY);
}
