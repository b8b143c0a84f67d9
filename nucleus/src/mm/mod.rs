//! Memory: physical frames and the nucleus' own tables ([`memory`]), the machine-to-physical
//! table guests read ([`m2p`]), the address spaces of threads ([`addrspace`]), and which of
//! them the CPU walks (CR3).
pub mod addrspace;
pub mod m2p;
pub mod memory;

pub use addrspace::{AddressSpace, BadPointer};
pub use memory::{MemoryError, kernel_root, phys_to_virt};

use bsp_x86_64::paging::PhysAddr;

/// Builds the nucleus' memory in the order its parts need each other: the frame allocator,
/// page tables and direct map ([`memory::init`]), then the M2P that lives in the direct map's
/// frames ([`m2p::init`]), then a table for every empty window slot ([`memory::fill_window`]),
/// so that the window is final before the first address space copies it.
pub fn init(boot: &crate::bootinfo::BootSummary) -> Result<memory::Layout, MemoryError> {
    let mut layout = memory::init(boot)?;
    m2p::init(memory::ram_end_frame())?;
    memory::fill_window(kernel_root())?;
    layout.free_mib = (memory::free_count() * 4096) >> 20;
    Ok(layout)
}

/// Makes `root` the tables this CPU walks (no CR3 write if it already is).
#[inline]
pub fn load_root(root: PhysAddr) {
    let root = root.as_u64();
    let cpu = crate::cpu::percpu::current();
    if cpu.loaded_root() != root {
        // SAFETY: `root` is the nucleus PML4 or a thread or guest PML4 holding its window (L4
        // slots 257-271; guests 256 too), so the
        // running code, stacks and data stay mapped.
        unsafe { bsp_x86_64::insn::write_cr3(root) };
        cpu.set_loaded_root(root);
    }
}

/// True if this CPU walks `root` now.
pub fn is_loaded(root: PhysAddr) -> bool {
    crate::cpu::percpu::current().loaded_root() == root.as_u64()
}

/// A boot module's bytes, through the direct map.
pub fn module_bytes(range: &core::ops::Range<u64>) -> &'static [u8] {
    let len = range.end.saturating_sub(range.start) as usize;
    // SAFETY: `range` comes from the boot summary: GRUB placed the module there, the frame
    // allocator never hands those frames out, and the direct map covers all RAM; nobody
    // writes module memory.
    unsafe { core::slice::from_raw_parts(phys_to_virt(range.start) as *const u8, len) }
}
