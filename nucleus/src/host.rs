//! Host stand-ins for the bare-metal modules the safe core calls (`console`, `mm`, `cpu`,
//! `loader`), so that `thread`, `syscall`, `forward`, `lifecycle` and `bench` build and are
//! unit-tested on the host. Each stand-in keeps what the tests look at in thread-local
//! state (the test harness runs tests on several threads).
#![allow(clippy::missing_safety_doc)]

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::host::console::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {
        $crate::host::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod console {
    use std::cell::RefCell;
    use std::fmt::Write;

    thread_local! {
        static OUT: RefCell<String> = const { RefCell::new(String::new()) };
    }

    pub fn write_fmt(args: core::fmt::Arguments<'_>) {
        OUT.with(|out| {
            let _ = out.borrow_mut().write_fmt(args);
        });
    }

    /// Everything printed on this test thread since the last call.
    pub fn take() -> String {
        OUT.with(|out| core::mem::take(&mut *out.borrow_mut()))
    }
}

pub mod mm {
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
                Some((frame, writable)) => {
                    p.borrow_mut().insert(va, (frame.as_u64() >> 12, writable))
                }
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
}

pub mod cpu {
    use bsp_x86_64::frame::{CsQword, Frame};
    use bsp_x86_64::gdt;
    use bsp_x86_64::guest_segments::SegmentBases;
    use std::cell::Cell;

    /// Where the stand-in idle context "runs".
    pub const IDLE_RIP: u64 = 0xffff_ffff_8000_1d1e;

    pub fn idle_frame() -> Frame {
        let mut frame = Frame::ZERO;
        frame.ret.rip = IDLE_RIP;
        frame.ret.cs = CsQword::from_raw(u64::from(gdt::KERNEL_CS.raw()));
        frame
    }

    thread_local! {
        static SELECTORS: Cell<bsp_x86_64::guest_selectors::DataSelectors> =
            const { Cell::new(bsp_x86_64::guest_selectors::DataSelectors::NULL) };
        static TABLES: Cell<gdt::DescriptorView> = const {
            Cell::new(gdt::DescriptorView { gdt_base: 0, ldt: false })
        };
        static IDLE: &'static mut Frame = Box::leak(Box::new(idle_frame()));
        static SAVE_AREA: Cell<u64> = const { Cell::new(0) };
        static LOADED: Cell<(SegmentBases, bool)> = const { Cell::new((SegmentBases::ZERO, true)) };
        static LIVE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    /// The stand-in idle frame (one per test thread), as the exit stub would get it.
    pub fn idle_exit() -> *mut Frame {
        IDLE.with(|idle| core::ptr::from_ref::<Frame>(idle).cast_mut())
    }

    /// Records where the stand-in CPU's ring-3 entries would save.
    pub fn set_save_area(area: *mut Frame) {
        SAVE_AREA.set(area as u64);
    }

    /// Where the last switch pointed the save area.
    pub fn save_area() -> u64 {
        SAVE_AREA.get()
    }

    /// Records what the stand-in CPU would run with (a server: zeros, kernel mode).
    pub fn load_user_segments(guest: Option<(&SegmentBases, bool)>) {
        let (segments, kernel) = guest.map_or((SegmentBases::ZERO, true), |(s, k)| (*s, k));
        LOADED.set((segments, kernel));
        LIVE.set((segments.fs, segments.live_gs(kernel)));
    }

    /// The stand-in CPU's data selectors: whatever the last thread was loaded with.
    pub fn data_selectors_left() -> bsp_x86_64::guest_selectors::DataSelectors {
        SELECTORS.get()
    }

    thread_local! {
        static OWNER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub fn selectors_owner() -> Option<usize> {
        OWNER.get()
    }

    pub fn set_selectors_owner(owner: Option<usize>) {
        OWNER.set(owner);
    }

    /// Loads `want` as the stand-in CPU would; clears nothing (no descriptors here).
    pub fn load_data_selectors(
        _view: gdt::DescriptorView,
        want: &mut bsp_x86_64::guest_selectors::DataSelectors,
    ) -> bool {
        SELECTORS.set(*want);
        false
    }

    /// What the running thread loaded itself.
    pub fn set_live_selectors(selectors: bsp_x86_64::guest_selectors::DataSelectors) {
        SELECTORS.set(selectors);
    }

    /// Records the descriptor tables the stand-in CPU would run with.
    pub fn load_descriptor_tables(view: gdt::DescriptorView) {
        TABLES.set(view);
    }

    /// The descriptor tables last loaded.
    pub fn loaded_descriptor_tables() -> gdt::DescriptorView {
        TABLES.get()
    }

    pub fn user_segments_left(_bases: bool) -> (u64, u64) {
        LIVE.get()
    }

    pub fn user_bases() -> (u64, u64) {
        LIVE.get()
    }

    /// The segments last loaded, and for which mode.
    pub fn loaded_segments() -> (SegmentBases, bool) {
        LOADED.get()
    }

    /// What the running thread changed itself (FS base, user GS base).
    pub fn set_live_bases(fs: u64, gs: u64) {
        LIVE.set((fs, gs));
    }

    thread_local! {
        static CPU: Cell<u32> = const { Cell::new(0) };
    }

    /// The stand-in CPU's number (0 unless a test set another).
    pub fn this_cpu_number() -> u32 {
        CPU.get()
    }

    /// Makes the stand-in CPU CPU `n` (a test of another CPU's run queue).
    pub fn set_this_cpu_number(n: u32) {
        CPU.set(n);
    }

    /// No descriptor tables on the host: no guest selector reads as loadable.
    pub mod tables {
        pub fn guest_descriptor(
            _view: bsp_x86_64::gdt::DescriptorView,
            _selector: u16,
        ) -> Option<u64> {
            None
        }
    }

    pub mod ipi {
        pub fn answer_shootdowns() {}

        /// No other CPUs on the host: nobody to ask.
        pub fn shootdown_tlb(_roots: &[u64]) -> usize {
            0
        }

        pub fn wake_cpu(_cpu: usize) {}
    }
}

pub mod loader {
    use super::mm::AddressSpace;
    use ipc::ring::{Consumer, Producer, RingStorage};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// Ring capacity of the stand-in images.
    const RING: usize = 2048;

    pub use crate::image::{Image, StartParams};

    #[derive(Clone, Copy, Debug)]
    pub enum LoadError {
        NoModule,
        /// The test told the stand-in to refuse.
        Refused,
    }

    impl core::fmt::Display for LoadError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Self::NoModule => f.write_str("no boot module"),
                Self::Refused => f.write_str("refused by the test"),
            }
        }
    }

    /// The thread's side of a stand-in image's rings.
    pub struct ServerEnds {
        pub events: Consumer<'static>,
        pub replies: Producer<'static>,
    }

    thread_local! {
        static ENDS: RefCell<HashMap<&'static str, ServerEnds>> = RefCell::new(HashMap::new());
        static REFUSE: Cell<bool> = const { Cell::new(false) };
        static NEXT_ROOT: Cell<u64> = const { Cell::new(0x10_0000) };
    }

    /// Makes the next loads fail (`true`) or succeed.
    pub fn refuse(refuse: bool) {
        REFUSE.set(refuse);
    }

    /// Takes the server side of the rings of the image last loaded as `name`.
    pub fn server_ends(name: &str) -> ServerEnds {
        ENDS.with(|e| e.borrow_mut().remove(name))
            .unwrap_or_else(|| panic!("no image loaded as {name}"))
    }

    pub fn load(
        _module: &core::ops::Range<u64>,
        start: &StartParams<'_>,
    ) -> Result<Image, LoadError> {
        if REFUSE.get() {
            return Err(LoadError::Refused);
        }
        let (events, server_events) = Box::leak(Box::new(RingStorage::<RING>::new())).split();
        let (server_replies, replies) = Box::leak(Box::new(RingStorage::<RING>::new())).split();
        ENDS.with(|e| {
            e.borrow_mut().insert(
                start.name,
                ServerEnds {
                    events: server_events,
                    replies: server_replies,
                },
            )
        });
        let root = NEXT_ROOT.get();
        NEXT_ROOT.set(root + 0x1000);
        Ok(Image {
            space: AddressSpace::fake(root),
            entry: 0x40_1000,
            events,
            replies,
            bytes: 4096,
            segments: 2,
        })
    }
}

