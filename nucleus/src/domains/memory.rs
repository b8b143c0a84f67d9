//! The frame-ownership table over RAM and the direct-map view of guest frames the checks
//! work on (`bsp_x86_64::guest_tables::TableMemory`).
use crate::racy::racy_static;
use bsp_x86_64::frame_owner::{FrameInfo, FrameTable};
use bsp_x86_64::guest_tables::TableMemory;
use xen_abi::Mfn;

pub type Frames = FrameTable<&'static mut [FrameInfo]>;

racy_static! {
    fn cell() -> Option<Frames> = None;
}

/// Builds the table over frames `[0, top of RAM)`: its storage comes from the allocator, so
/// nothing in it is ever a guest's.
pub fn init() -> bool {
    let count = crate::mm::memory::ram_end_frame() as usize;
    let Some(storage) = storage(count) else {
        return false;
    };
    // SAFETY: boot, single CPU: nothing else refers to the table yet.
    unsafe { *cell().get() = Some(FrameTable::new(Mfn(0), storage)) };
    true
}

/// `count` records, nucleus-owned for good.
#[cfg(target_os = "none")]
fn storage(count: usize) -> Option<&'static mut [FrameInfo]> {
    let bytes = (count * core::mem::size_of::<FrameInfo>()) as u64;
    let base = crate::mm::memory::alloc_contiguous(bytes.div_ceil(4096))?;
    let ptr = crate::mm::phys_to_virt(base.as_u64()) as *mut FrameInfo;
    // SAFETY: `base` is a fresh run of frames of at least `bytes` bytes, nucleus-owned for
    // good, reached through the direct map; `FrameTable::new` initialises every element
    // (FrameInfo is plain data, so writing over the old bytes is sound).
    Some(unsafe { core::slice::from_raw_parts_mut(ptr, count) })
}

/// The host's records: leaked, like the frames the nucleus keeps for good.
#[cfg(not(target_os = "none"))]
fn storage(count: usize) -> Option<&'static mut [FrameInfo]> {
    Some(Box::leak(vec![FrameInfo::FREE; count].into_boxed_slice()))
}

/// The table, for the guest-manager calls (single CPU, interrupts off, no nesting).
pub fn table() -> Option<&'static mut Frames> {
    // SAFETY: only the syscall path reaches it, once per call, with interrupts off on the
    // one CPU; no reference outlives the call.
    unsafe { (*cell().get()).as_mut() }
}

/// The bytes of machine frame `mfn` through the direct map.
///
/// # Safety
/// `mfn` must be RAM the caller may touch (a domain frame the checks let through).
pub unsafe fn frame_bytes(mfn: Mfn) -> &'static mut [u8; 4096] {
    // SAFETY: the caller's contract; the direct map covers all RAM.
    unsafe { &mut *(crate::mm::phys_to_virt(mfn.0 << 12) as *mut [u8; 4096]) }
}

/// Guest tables through the direct map, with the nucleus' L4 as the source of the
/// hypervisor's slots.
pub struct DirectTables;

impl TableMemory for DirectTables {
    fn read(&self, table: Mfn, index: usize) -> u64 {
        // SAFETY: `guest_tables` only names frames the frame table has (RAM), index < 512.
        let words = unsafe { &*(frame_bytes(table) as *const [u8; 4096] as *const [u64; 512]) };
        words[index % 512]
    }

    fn write(&mut self, table: Mfn, index: usize, entry: u64) {
        // SAFETY: as in `read`; the table is the domain's and not in use by the CPU while the
        // nucleus runs in pv-server's context.
        let words = unsafe { &mut *(frame_bytes(table) as *mut [u8; 4096] as *mut [u64; 512]) };
        words[index % 512] = entry;
    }

    fn hypervisor_l4_entry(&self, slot: usize) -> u64 {
        crate::mm::memory::nucleus_root_entry(slot).raw()
    }
}
