//! Entering a context from Rust: the primary stack at boot, the first thread's frame, the
//! idle loop (the nucleus' only interruptible code), and the user FS/GS a thread runs with.
//! Every later entry is the exit half of the entry stubs.
use super::percpu::{self, IDLE_STACK_WORDS};
use super::user_segments::UserSegments;
use bsp_x86_64::frame::{CsQword, Frame, SsQword};
use bsp_x86_64::gdt;
use bsp_x86_64::gdt::DescriptorView;
use bsp_x86_64::guest_segments::SegmentBases;
use bsp_x86_64::guest_selectors::DataSelectors;
use bsp_x86_64::msr;
use bsp_x86_64::regs::Rflags;
use bsp_x86_64::stack_block::StackBlock;
use core::sync::atomic::Ordering;
use xen_abi::layout::selector::FLAT_RING3_DS32;

unsafe extern "C" {
    /// The exits of `bsp_x86_64::entry_stubs!`: in: RSP = &Frame; restore and return
    /// (IRETQ with SWAPGS for ring 3 / ERETU or ERETS).
    static idt_exit: u8;
    static fred_exit: u8;
    /// `hlt` loop with interrupts on (below), where the CPU waits when no thread runs.
    fn nucleus_idle() -> !;
}

core::arch::global_asm!(
    ".global nucleus_enter_frame",
    // In: RDI = &Frame, RSI = exit stub (which takes the frame in RAX). Never returns here.
    // RSP 16 bytes below a 64-byte boundary, as the exit stubs find it after an event.
    "nucleus_enter_frame:",
    "and rsp, -64",
    "sub rsp, 16",
    "mov rax, rdi",
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

/// Boot: lets `load` make the first thread current (and load its CR3 and user GS), then
/// enters the frame it returns. Returns only if `load` found nothing to run, or on a second
/// call on this CPU.
pub fn enter_first(load: impl FnOnce() -> Option<*mut Frame>) {
    let cpu = percpu::current();
    if cpu.first_entered.swap(true, Ordering::Relaxed) {
        return;
    }
    let Some(frame) = load() else {
        return;
    };
    let exit = if super::fred::enabled() {
        core::ptr::addr_of!(fred_exit) as u64
    } else {
        core::ptr::addr_of!(idt_exit) as u64
    };
    // SAFETY: `load` made a loaded thread current, returned its save area and loaded its CR3
    // and user GS; the exit stub of the active delivery restores the frame and enters Ring3
    // (SWAPGS+IRETQ or ERETU).
    unsafe { nucleus_enter_frame(frame, exit) }
}

/// Points this CPU's `cpu_info.save_area` at `area`: where the entry stubs save the next
/// event from ring 3 (the save area of the thread about to run).
#[inline(always)]
pub fn set_save_area(area: *mut Frame) {
    // SAFETY: in ring 0 GS_BASE is this CPU's `cpu_info` (percpu module comment); the word
    // is read only by this CPU's ring-3 entry stubs, which cannot run until this CPU leaves
    // ring 0. The caller's pointer is a thread's save area (a static), valid for the stubs.
    unsafe {
        core::arch::asm!(
            "mov gs:[{off}], {area}",
            area = in(reg) area,
            off = const bsp_x86_64::cpu_info::CPU_INFO_SAVE_AREA,
            options(nostack, preserves_flags),
        );
    }
}

/// The context this CPU waits in when no thread is runnable: `hlt` in ring 0 with
/// interrupts on, on its own idle stack (`PerCpu`). The frame itself sits at the top of the
/// idle stack, just above where the loop's RSP starts, so the exit stub's RSP never points
/// into memory an interrupt in its last instructions could clobber (issue 14).
pub fn idle_exit() -> *mut Frame {
    let stack = percpu::current().idle_stack.get() as u64;
    let top = stack + IDLE_STACK_WORDS as u64 * 8;
    let at = (top - core::mem::size_of::<Frame>() as u64) & !63;
    let mut frame = Frame::ZERO;
    frame.ret.rip = nucleus_idle as *const () as u64;
    frame.ret.cs = CsQword::from_raw(u64::from(gdt::KERNEL_CS.raw()));
    frame.ret.ss = SsQword::from_raw(u64::from(gdt::KERNEL_DS.raw()));
    frame.ret.rflags = Rflags::INTERRUPTS_ON.bits();
    frame.ret.rsp = at;
    let at = at as *mut Frame;
    // SAFETY: `at` lies inside this CPU's idle stack, 64-byte aligned, above the RSP the loop
    // runs at: nothing is live there (the loop never returns; a tick that interrupted it
    // runs below), interrupts are off, and only the exit stub reads the frame.
    unsafe { at.write(frame) };
    at
}

const ZERO_FS: msr::FsBase = match msr::FsBase::new(0) {
    Ok(base) => base,
    Err(_) => panic!("0 is canonical"),
};
const ZERO_GS: msr::KernelGsBase = match msr::KernelGsBase::new(0) {
    Ok(base) => base,
    Err(_) => panic!("0 is canonical"),
};

/// What this CPU holds for ring 3 (`PerCpu::user_segments`): a switch that would write the
/// same values writes nothing (each MSR write is a serialising instruction).
#[inline(always)]
fn live() -> &'static mut UserSegments {
    // SAFETY: this CPU's own cell, touched only by the switch path (`sched::switch`) on this
    // CPU with interrupts off; no reference outlives the call.
    unsafe { &mut *percpu::current().user_segments.get() }
}

