//! Physical memory and the nucleus' own address space (architecture.md §1, issue 4 point 3).
//!
//! Owns the frame allocator (built from the multiboot2 memory map minus the kernel image,
//! modules and GRUB's structure) and the nucleus page tables, all inside L4 slots 256-271
//! ([`crate::layout`]): the image mapped W^X per section (text RX, rodata R+NX, data/bss
//! RW+NX), a direct map of physical memory at [`DIRECT_MAP_BASE`] (RW+NX, 2 MiB pages), the
//! per-CPU stack block at [`STACKS_BASE`] with its guard pages left unmapped. Every slot of the window has its table from boot on, so the L4 entries
//! copied into server and guest L4s never go stale. The low identity map of the trampoline
//! is dropped, so a stray low pointer faults.
use crate::bootinfo::{BootSummary, RegionKind};
use crate::layout::{self, DIRECT_MAP_BASE, DIRECT_MAP_MAX, STACK_SLOT, STACKS_BASE};
use crate::racy::RacyCell;
use bsp_x86_64::frame_alloc::FrameAllocator;
use bsp_x86_64::insn;
use bsp_x86_64::paging::{
    MapError, Mapper, PageTable, PageTableEntry, PageTableFlags as F, PhysAddr, TableAccess,
    VirtAddr,
};
use bsp_x86_64::stack_block::{self, StackBlock};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// The image's VMA minus its load address (`build.rs` links it so).
pub const KERNEL_VMA: u64 = layout::IMAGE_BASE;

// Xen's window is exactly the nucleus' window, and each CPU's stack slot holds a block with
// a guard page below it.
const _: () = {
    assert!(layout::slot_base(layout::FIRST_SLOT) == xen_abi::layout::HYPERVISOR_VIRT_START);
    assert!(layout::slot_base(layout::END_SLOT) == xen_abi::layout::HYPERVISOR_VIRT_END);
    assert!(layout::FIRST_SLOT == xen_abi::layout::HYPERVISOR_L4_SLOTS.start);
    assert!(layout::END_SLOT == xen_abi::layout::HYPERVISOR_L4_SLOTS.end);
    assert!(layout::M2P_BASE == xen_abi::layout::MACH2PHYS_VIRT_START);
    assert!(STACK_SLOT == 2 * stack_block::BLOCK_SIZE);
};
/// Device registers (the local APIC page) appear here, uncached: `MMIO_BASE + phys`
/// ([`layout::MMIO_BASE`], in the stacks' slot).
const MMIO_BASE: u64 = layout::MMIO_BASE;
/// Highest device address [`map_mmio`] maps (below 4 GiB: the APIC's default page and any
/// firmware relocation of it).
const MMIO_MAX: u64 = 1 << 32;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __image_phys_start: u8;
    static __image_phys_end: u8;
}

fn symbol(s: &u8) -> u64 {
    core::ptr::from_ref(s) as u64
}

#[derive(Clone, Copy, Debug)]
pub enum MemoryError {
    Map(MapError),
    OutOfFrames,
    BadStackBlock,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(e) => write!(f, "memory: mapping failed: {e}"),
            Self::OutOfFrames => write!(f, "memory: out of physical frames"),
            Self::BadStackBlock => write!(f, "memory: stack block misaligned"),
        }
    }
}

impl From<MapError> for MemoryError {
    fn from(e: MapError) -> Self {
        Self::Map(e)
    }
}

/// Page tables reached through a linear window onto physical memory: the boot identity map
/// (offset 0) while the nucleus tables are built, the direct map afterwards.
pub struct Window<'a> {
    offset: u64,
    frames: &'a mut FrameAllocator,
}

impl TableAccess for Window<'_> {
    fn table(&self, phys: PhysAddr) -> &PageTable {
        // SAFETY: `phys` is a table frame the mapper got from `alloc_table` or the root; the
        // window maps all of physical memory at `offset`.
        unsafe { &*((self.offset + phys.as_u64()) as *const PageTable) }
    }

    fn table_mut(&mut self, phys: PhysAddr) -> &mut PageTable {
        // SAFETY: as above; the mapper holds the only reference while it edits the table.
        unsafe { &mut *((self.offset + phys.as_u64()) as *mut PageTable) }
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        self.frames.alloc()
    }
}

struct State {
    frames: FrameAllocator,
    root: PhysAddr,
    /// The window in use: 0 during boot, DIRECT_MAP_BASE once the nucleus tables are live.
    offset: u64,
}

static STATE: RacyCell<Option<State>> = RacyCell::new(None);

fn state() -> &'static mut State {
    // SAFETY: single CPU; memory is only changed from the nucleus with interrupts off, and
    // `init` fills the state before anything calls this.
    match unsafe { &mut *STATE.get() } {
        Some(state) => state,
        None => panic!("memory used before memory::init"),
    }
}