/// The hand-off: three modules (the kexec image is module 2); every request is refused
/// with the reason the bare-metal checks would give for a missing or a non-ELF module.
pub mod handoff {
    use crate::kexec::refusal::Refusal;
    use bsp_x86_64::cmdline::KexecReason;
    use bsp_x86_64::kexec::ImageError;

    const MODULES: usize = 3;

    pub struct Prepared;

    pub fn kexec_image() -> Option<u16> {
        Some(2)
    }

    pub fn prepare(
        module: u16,
        _generation: u32,
        _reason: KexecReason,
    ) -> Result<Prepared, Refusal> {
        if usize::from(module) >= MODULES {
            return Err(Refusal::NoModule {
                index: module,
                count: MODULES,
            });
        }
        Err(Refusal::Image(ImageError::NotElf))
    }

    pub fn execute(_prepared: Prepared) -> ! {
        unreachable!("the host stand-in prepares no hand-off")
    }
}

/// What the tests of the safe core share: a booted thread table and the server side of it.
#[cfg(test)]
pub mod kit {
    pub use super::console::take as output;
    pub use super::loader::{ServerEnds, server_ends};
    use crate::thread::{ThreadId, Threads};
    use bsp_x86_64::frame::{CsQword, Frame, SsQword};
    use bsp_x86_64::gdt;
    use ipc::{NucleusMessage, ServerMessage};

