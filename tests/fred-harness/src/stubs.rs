//! The nucleus' entry stubs, assembled around recording handlers, and one broken copy.
//!
//! `bsp_x86_64::entry_stubs!` emits the same text here as in the nucleus (`fred_entry_ring3`,
//! `fred_entry_ring0` at +256, `fred_exit`, `idt_vector_stubs`, `idt_common`, `idt_exit`).
//! The handlers stand in for the dispatcher: they copy the frame they were given, decode it
//! with `Frame::event` as the nucleus does, optionally change the frame (a dispatcher may),
//! and clobber every caller-saved register, so that only the stubs' restore from the frame
//! can bring the interrupted values back.
//!
//! `fred_harness_broken_ring0` is TEST-ONLY: the ring-0 entry with the store of RBX left
//! out, to prove that the harness notices a stub that loses a register.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bsp_x86_64::entry::FastSyscall;
use bsp_x86_64::frame::{self, DecodeError, Frame};
use ipc::Event;

bsp_x86_64::entry_stubs!(
    idt: harness_idt,
    fred_ring3: harness_ring3,
    fred_ring0: harness_ring0,
    syscall_idt_fast: harness_syscall_idt,
    syscall_idt: harness_idt,
    syscall_fred_fast: harness_syscall_fred,
    syscall_fred: harness_syscall_table_fred,
);

/// Which handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Idt,
    FredRing3,
    FredRing0,
    /// FRED's way in to the syscall table: a 64-bit SYSCALL the fast path declined.
    SyscallFred,
    /// A syscall fast path that completed the call (`set_fast`).
    FastIdt,
    FastFred,
}

/// What a handler saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub entry: Entry,
    /// Address of the frame (RSP at the `call`).
    pub frame_addr: u64,
    /// The frame as the handler got it.
    pub frame: Frame,
    /// `frame.event(0, 0)`, as the nucleus' dispatcher decodes it.
    pub event: Result<Event, DecodeError>,
    /// How many handler calls this delivery made (1 expected).
    pub calls: u64,
    /// RFLAGS when the handler was called: the SysV ABI requires DF = 0 at a call.
    pub rflags: u64,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
static CALLS: AtomicU64 = AtomicU64::new(0);
static SET_RAX: AtomicBool = AtomicBool::new(false);
static NEW_RAX: AtomicU64 = AtomicU64::new(0);

/// Value the handlers leave in every caller-saved register.
pub const CLOBBER: u64 = 0xdead_c10b_be12_0000;

/// Forgets what the handlers saw; `set_rax` makes the next handler write RAX in the frame
/// (as a syscall dispatcher writes its return value).
pub fn reset(set_rax: Option<u64>) {
    *SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    CALLS.store(0, Ordering::Relaxed);
    SET_RAX.store(set_rax.is_some(), Ordering::Relaxed);
    NEW_RAX.store(set_rax.unwrap_or(0), Ordering::Relaxed);
    FAST_CALLS.store(0, Ordering::Relaxed);
}

/// The syscall fast paths' stand-ins decline every call (clobbering the caller-saved
/// registers first, as a real one may) unless this is set: then they complete it, writing
/// this into the area's RAX, and record what they saw as a handler does.
static FAST_RAX: Mutex<Option<u64>> = Mutex::new(None);
/// How many times a fast path stand-in ran since `reset`.
static FAST_CALLS: AtomicU64 = AtomicU64::new(0);

/// Makes the syscall fast paths complete the next call with `rax` (or decline: `None`);
/// one delivery only: the stand-in takes it.
pub fn set_fast(rax: Option<u64>) {
    *FAST_RAX
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = rax;
}

/// How many times a syscall fast path ran since the last `reset`.
pub fn fast_calls() -> u64 {
    FAST_CALLS.load(Ordering::Relaxed)
}

/// What the last handler saw, if one ran.
pub fn seen() -> Option<Seen> {
    *SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn record(entry: Entry, frame: &mut Frame, rflags: u64) {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let seen = Seen {
        entry,
        frame_addr: core::ptr::from_mut(frame) as u64,
        frame: *frame,
        event: frame.event(0, 0),
        calls,
        rflags,
    };
    *SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(seen);
    if SET_RAX.load(Ordering::Relaxed) {
        frame.gprs.rax = NEW_RAX.load(Ordering::Relaxed);
    }
    clobber_caller_saved();
}

/// Overwrites RAX, RCX, RDX, RSI, RDI, R8–R11 and the arithmetic flags.
#[inline(never)]
fn clobber_caller_saved() {
    // SAFETY: writes only registers declared as clobbered; touches no memory or stack.
    unsafe {
        asm!(
            "mov rax, {value}",
            "mov rcx, rax", "mov rdx, rax", "mov rsi, rax", "mov rdi, rax",
            "mov r8, rax", "mov r9, rax", "mov r10, rax", "mov r11, rax",
            "add rax, 1",
            value = const CLOBBER,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nomem, nostack),
        )
    };
}

/// RFLAGS as the stub left them, then DF cleared: a stub that calls Rust with DF = 1 is
/// recorded, but the harness' own Rust code (whose `memcpy` may use `rep movsb`) then runs
/// with the direction the ABI requires.
#[inline(always)]
fn entry_rflags() -> u64 {
    let rflags: u64;
    // SAFETY: pushes and pops one qword on the current stack; `cld` only clears DF.
    unsafe { asm!("pushfq", "pop {}", "cld", out(reg) rflags) };
    rflags
}

