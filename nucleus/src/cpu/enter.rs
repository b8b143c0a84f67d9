//! Entering a frame from Rust: the first thread's at boot, the idle context, and the user
//! GS a thread starts with. Every later entry is the exit half of the entry stubs.
use crate::forward::changes::RFLAGS_USER;
use crate::racy::RacyCell;
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::gdt;
use core::sync::atomic::{AtomicBool, Ordering};

unsafe extern "C" {
    /// The exits of `bsp_x86_64::entry_stubs!`: in: RSP = &Frame; restore and return
    /// (IRETQ with SWAPGS for ring 3 / ERETU or ERETS).
    static idt_exit: u8;
    static fred_exit: u8;
    /// `hlt` loop with interrupts on (`boot.rs`), where the CPU waits when no thread runs.
    fn nucleus_idle() -> !;
}

core::arch::global_asm!(
    ".global nucleus_enter_frame",
    // In: RDI = &Frame, RSI = exit stub. Never returns here.
    "nucleus_enter_frame:",
    "mov rsp, rdi",
    "jmp rsi",
);

unsafe extern "C" {
    /// Leaves the nucleus into `frame` through the exit stub `exit`.
    ///
    /// # Safety
    /// `frame` must describe a context that is safe to run (a loaded thread's, with its
    /// address space in CR3), and `exit` must be the exit stub of the active delivery.
    fn nucleus_enter_frame(frame: *const Frame, exit: u64) -> !;
}

/// Where the first thread's frame waits for its first return to Ring3.
static FIRST_FRAME: RacyCell<Frame> = RacyCell::new(Frame::ZERO);
static FIRST_ENTERED: AtomicBool = AtomicBool::new(false);

/// Boot: lets `load` fill the first thread's frame (and load its CR3 and user GS), then
/// enters it. Returns only if `load` found nothing to run, or on a second call.
pub fn enter_first(load: impl FnOnce(&mut Frame) -> bool) {
    if FIRST_ENTERED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: boot, single CPU, interrupts off, and only the first call gets here: nothing
    // else uses FIRST_FRAME.
    let frame = unsafe { &mut *FIRST_FRAME.get() };
    if !load(frame) {
        return;
    }
    let exit = if super::fred::enabled() {
        core::ptr::addr_of!(fred_exit) as u64
    } else {
        core::ptr::addr_of!(idt_exit) as u64
    };
    // SAFETY: `load` put a loaded thread's frame there and loaded its CR3 and user GS; the
    // exit stub of the active delivery restores the frame and enters Ring3 (SWAPGS+IRETQ or
    // ERETU).
    unsafe { nucleus_enter_frame(frame, exit) }
}

static IDLE_STACK: RacyCell<[u64; 512]> = RacyCell::new([0; 512]);

/// The context the CPU waits in when no thread is runnable: `hlt` in ring 0 with
/// interrupts on, on a stack of its own.
pub fn idle_frame() -> Frame {
    let mut frame = Frame::ZERO;
    frame.ret.rip = nucleus_idle as *const () as u64;
    frame.ret.cs = CsQword::from_raw(u64::from(gdt::KERNEL_CS.raw()));
    frame.ret.ss = SsQword::from_raw(u64::from(gdt::KERNEL_DS.raw()));
    frame.ret.rflags = RFLAGS_USER.bits();
    frame.ret.rsp = (IDLE_STACK.get() as u64 + 512 * 8) & !0xf;
    frame
}

/// Gives the next thread a clean user GS: null selector, base 0 (threads have no TLS yet).
/// Under FRED this is LKGS plus IA32_KERNEL_GS_BASE, never SWAPGS (design note, "GS
/// handling"); ERETU swaps the base in.
#[inline]
pub fn load_user_gs() {
    let base = bsp_x86_64::msr::KernelGsBase::new(0).unwrap_or_else(|_| panic!("0 is canonical"));
    // SAFETY: ring 0 with interrupts off; LKGS is only used when FRED (and so LKGS, which the
    // policy requires) is enabled; the null selector is always loadable.
    unsafe { bsp_x86_64::fred::load_user_gs(super::fred::enabled(), gdt::Selector::NULL, base) };
}