    /// fred-server's slot (no fault handler; handles pv-server's faults).
    pub fn fred() -> ThreadId {
        Threads::new().ids().next().unwrap()
    }

    /// pv-server's slot.
    pub fn pv() -> ThreadId {
        Threads::new().ids().nth(1).unwrap()
    }

    /// Both boot threads started from stand-in images, the boot lines taken.
    pub fn booted() -> Threads {
        super::loader::refuse(false);
        let mut t = Threads::new();
        for id in t.server_ids() {
            assert!(crate::lifecycle::start(&mut t, id, Some(0..4096)));
        }
        output();
        t
    }

    /// The next message in a thread's event ring, as the thread would decode it.
    pub fn recv(ends: &mut ServerEnds) -> Option<NucleusMessage> {
        ends.events
            .pop_with(ipc::codec::decode::<NucleusMessage>)
            .expect("event ring intact")
            .map(|decoded| decoded.expect("decodable message"))
    }

    /// Everything in a thread's event ring.
    pub fn recv_all(ends: &mut ServerEnds) -> Vec<NucleusMessage> {
        core::iter::from_fn(|| recv(ends)).collect()
    }

    /// Queues `message` on a thread's reply ring.
    pub fn send(ends: &mut ServerEnds, message: &ServerMessage) {
        ends.replies
            .try_push_message(message)
            .expect("reply ring has room");
    }

    /// A Ring3 frame at `rip`, as an event from a thread leaves it.
    pub fn user_frame(rip: u64) -> Frame {
        let mut frame = Frame::ZERO;
        frame.ret.rip = rip;
        frame.ret.cs = CsQword::from_raw(u64::from(gdt::USER_CS64.raw()));
        // As a 64-bit server's events leave it (FRED's bit 57; the IDT stubs set it too).
        frame.ret.ss = SsQword::from_raw(u64::from(gdt::USER_DS.raw())).with_64bit(true);
        frame
    }
}