/// Runs `f` with a mapper over the nucleus tables and the frame allocator.
pub fn with_mapper<R>(f: impl FnOnce(&mut Mapper<Window<'_>>, PhysAddr) -> R) -> R {
    let state = state();
    let root = state.root;
    let mut mapper = Mapper::new(Window {
        offset: state.offset,
        frames: &mut state.frames,
    });
    f(&mut mapper, root)
}

/// A zeroed frame, or None when memory is exhausted.
pub fn alloc_frame() -> Option<PhysAddr> {
    let state = state();
    let frame = state.frames.alloc()?;
    // SAFETY: the frame was just handed out, so nobody else uses it; the window maps it.
    unsafe { core::ptr::write_bytes((state.offset + frame.as_u64()) as *mut u8, 0, 4096) };
    Some(frame)
}

/// `count` contiguous frames (not zeroed), for tables the nucleus keeps for good.
pub fn alloc_contiguous(count: u64) -> Option<PhysAddr> {
    state().frames.alloc_contiguous(count, 4096)
}

/// Frames the allocator can still hand out.
pub fn free_count() -> u64 {
    state().frames.free_frames()
}

/// One past the highest usable RAM frame the allocator manages.
pub fn ram_end_frame() -> u64 {
    state()
        .frames
        .ranges()
        .iter()
        .map(|r| r.end)
        .max()
        .unwrap_or(0)
        .div_ceil(4096)
}

pub fn free_frame(frame: PhysAddr) {
    if let Err(e) = state().frames.free(frame) {
        println!("memory: {e}");
    }
}

/// Virtual address of physical `phys` in the direct map.
pub fn phys_to_virt(phys: u64) -> u64 {
    DIRECT_MAP_BASE + phys
}

pub struct Layout {
    pub stack_block: StackBlock,
    /// First byte of text (the image's lowest mapped address).
    pub text_start: u64,
    pub free_mib: u64,
    pub text_bytes: u64,
    pub rodata_bytes: u64,
    pub data_bytes: u64,
}

/// Builds the frame allocator and the nucleus page tables, switches CR3 to them, and maps
/// CPU 0's stack block. The window is not final yet: [`super::init`] adds the M2P and then
/// [`fill_window`].
pub fn init(boot: &BootSummary) -> Result<Layout, MemoryError> {
    let image = symbol(
        // SAFETY: linker symbols; only their addresses are used.
        unsafe { &__image_phys_start },
    )
        ..symbol(
            // SAFETY: as above.
            unsafe { &__image_phys_end },
        );
    let usable = boot
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
        .map(|r| r.range.clone());
    let reserved = boot.modules.iter().map(|m| m.range.clone()).chain([
        image,
        boot.info.clone(),
        layout::TRAMPOLINE_RESERVED,
        layout::KEXEC_RESERVED,
    ]);
    let frames = FrameAllocator::new(usable, reserved);
    // SAFETY: boot, single CPU: the state is written once before any reader exists.
    unsafe {
        *STATE.get() = Some(State {
            frames,
            root: PhysAddr::new(0),
            offset: 0,
        })
    };

    let root = alloc_frame().ok_or(MemoryError::OutOfFrames)?;
    state().root = root;

    let phys_top = boot
        .regions
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
            )
        })
        .map(|r| r.range.end)
        .max()
        .unwrap_or(0)
        .min(DIRECT_MAP_MAX);
    // The direct map below maps whole 2 MiB pages.
    DIRECT_TOP.store(phys_top.next_multiple_of(2 << 20), Ordering::Relaxed);

    // SAFETY: linker symbols (all six); only their addresses are used.
    let (text, rodata, data) = unsafe {
        (
            symbol(&__text_start)..symbol(&__text_end),
            symbol(&__rodata_start)..symbol(&__rodata_end),
            symbol(&__data_start)..symbol(&__data_end),
        )
    };

    with_mapper(|mapper, root| -> Result<(), MemoryError> {
        let mut phys = 0;
        while phys < phys_top {
            let virt = VirtAddr::new_truncate(DIRECT_MAP_BASE + phys);
            mapper.map_2m(
                root,
                virt,
                PhysAddr::new(phys),
                F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL,
            )?;
            phys += 2 << 20;
        }
        for (section, flags) in [
            (text.clone(), F::PRESENT | F::GLOBAL),
            (rodata.clone(), F::PRESENT | F::GLOBAL | F::NO_EXECUTE),
            (
                data.clone(),
                F::PRESENT | F::GLOBAL | F::WRITABLE | F::NO_EXECUTE,
            ),
        ] {
            let mut virt = section.start;
            while virt < section.end {
                mapper.map_4k(
                    root,
                    VirtAddr::new_truncate(virt),
                    PhysAddr::new(virt - KERNEL_VMA),
                    flags,
                )?;
                virt += 4096;
            }
        }
        Ok(())
    })?;

    let block = map_stack_block(0)?;

    // SAFETY: the new tables map the running code (text), its stack and statics (data/bss),
    // the GDT/IDT/TSS (bss) and all RAM through the direct map, so execution continues.
    unsafe { insn::write_cr3(root.as_u64()) };
    state().offset = DIRECT_MAP_BASE;

    Ok(Layout {
        stack_block: block,
        text_start: text.start,
        free_mib: (state().frames.free_frames() * 4096) >> 20,
        text_bytes: text.end - text.start,
        rodata_bytes: rodata.end - rodata.start,
        data_bytes: data.end - data.start,
    })
}