// Each returns the frame it was given: the exit stub restores the frame the dispatcher names.

extern "C" fn harness_idt(frame: &mut Frame) -> *mut Frame {
    let rflags = entry_rflags();
    record(Entry::Idt, frame, rflags);
    frame
}

extern "C" fn harness_ring3(frame: &mut Frame) -> *mut Frame {
    let rflags = entry_rflags();
    record(Entry::FredRing3, frame, rflags);
    frame
}

extern "C" fn harness_syscall_table_fred(frame: &mut Frame) -> *mut Frame {
    let rflags = entry_rflags();
    record(Entry::SyscallFred, frame, rflags);
    frame
}

extern "C" fn harness_ring0(frame: &mut Frame) -> *mut Frame {
    let rflags = entry_rflags();
    record(Entry::FredRing0, frame, rflags);
    frame
}

extern "C" fn harness_syscall_idt(frame: &mut Frame) -> FastSyscall {
    let rflags = entry_rflags();
    fast(Entry::FastIdt, frame, rflags)
}

extern "C" fn harness_syscall_fred(frame: &mut Frame) -> FastSyscall {
    let rflags = entry_rflags();
    fast(Entry::FastFred, frame, rflags)
}

fn fast(entry: Entry, frame: &mut Frame, rflags: u64) -> FastSyscall {
    FAST_CALLS.fetch_add(1, Ordering::Relaxed);
    let rax = FAST_RAX
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let area: *mut Frame = frame;
    match rax {
        None => {
            clobber_caller_saved();
            FastSyscall::new(area, false)
        }
        Some(rax) => {
            SET_RAX.store(true, Ordering::Relaxed);
            NEW_RAX.store(rax, Ordering::Relaxed);
            record(entry, frame, rflags);
            FastSyscall::new(area, true)
        }
    }
}

// TEST-ONLY broken stub: `fred_entry_ring0` with `mov [rsp + rbx], rbx` removed. It shares
// the real `fred_exit`, so everything but the missing store is the nucleus' code.
global_asm!(
    ".pushsection .text.fred_harness_broken, \"ax\"",
    ".balign 64",
    ".global fred_harness_broken_ring0",
    "fred_harness_broken_ring0:",
    "sub rsp, {ret}",
    "mov [rsp + {rax}], rax",
    "mov [rsp + {rcx}], rcx",
    "mov [rsp + {rdx}], rdx",
    // deliberately missing: "mov [rsp + {rbx}], rbx",
    "mov [rsp + {rsi}], rsi",
    "mov [rsp + {rdi}], rdi",
    "mov [rsp + {rbp}], rbp",
    "mov [rsp + {r8}], r8",
    "mov [rsp + {r9}], r9",
    "mov [rsp + {r10}], r10",
    "mov [rsp + {r11}], r11",
    "mov [rsp + {r12}], r12",
    "mov [rsp + {r13}], r13",
    "mov [rsp + {r14}], r14",
    "mov [rsp + {r15}], r15",
    "mov qword ptr [rsp + {gprs_reserved}], 0",
    "mov rdi, rsp",
    "call {ring0}",
    "jmp fred_exit",
    ".popsection",
    ring0 = sym harness_ring0,
    ret = const frame::FRAME_RET,
    gprs_reserved = const frame::FRAME_GPRS_RESERVED,
    rax = const frame::FRAME_RAX,
    rcx = const frame::FRAME_RCX,
    rdx = const frame::FRAME_RDX,
    rsi = const frame::FRAME_RSI,
    rdi = const frame::FRAME_RDI,
    rbp = const frame::FRAME_RBP,
    r8 = const frame::FRAME_R8,
    r9 = const frame::FRAME_R9,
    r10 = const frame::FRAME_R10,
    r11 = const frame::FRAME_R11,
    r12 = const frame::FRAME_R12,
    r13 = const frame::FRAME_R13,
    r14 = const frame::FRAME_R14,
    r15 = const frame::FRAME_R15,
);

unsafe extern "C" {
    static fred_entry_ring3: u8;
    static fred_entry_ring0: u8;
    static fred_exit: u8;
    static fred_entry_page_end: u8;
    static idt_vector_stubs: u8;
    static idt_common: u8;
    static fred_harness_broken_ring0: u8;
    static syscall_entry: u8;
}

/// Addresses of the stub labels in this process.
#[derive(Clone, Copy, Debug)]
pub struct Symbols {
    pub fred_entry_ring3: u64,
    pub fred_entry_ring0: u64,
    pub fred_exit: u64,
    pub fred_entry_page_end: u64,
    pub idt_vector_stubs: u64,
    pub idt_common: u64,
    pub broken_ring0: u64,
    pub syscall_entry: u64,
}

/// The stub labels.
pub fn symbols() -> Symbols {
    // Labels defined by the global_asm above and by `entry_stubs!`: only their addresses
    // are taken (safe for extern statics), nothing is read through them.
    Symbols {
        fred_entry_ring3: (&raw const fred_entry_ring3) as u64,
        fred_entry_ring0: (&raw const fred_entry_ring0) as u64,
        fred_exit: (&raw const fred_exit) as u64,
        fred_entry_page_end: (&raw const fred_entry_page_end) as u64,
        idt_vector_stubs: (&raw const idt_vector_stubs) as u64,
        idt_common: (&raw const idt_common) as u64,
        broken_ring0: (&raw const fred_harness_broken_ring0) as u64,
        syscall_entry: (&raw const syscall_entry) as u64,
    }
}
