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

/// As the CPU's: a server's zeros.
pub fn load_server_segments() {
    load_user_segments(None);
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

thread_local! {
    static ONLINE: Cell<u32> = const { Cell::new(1) };
}

/// The stand-in machine's online CPUs (the boot CPU only unless a test set more).
pub fn online_mask() -> u32 {
    ONLINE.get()
}

/// Makes the stand-in machine's online CPUs `mask`.
pub fn set_online_mask(mask: u32) {
    ONLINE.set(mask);
}

pub fn run_threads_on(_n: usize) {}

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
    pub fn guest_descriptor(_view: bsp_x86_64::gdt::DescriptorView, _selector: u16) -> Option<u64> {
        None
    }
}

pub mod ipi {
    pub fn answer_shootdowns() {}

    /// No other CPUs on the host: nobody to ask.
    pub fn shootdown_tlb(_roots: &[u64]) -> usize {
        0
    }

    pub fn shootdown_tlb_everywhere() -> usize {
        0
    }

    pub fn wake_cpu(_cpu: usize) {}
}