/// Gives every slot of the nucleus' window that has no table yet an empty one (PRESENT |
/// WRITABLE, supervisor only), so its L4 entry is final before the first address space
/// copies it.
pub fn fill_window(root: PhysAddr) -> Result<(), MemoryError> {
    for slot in layout::FIRST_SLOT..layout::END_SLOT {
        if nucleus_root_entry(slot).is_present() {
            continue;
        }
        let table = alloc_frame().ok_or(MemoryError::OutOfFrames)?;
        // SAFETY: the root is the nucleus' own L4, reached through the direct map; no other
        // reference to it is live (boot, one CPU).
        let l4 = unsafe { &mut *(phys_to_virt(root.as_u64()) as *mut PageTable) };
        l4[slot] = PageTableEntry::new(table, F::PRESENT | F::WRITABLE);
    }
    Ok(())
}

/// Entry `slot` of the nucleus' own L4, for the window copied into every other L4.
pub fn nucleus_root_entry(slot: usize) -> PageTableEntry {
    // SAFETY: the nucleus L4 is a frame the nucleus owns for good, mapped by the direct map;
    // it changes only at boot (`init`), before anything copies it.
    let l4 = unsafe { &*(phys_to_virt(kernel_root().as_u64()) as *const PageTable) };
    l4[slot % 512]
}

/// The end of the direct map of physical memory (set by [`init`]).
static DIRECT_TOP: AtomicU64 = AtomicU64::new(0);

/// The end of the direct map: `[0, direct_map_top())` is reachable through [`phys_to_virt`].
pub fn direct_map_top() -> u64 {
    DIRECT_TOP.load(Ordering::Relaxed)
}

/// The CPU's physical address width (CPUID.8000_0008:EAX bits 7:0).
pub fn phys_bits() -> u8 {
    use bsp_x86_64::insn::cpuid;
    match cpuid(0x8000_0000, 0).eax {
        max if max >= 0x8000_0008 => match cpuid(0x8000_0008, 0).eax as u8 {
            0 => bsp_x86_64::madt::DEFAULT_PHYS_BITS,
            bits => bits,
        },
        _ => bsp_x86_64::madt::DEFAULT_PHYS_BITS,
    }
}

/// Every memory range of the memory map (a device page must lie in none).
pub fn memory_ranges() -> impl Iterator<Item = core::ops::Range<u64>> {
    crate::boot_state::boot_state()
        .into_iter()
        .flat_map(|(boot, _)| boot.regions.iter())
        .filter(|r| r.kind.is_memory())
        .map(|r| r.range.clone())
}

/// Maps the 4 KiB device page at `phys` (uncached, not executable) and returns its virtual
/// address; a second call for the same page returns the same address. `None` (and one line)
/// if `phys` is no device page below 4 GiB (`madt::check_device`: aligned, inside the
/// physical address width, not RAM of the memory map) or the mapping fails.
pub fn map_mmio(phys: u64) -> Option<u64> {
    let checked = bsp_x86_64::madt::check_device(phys, phys_bits(), memory_ranges());
    if let Err(e) = checked {
        println!("memory: device page {phys:#x} {e}; not mapped");
        return None;
    }
    if phys >= MMIO_MAX {
        println!("memory: device page {phys:#x} is above 4 GiB; not mapped");
        return None;
    }
    let virt = MMIO_BASE + phys;
    let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH;
    match with_mapper(|mapper, root| {
        mapper.map_4k(
            root,
            VirtAddr::new_truncate(virt),
            PhysAddr::new(phys),
            flags,
        )
    }) {
        Ok(()) | Err(MapError::AlreadyMapped { .. }) => Some(virt),
        Err(e) => {
            println!("memory: cannot map device page {phys:#x}: {e}");
            None
        }
    }
}

/// Maps the stack block of `cpu`: the guard pages (primary and IST shadow-stack pages while
/// CET is off, and the page below the block) stay unmapped.
pub fn map_stack_block(cpu: u64) -> Result<StackBlock, MemoryError> {
    let base = STACKS_BASE + cpu * STACK_SLOT + stack_block::BLOCK_SIZE;
    let block = StackBlock::new(base).map_err(|_| MemoryError::BadStackBlock)?;
    for page in block.mapped_pages() {
        let frame = alloc_frame().ok_or(MemoryError::OutOfFrames)?;
        let mut flags = F::PRESENT | F::NO_EXECUTE | F::GLOBAL;
        if page.writable {
            flags |= F::WRITABLE;
        }
        with_mapper(|mapper, root| {
            mapper.map_4k(root, VirtAddr::new_truncate(page.address), frame, flags)
        })?;
    }
    Ok(block)
}

/// The nucleus' own PML4 (the upper half every address space shares).
pub fn kernel_root() -> PhysAddr {
    state().root
}