/// Loads the next thread's user segments for its return to ring 3: a guest vCPU's FS base,
/// GS selector and the GS base of its mode (`Some((bases, kernel))`), zeros for a server
/// (`None`). Under FRED this is LKGS plus IA32_KERNEL_GS_BASE, never SWAPGS (design note,
/// "GS handling"); ERETU, or the IDT exit's SWAPGS, swaps the base in. What the CPU holds
/// already is not rewritten.
#[inline]
pub fn load_user_segments(guest: Option<(&SegmentBases, bool)>) {
    let live = live();
    let want = match guest {
        None if live.is_zero() => return,
        None => UserSegments {
            fs: 0,
            gs_sel: 0,
            gs: 0,
        },
        Some((segments, kernel)) => UserSegments {
            fs: segments.fs,
            // Only Xen's flat data selector is ever loaded besides null (`SegmentBases::set`);
            // the check here keeps the `load_user_gs` contract whatever the field holds.
            gs_sel: if segments.gs_sel == FLAT_RING3_DS32 {
                FLAT_RING3_DS32
            } else {
                0
            },
            gs: segments.live_gs(kernel),
        },
    };
    if *live == want {
        return;
    }
    // `SegmentBases::set` keeps the bases canonical; were one not, 0 is loaded, never a #GP.
    let fs = msr::FsBase::new(want.fs).unwrap_or(ZERO_FS);
    let gs = msr::KernelGsBase::new(want.gs).unwrap_or(ZERO_GS);
    if live.fs != want.fs {
        // SAFETY: ring 0 with interrupts off; the nucleus never uses FS, so its base is the
        // thread's alone; FS_BASE is canonical (checked constructor).
        unsafe { msr::write(fs) };
    }
    if live.gs_sel != want.gs_sel || live.gs != want.gs {
        // SAFETY: as above; LKGS is only used when FRED (and so LKGS, which the policy
        // requires) is enabled; the selector is null or the flat DPL-3 data segment.
        unsafe {
            bsp_x86_64::fred::load_user_gs(
                super::fred::enabled(),
                gdt::Selector::from_raw(want.gs_sel),
                gs,
            )
        };
    }
    *live = UserSegments {
        fs: fs.address(),
        gs: gs.address(),
        ..want
    };
}

/// [`load_user_segments`] for a server (`None`), inlined up to its common verdict: the
/// CPU holds a server's zeros already (the event fast path's switch between servers).
#[inline(always)]
pub fn load_server_segments() {
    if !live().is_zero() {
        load_user_segments(None);
    }
}

/// The thread that just left ring 3: takes note of the GS selector it left (a thread may
/// load one), and with `bases` (a guest, which may change its bases by loading a selector;
/// a server's stay 0) reads back its FS and user GS base (in ring 0 the user GS base is
/// IA32_KERNEL_GS_BASE under both deliveries), which it returns.
#[inline]
pub fn user_segments_left(bases: bool) -> (u64, u64) {
    let live = live();
    live.gs_sel = bsp_x86_64::insn::read_gs_selector().raw();
    if bases {
        live.fs = msr::read::<msr::FsBase>().address();
        live.gs = msr::read::<msr::KernelGsBase>().address();
    }
    (live.fs, live.gs)
}

/// The data selectors ring 3 left (DS, ES, FS, GS), for a guest vCPU that stops.
#[inline]
pub fn data_selectors_left() -> DataSelectors {
    let [ds, es, fs] = bsp_x86_64::insn::read_data_selectors();
    DataSelectors {
        ds,
        es,
        fs,
        gs: live().gs_sel,
    }
}

/// The thread (slot number) whose data selectors this CPU holds: servers never load one, so
/// they stay a guest's until another guest comes in (`sched::switch`).
#[inline]
pub fn selectors_owner() -> Option<usize> {
    // SAFETY: this CPU's own cell, touched only on the switch path and the guest-manager
    // syscalls on this CPU with interrupts off; no reference outlives the call.
    unsafe { *percpu::current().selectors_of.get() }
}

pub fn set_selectors_owner(owner: Option<usize>) {
    // SAFETY: as in `selectors_owner`.
    unsafe { *percpu::current().selectors_of.get() = owner };
}

