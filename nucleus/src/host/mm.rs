use bsp_x86_64::paging::PhysAddr;
use std::cell::{Cell, RefCell};

pub use memory::phys_to_virt;

/// A user pointer that does not name memory the thread may use that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPointer;

/// A stand-in address space: a root number and a few byte ranges the thread "mapped"
/// (readable; writable too where `with_writable` put them).
pub struct AddressSpace {
    root: PhysAddr,
    memory: RefCell<Vec<Region>>,
}

struct Region {
    at: u64,
    bytes: Vec<u8>,
    writable: bool,
}

thread_local! {
    static LOADED: Cell<u64> = const { Cell::new(0) };
    static DESTROYED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl AddressSpace {
    pub fn fake(root: u64) -> Self {
        Self {
            root: PhysAddr::new(root),
            memory: RefCell::new(Vec::new()),
        }
    }

    /// `bytes` readable at user address `at`.
    pub fn with_bytes(self, at: u64, bytes: &[u8]) -> Self {
        self.memory.borrow_mut().push(Region {
            at,
            bytes: bytes.to_vec(),
            writable: false,
        });
        self
    }

    /// `len` zero bytes readable and writable at user address `at`.
    pub fn with_writable(self, at: u64, len: usize) -> Self {
        self.memory.borrow_mut().push(Region {
            at,
            bytes: vec![0; len],
            writable: true,
        });
        self
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The region and offset holding `[ptr, ptr + len)` with the access asked for.
    fn find(&self, ptr: u64, len: u64, write: bool) -> Result<(usize, usize), BadPointer> {
        let memory = self.memory.borrow();
        for (i, region) in memory.iter().enumerate() {
            let Some(offset) = ptr.checked_sub(region.at) else {
                continue;
            };
            let fits = offset
                .checked_add(len)
                .is_some_and(|end| end <= region.bytes.len() as u64);
            if fits && (region.writable || !write) {
                return Ok((i, offset as usize));
            }
        }
        Err(BadPointer)
    }

    pub fn check(&self, ptr: u64, len: u64, write: bool) -> Result<(), BadPointer> {
        if len == 0 {
            return Ok(());
        }
        self.find(ptr, len, write).map(drop)
    }

    pub fn read(&self, ptr: u64, buf: &mut [u8]) -> Result<(), BadPointer> {
        let (i, offset) = self.find(ptr, buf.len() as u64, false)?;
        buf.copy_from_slice(&self.memory.borrow()[i].bytes[offset..offset + buf.len()]);
        Ok(())
    }

    pub fn write(&self, ptr: u64, bytes: &[u8]) -> Result<(), BadPointer> {
        let (i, offset) = self.find(ptr, bytes.len() as u64, true)?;
        self.memory.borrow_mut()[i].bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// `len` bytes at `ptr`, for a test to look at what the nucleus wrote.
    pub fn bytes(&self, ptr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.read(ptr, &mut out)
            .expect("mapped in the stand-in space");
        out
    }

    pub fn destroy(self) {
        if LOADED.get() == self.root.as_u64() {
            load_root(kernel_root());
        }
        DESTROYED.with(|d| d.borrow_mut().push(self.root.as_u64()));
    }
}

pub fn kernel_root() -> PhysAddr {
    PhysAddr::new(0x1000)
}

pub fn load_root(root: PhysAddr) {
    LOADED.set(root.as_u64());
}

/// The root the stand-in CR3 holds.
pub fn loaded_root() -> u64 {
    LOADED.get()
}

/// Roots of the spaces destroyed on this test thread, in order.
pub fn destroyed() -> Vec<u64> {
    DESTROYED.with(|d| d.borrow().clone())
}

/// No boot modules on the host.
pub fn module_bytes(_range: &core::ops::Range<u64>) -> &'static [u8] {
    &[]
}

/// Stand-in RAM for the guest-manager calls (`domains`): `RAM_FRAMES` frames per test
/// thread, the first `NUCLEUS_FRAMES` the nucleus' (never handed out), the rest free.
/// `phys_to_virt` is an address inside it, as the direct map is on bare metal.
pub mod memory {
    use bsp_x86_64::paging::{PageTableEntry, PageTableFlags, PhysAddr};
    use std::cell::{Cell, RefCell};

    pub const RAM_FRAMES: u64 = 2048;
    pub const NUCLEUS_FRAMES: u64 = 16;
    /// The nucleus' window below its L4: an L3 (every entry the L2), an L2 (every entry
    /// the L1), an L1, all present, as real as a walk into the window would find them.
    pub const WINDOW_TABLES: [u64; 3] = [2, 4, 5];

    /// A frame: page-aligned as RAM is (some views of a frame need it), a `Cell` because
    /// the nucleus writes it through raw pointers (interior mutability).
    #[repr(align(4096))]
    struct Page(Cell<[u8; 4096]>);

    thread_local! {
        static RAM: Vec<Page> = (0..RAM_FRAMES)
            .map(|frame| Page(Cell::new(window_page(frame))))
            .collect();
        static FREE: RefCell<Vec<u64>> =
            RefCell::new((NUCLEUS_FRAMES..RAM_FRAMES).rev().collect());
    }

    pub fn phys_to_virt(phys: u64) -> u64 {
        RAM.with(|ram| ram.as_ptr() as u64) + phys
    }

    /// A zeroed frame, or None when the stand-in RAM is used up.
    pub fn alloc_frame() -> Option<PhysAddr> {
        let frame = FREE.with(|f| f.borrow_mut().pop())?;
        RAM.with(|ram| ram[frame as usize].0.set([0; 4096]));
        Some(PhysAddr::new(frame << 12))
    }

    pub fn free_frame(frame: PhysAddr) {
        let number = frame.as_u64() >> 12;
        FREE.with(|f| {
            let mut free = f.borrow_mut();
            assert!(
                (NUCLEUS_FRAMES..RAM_FRAMES).contains(&number) && !free.contains(&number),
                "frame {number:#x} freed twice or never allocated"
            );
            free.push(number);
        });
    }

    pub fn free_count() -> u64 {
        FREE.with(|f| f.borrow().len() as u64)
    }

    pub fn ram_end_frame() -> u64 {
        RAM_FRAMES
    }

    /// Takes `n` frames out of the free list (a test's way to make memory short).
    pub fn use_up(n: u64) {
        for _ in 0..n {
            let _ = alloc_frame();
        }
    }

    fn table_entry(frame: u64) -> PageTableEntry {
        PageTableEntry::new(
            PhysAddr::new(frame << 12),
            PageTableFlags::PRESENT | PageTableFlags::WRITABLE,
        )
    }

    /// The initial bytes of frame `frame`: the window's tables, zeros elsewhere.
    fn window_page(frame: u64) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        let below = match WINDOW_TABLES.iter().position(|&t| t == frame) {
            Some(0) => WINDOW_TABLES[1],
            Some(1) => WINDOW_TABLES[2],
            Some(_) => NUCLEUS_FRAMES - 1,
            None => return page,
        };
        for word in page.chunks_exact_mut(8) {
            word.copy_from_slice(&table_entry(below).raw().to_le_bytes());
        }
        page
    }

    /// The nucleus L4's window: every slot points at the window's L3.
    pub fn nucleus_root_entry(_slot: usize) -> PageTableEntry {
        table_entry(WINDOW_TABLES[0])
    }
}

/// The stand-in descriptor-table window (`domains::window`): its pages' targets.
pub mod window {
    use bsp_x86_64::paging::PhysAddr;
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static PAGES: RefCell<HashMap<u64, (u64, bool)>> = RefCell::new(HashMap::new());
    }

    pub fn remap(va: u64, target: Option<(PhysAddr, bool)>) {
        PAGES.with(|p| match target {
            Some((frame, writable)) => p.borrow_mut().insert(va, (frame.as_u64() >> 12, writable)),
            None => p.borrow_mut().remove(&va),
        });
    }

    /// The frame (and whether writable) the window page at `va` maps.
    pub fn mapped(va: u64) -> Option<(u64, bool)> {
        PAGES.with(|p| p.borrow().get(&va).copied())
    }
}

/// The stand-in M2P: a map per test thread.
pub mod m2p {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use xen_abi::Mfn;

    pub use xen_abi::layout::INVALID_M2P_ENTRY;

    thread_local! {
        static M2P: RefCell<HashMap<u64, u64>> = RefCell::new(HashMap::new());
    }

    pub fn set(mfn: Mfn, pfn: u64) {
        M2P.with(|m| m.borrow_mut().insert(mfn.0, pfn));
    }

    pub fn clear(mfn: Mfn) {
        set(mfn, INVALID_M2P_ENTRY);
    }

    /// `M2P[mfn]` (invalid if never set).
    pub fn get(mfn: Mfn) -> u64 {
        M2P.with(|m| m.borrow().get(&mfn.0).copied().unwrap_or(INVALID_M2P_ENTRY))
    }
}