/// Loads DS, ES and FS of the thread coming in (a guest vCPU's saved ones, on its
/// descriptor tables `view`; null for a server) where the CPU holds others. A selector whose
/// descriptor no longer passes the CPU's checks is loaded as null and cleared in `want`
/// (never a fault in ring 0). GS is `load_user_segments`'. Returns whether one was cleared.
/// Runs after `load_descriptor_tables`, before `load_user_segments`.
#[inline]
pub fn load_data_selectors(view: DescriptorView, want: &mut DataSelectors) -> bool {
    let held = bsp_x86_64::insn::read_data_selectors();
    if held == [want.ds, want.es, want.fs] {
        return false;
    }
    reload_data_selectors(view, want, held)
}

#[cold]
#[inline(never)]
fn reload_data_selectors(view: DescriptorView, want: &mut DataSelectors, held: [u16; 3]) -> bool {
    use bsp_x86_64::guest_selectors::{is_null, loadable};
    use bsp_x86_64::insn::{DataSegment, load_selector};
    let mut cleared = false;
    for ((reg, sel), held) in [
        (DataSegment::Ds, &mut want.ds),
        (DataSegment::Es, &mut want.es),
        (DataSegment::Fs, &mut want.fs),
    ]
    .into_iter()
    .zip(held)
    {
        if held == *sel {
            continue;
        }
        if !is_null(*sel) && !loadable(*sel, super::tables::guest_descriptor(view, *sel)) {
            *sel = 0;
            cleared = true;
        }
        // SAFETY: null, or a selector whose descriptor (read from the tables just loaded)
        // passes the checks of a CPL-3 load, which are stricter than ring 0's.
        unsafe { load_selector(reg, gdt::Selector::from_raw(*sel)) };
        if reg == DataSegment::Fs {
            // The load set FS's base from the descriptor (or, for null, as the vendor
            // does): put back what `LIVE` says the CPU holds, so it stays true.
            let cached = live();
            let fs = msr::FsBase::new(cached.fs).unwrap_or(ZERO_FS);
            // SAFETY: ring 0, interrupts off; FS is the thread's alone, the value canonical.
            unsafe { msr::write(fs) };
            cached.fs = fs.address();
        }
    }
    cleared
}

core::arch::global_asm!(
    ".global continue_on_stack",
    // In: RDI = new stack top (16-byte aligned), RSI = function that never returns.
    "continue_on_stack:",
    "mov rsp, rdi",
    "xor ebp, ebp",
    "call rsi",
    "ud2",
);

unsafe extern "C" {
    /// Switches to the stack whose top is `top` and calls `next` there.
    ///
    /// # Safety
    /// `top` must be the 16-byte aligned top of a mapped, otherwise unused stack.
    fn continue_on_stack(top: u64, next: extern "C" fn() -> !) -> !;
}

/// Leaves the boot stack for this CPU's primary stack in `block` and calls `next` there.
/// Only the first call on a CPU switches; a second one panics.
pub fn continue_on_primary(block: &StackBlock, next: extern "C" fn() -> !) -> ! {
    if percpu::current().switched.swap(true, Ordering::Relaxed) {
        panic!("boot: second switch to the stack block");
    }
    // SAFETY: `memory::init` just mapped the block and nothing ran on its primary stack yet
    // (this is the first switch); its top (below cpu_info) is 64-byte aligned.
    unsafe { continue_on_stack(block.primary_top(), next) }
}

core::arch::global_asm!(
    // The nucleus' only interruptible code: a timer tick that lands in here interrupted no
    // work, so it may replace the context (`dispatch`, `thread::sched`); anywhere else it must
    // return to it.
    ".global nucleus_idle_start, nucleus_idle, nucleus_idle_end",
    // In: IF = 0 (boot, once no server is runnable). Enables interrupts and waits.
    "nucleus_idle_start:",
    "sti",
    // Entered through an IRET/ERETS with RFLAGS.IF = 1: wait for the next interrupt.
    "nucleus_idle:",
    "hlt",
    "jmp nucleus_idle",
    "nucleus_idle_end:",
);

unsafe extern "C" {
    /// Enables interrupts and halts until the next one, forever.
    fn nucleus_idle_start() -> !;
    static nucleus_idle_end: u8;
}

/// Whether `rip` lies in the idle loop (a ring-0 RIP an interrupt may have interrupted).
pub fn in_idle_loop(rip: u64) -> bool {
    let start = nucleus_idle_start as *const () as u64;
    // A linker symbol: only its address is taken, never its value.
    let end = core::ptr::addr_of!(nucleus_idle_end) as u64;
    (start..end).contains(&rip)
}

/// Boot's end once no server is runnable: the idle loop, with interrupts on.
pub fn idle_forever() -> ! {
    // SAFETY: CPL 0 with the dispatcher installed: every interrupt that wakes the loop is
    // handled, and the timer tick switches to a server from here once one is runnable.
    unsafe { nucleus_idle_start() }
}
