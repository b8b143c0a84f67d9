//! Plays the CPU's part of event delivery: the return state on a test stack, then a jump.
//!
//! `harness_deliver` (asm) saves the host's callee-saved registers and RSP, switches to the
//! test stack at the address where the CPU would leave RSP, loads all 15 GPRs from
//! [`Trampoline::input`] and jumps to the entry. The return state names `harness_landing`
//! as RIP; when the stub's ERETx/IRETQ (emulated) goes there, the landing pad stores all
//! GPRs, RSP and RFLAGS into [`Trampoline`] with RIP-relative stores (no register is needed
//! as a base) and returns to the host stack. Everything goes through `sym`/`const` operands.
//!
//! Stack-level switching is not modelled: ring-3 deliveries use [`TestStack::kernel_top`]
//! in place of IA32_FRED_RSP0, ring-0 deliveries the interrupted RSP (no red zone: the
//! nucleus configures none).

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::mem::offset_of;

use bsp_x86_64::entry::IDT_STUB_SIZE;
use bsp_x86_64::frame::{CsQword, EventType, FredState, Gprs, SsQword, idt_pushes_error_code};
use bsp_x86_64::fred::StackLevel;
use bsp_x86_64::gdt;

use crate::machine::{ARITHMETIC_FLAGS, Log, Machine, Record};

/// RFLAGS.DF.
pub const DF: u64 = 1 << 10;
use crate::stubs::{self, Seen};
use crate::trap::Session;

/// Shared between Rust and the trampoline/landing asm.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Trampoline {
    /// GPRs loaded before the jump.
    pub input: Gprs,
    /// GPRs found at the landing pad.
    pub output: Gprs,
    /// Where to jump.
    pub entry: u64,
    /// RSP at the jump (what the CPU leaves in RSP after delivery).
    pub entry_rsp: u64,
    /// RFLAGS at the jump (what the CPU leaves in RFLAGS after delivery); only the bits a
    /// CPL-3 POPFQ may change and that are safe to set here: arithmetic flags and DF.
    pub entry_rflags: u64,
    /// RSP at the landing pad.
    pub landing_rsp: u64,
    /// RFLAGS at the landing pad.
    pub landing_rflags: u64,
    /// Host RSP while the delivery runs.
    host_rsp: u64,
}

struct TrampolineCell(UnsafeCell<Trampoline>);
// SAFETY: only used inside a harness session, which is serialised (`trap::Session`), and
// only by the session's thread.
unsafe impl Sync for TrampolineCell {}

static TRAMPOLINE: TrampolineCell = TrampolineCell(UnsafeCell::new(Trampoline {
    input: ZERO_GPRS,
    output: ZERO_GPRS,
    entry: 0,
    entry_rsp: 0,
    entry_rflags: 0,
    landing_rsp: 0,
    landing_rflags: 0,
    host_rsp: 0,
}));

const ZERO_GPRS: Gprs = Gprs::ZERO;

macro_rules! gpr_offsets {
    ($field:ident) => {
        const {
            [
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rax),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rcx),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rdx),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rbx),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rbp),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rsi),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, rdi),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r8),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r9),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r10),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r11),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r12),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r13),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r14),
                offset_of!(Trampoline, $field) + offset_of!(Gprs, r15),
            ]
        }
    };
}
const IN: [usize; 15] = gpr_offsets!(input);
const OUT: [usize; 15] = gpr_offsets!(output);

// In (harness_deliver): SysV call, no arguments; TRAMPOLINE filled in. Out: returns once
// the landing pad ran, with TRAMPOLINE.output/landing_* filled in.
global_asm!(
    ".pushsection .text.fred_harness_trampoline, \"ax\"",
    ".global harness_deliver",
    "harness_deliver:",
    "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
    "mov [rip + {t} + {host_rsp}], rsp",
    "push qword ptr [rip + {t} + {entry_rflags}]",
    "popfq",
    "mov rsp, [rip + {t} + {entry_rsp}]",
    "mov rax, [rip + {t} + {i0}]",
    "mov rcx, [rip + {t} + {i1}]",
    "mov rdx, [rip + {t} + {i2}]",
    "mov rbx, [rip + {t} + {i3}]",
    "mov rbp, [rip + {t} + {i4}]",
    "mov rsi, [rip + {t} + {i5}]",
    "mov rdi, [rip + {t} + {i6}]",
    "mov r8, [rip + {t} + {i7}]",
    "mov r9, [rip + {t} + {i8}]",
    "mov r10, [rip + {t} + {i9}]",
    "mov r11, [rip + {t} + {i10}]",
    "mov r12, [rip + {t} + {i11}]",
    "mov r13, [rip + {t} + {i12}]",
    "mov r14, [rip + {t} + {i13}]",
    "mov r15, [rip + {t} + {i14}]",
    "jmp qword ptr [rip + {t} + {entry}]",
    // In: whatever the ERETx/IRETQ restored. Out: back in harness_deliver's caller.
    ".global harness_landing",
    "harness_landing:",
    "mov [rip + {t} + {o0}], rax",
    "mov [rip + {t} + {o1}], rcx",
    "mov [rip + {t} + {o2}], rdx",
    "mov [rip + {t} + {o3}], rbx",
    "mov [rip + {t} + {o4}], rbp",
    "mov [rip + {t} + {o5}], rsi",
    "mov [rip + {t} + {o6}], rdi",
    "mov [rip + {t} + {o7}], r8",
    "mov [rip + {t} + {o8}], r9",
    "mov [rip + {t} + {o9}], r10",
    "mov [rip + {t} + {o10}], r11",
    "mov [rip + {t} + {o11}], r12",
    "mov [rip + {t} + {o12}], r13",
    "mov [rip + {t} + {o13}], r14",
    "mov [rip + {t} + {o14}], r15",
    "mov [rip + {t} + {landing_rsp}], rsp",
    "pushfq",
    "pop qword ptr [rip + {t} + {landing_rflags}]",
    "mov rsp, [rip + {t} + {host_rsp}]",
    "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
    "cld",
    "ret",
    ".popsection",
    t = sym TRAMPOLINE,
    host_rsp = const offset_of!(Trampoline, host_rsp),
    entry_rsp = const offset_of!(Trampoline, entry_rsp),
    entry_rflags = const offset_of!(Trampoline, entry_rflags),
    entry = const offset_of!(Trampoline, entry),
    landing_rsp = const offset_of!(Trampoline, landing_rsp),
    landing_rflags = const offset_of!(Trampoline, landing_rflags),
    i0 = const IN[0], i1 = const IN[1], i2 = const IN[2], i3 = const IN[3], i4 = const IN[4],
    i5 = const IN[5], i6 = const IN[6], i7 = const IN[7], i8 = const IN[8], i9 = const IN[9],
    i10 = const IN[10], i11 = const IN[11], i12 = const IN[12], i13 = const IN[13],
    i14 = const IN[14],
    o0 = const OUT[0], o1 = const OUT[1], o2 = const OUT[2], o3 = const OUT[3],
    o4 = const OUT[4], o5 = const OUT[5], o6 = const OUT[6], o7 = const OUT[7],
    o8 = const OUT[8], o9 = const OUT[9], o10 = const OUT[10], o11 = const OUT[11],
    o12 = const OUT[12], o13 = const OUT[13], o14 = const OUT[14],
);

unsafe extern "C" {
    /// Runs one delivery as described by `TRAMPOLINE`.
    ///
    /// # Safety
    /// Inside a session; `TRAMPOLINE.entry_rsp` on a mapped test stack holding a return
    /// state that leads to `harness_landing`.
    fn harness_deliver();
    static harness_landing: u8;
}

/// Address of the landing pad.
pub fn landing() -> u64 {
    (&raw const harness_landing) as u64
}

/// GPRs with distinct, recognisable values.
pub fn distinct_gprs(seed: u64) -> Gprs {
    let value =
        |index: u64| 0x5eed_0000_0000_0000 | (seed << 40) | (index << 32) | (index * 0x0101_0101);
    Gprs {
        rax: value(1),
        rcx: value(2),
        rdx: value(3),
        rbx: value(4),
        rbp: value(5),
        rsi: value(6),
        rdi: value(7),
        r8: value(8),
        r9: value(9),
        r10: value(10),
        r11: value(11),
        r12: value(12),
        r13: value(13),
        r14: value(14),
        r15: value(15),
        reserved: 0,
    }
}

/// The GPRs by name, for comparisons.
pub fn named(gprs: &Gprs) -> [(&'static str, u64); 15] {
    [
        ("rax", gprs.rax),
        ("rcx", gprs.rcx),
        ("rdx", gprs.rdx),
        ("rbx", gprs.rbx),
        ("rbp", gprs.rbp),
        ("rsi", gprs.rsi),
        ("rdi", gprs.rdi),
        ("r8", gprs.r8),
        ("r9", gprs.r9),
        ("r10", gprs.r10),
        ("r11", gprs.r11),
        ("r12", gprs.r12),
        ("r13", gprs.r13),
        ("r14", gprs.r14),
        ("r15", gprs.r15),
    ]
}

/// Fill pattern of the test stack before each delivery.
pub const POISON: u64 = 0x0bad_0bad_0bad_0bad;

const STACK_SIZE: usize = 512 * 1024;

/// An anonymous mapping the deliveries run on.
pub struct TestStack {
    base: *mut c_void,
}

impl TestStack {
    pub fn new() -> Self {
        // SAFETY: a fresh private anonymous mapping; the result is checked below.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap of the test stack failed");
        Self { base }
    }
    fn base(&self) -> u64 {
        self.base as u64
    }
    /// Stands in for IA32_FRED_RSP0 / TSS.RSP0: top of the "kernel" stack (64-byte aligned).
    pub fn kernel_top(&self) -> u64 {
        self.base() + 0x70000
    }
    /// Interrupted RSP of ring-0 events: on the kernel stack, not 16-byte aligned.
    pub fn ring0_rsp(&self) -> u64 {
        self.base() + 0x6ff38
    }
    /// Interrupted RSP of ring-3 events: the "user" stack.
    pub fn ring3_rsp(&self) -> u64 {
        self.base() + 0x7ff08
    }
    fn poison(&self) {
        let words = self.base.cast::<u64>();
        for index in (0x60000 / 8)..(STACK_SIZE / 8) {
            // SAFETY: inside the mapping.
            unsafe { words.add(index).write(POISON) };
        }
    }
    fn write(&self, address: u64, words: &[u64]) {
        assert!(
            address >= self.base()
                && address + 8 * words.len() as u64 <= self.base() + STACK_SIZE as u64
        );
        for (index, word) in words.iter().enumerate() {
            // SAFETY: inside the mapping (checked above), 8-byte aligned by construction.
            unsafe { (address as *mut u64).add(index).write(*word) };
        }
    }
}

impl Default for TestStack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer in use.
        unsafe { libc::munmap(self.base, STACK_SIZE) };
    }
}

/// One event as the CPU sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwEvent {
    pub name: &'static str,
    pub from_ring3: bool,
    pub event_type: EventType,
    pub vector: u8,
    pub error_code: u64,
    /// FRED event data: CR2 for `#PF`, DR6 in positive polarity for `#DB`, else 0.
    pub event_data: u64,
    /// Instruction length (INT3, SYSCALL), 0 otherwise.
    pub insn_len: u8,
    /// RFLAGS of the interrupted context.
    pub rflags: u64,
}

impl HwEvent {
    /// Interrupted CS and SS.
    pub fn selectors(&self) -> (gdt::Selector, gdt::Selector) {
        if self.from_ring3 {
            (gdt::USER_CS64, gdt::USER_DS)
        } else {
            (gdt::KERNEL_CS, gdt::KERNEL_DS)
        }
    }

    /// The 64-byte return state FRED delivery writes (fred-facts.md §3.3–§3.5). CSL is 0
    /// (no stack levels modelled), so the CS qword's SL is 0.
    pub fn fred_state(&self, rip: u64, rsp: u64) -> FredState {
        let (cs, ss) = self.selectors();
        let ss = SsQword::new(ss, self.event_type, self.vector)
            .with_64bit(true)
            .with_insn_len(self.insn_len)
            .expect("instruction length ≤ 15");
        FredState {
            error_code: self.error_code,
            rip,
            cs: CsQword::new(cs, StackLevel::SL0, false),
            rflags: self.rflags,
            rsp,
            ss,
            event_data: self.event_data,
            reserved: 0,
        }
    }
}

/// How the event enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `fred_entry_ring3` or `fred_entry_ring0` by the event's ring.
    Fred,
    /// The test-only broken ring-0 stub.
    BrokenFredRing0,
    /// `idt_vector_stubs + 16 * vector`.
    Idt,
    /// `syscall_entry`, the IA32_LSTAR target of IDT delivery: SYSCALL itself changes only
    /// RIP, RCX, R11 and RFLAGS (FMASK); the stub finds its stack through GS.
    IdtSyscall,
}

/// Everything one delivery produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub via: Via,
    pub input: Gprs,
    /// Where the CPU's frame was (FRED: &error code; IDT: RSP at the vector stub).
    pub entry_rsp: u64,
    /// The RIP/RSP the return state names.
    pub return_rip: u64,
    pub return_rsp: u64,
    /// What the handler saw.
    pub seen: Option<Seen>,
    /// How many times a syscall fast path ran.
    pub fast_calls: u64,
    /// Registers at the landing pad.
    pub landed: Gprs,
    pub landing_rsp: u64,
    pub landing_rflags: u64,
    /// Instructions emulated during this delivery.
    pub records: Vec<Record>,
}

/// Delivers `event` through `via` with `input` in the GPRs and returns what happened.
/// `handler_rax` makes the handler write RAX in the frame.
pub fn deliver(
    session: &Session,
    stack: &TestStack,
    via: Via,
    event: &HwEvent,
    input: Gprs,
    handler_rax: Option<u64>,
) -> Outcome {
    let symbols = stubs::symbols();
    let rip = landing();
    session.set_abort_target(rip);
    let return_rsp = if event.from_ring3 {
        stack.ring3_rsp()
    } else {
        stack.ring0_rsp()
    };
    stack.poison();
    stubs::reset(handler_rax);
    let (entry, entry_rsp) = match via {
        Via::Fred | Via::BrokenFredRing0 => {
            // Ring 3: a stack switch to RSP0; ring 0: the current stack, 64-byte aligned,
            // no red zone (fred-facts.md §3.2).
            let top = if event.from_ring3 {
                stack.kernel_top()
            } else {
                return_rsp & !63
            };
            let frame = top - 64;
            let state = event.fred_state(rip, return_rsp);
            stack.write(
                frame,
                &[
                    state.error_code,
                    state.rip,
                    state.cs.raw(),
                    state.rflags,
                    state.rsp,
                    state.ss.raw(),
                    state.event_data,
                    state.reserved,
                ],
            );
            if event.from_ring3 {
                // Delivery from ring 3 swaps GS.base with IA32_KERNEL_GS_BASE (§3.8).
                Machine::swap_gs();
            }
            let entry = match (via, event.from_ring3) {
                (Via::BrokenFredRing0, _) => symbols.broken_ring0,
                (_, true) => symbols.fred_entry_ring3,
                (_, false) => symbols.fred_entry_ring0,
            };
            (entry, frame)
        }
        Via::Idt => {
            // 64-bit IDT delivery: RSP aligned to 16, then SS, RSP, RFLAGS, CS, RIP and,
            // for some vectors, the error code (SDM vol. 3 §6.14.2).
            let top = if event.from_ring3 {
                stack.kernel_top()
            } else {
                return_rsp & !15
            };
            let (cs, ss) = event.selectors();
            stack.write(
                top - 40,
                &[
                    rip,
                    cs.raw() as u64,
                    event.rflags,
                    return_rsp,
                    ss.raw() as u64,
                ],
            );
            let mut frame = top - 40;
            if idt_pushes_error_code(event.vector) {
                frame -= 8;
                stack.write(frame, &[event.error_code]);
            }
            // What the CPU's CR2/DR6 hold when the IDT stub reads them.
            match event.vector {
                14 => Machine::set_cr2(event.event_data),
                1 => Machine::set_dr6(event.event_data ^ bsp_x86_64::entry::DR6_POLARITY_FLIP),
                _ => {}
            }
            (
                symbols.idt_vector_stubs + IDT_STUB_SIZE as u64 * event.vector as u64,
                frame,
            )
        }
        // Nothing is written: the stub builds the whole frame at cpu_info.kernel_rsp.
        Via::IdtSyscall => (symbols.syscall_entry, return_rsp),
    };
    let mut input = input;
    if via == Via::IdtSyscall {
        // SYSCALL: RCX = next RIP, R11 = RFLAGS; RSP stays the user's.
        input.rcx = rip;
        input.r11 = event.rflags;
    }
    // FRED delivery sets RFLAGS to 0x2 (fred-facts.md §3.8). An IDT interrupt/trap gate
    // clears only TF, NT, RF, VM (and IF for interrupt gates): DF and the arithmetic flags
    // of the interrupted context are still live when the stub runs.
    let entry_rflags = match via {
        Via::Fred | Via::BrokenFredRing0 => 0x2,
        Via::Idt => 0x2 | (event.rflags & (ARITHMETIC_FLAGS | DF)),
        // SYSCALL clears the FMASK bits (DF among them) and keeps the rest.
        Via::IdtSyscall => {
            use bsp_x86_64::msr::Msr;
            0x2 | (event.rflags & ARITHMETIC_FLAGS & !bsp_x86_64::msr::Fmask::nucleus().raw())
        }
    };
    let first = Log::len();
    {
        // SAFETY: the session serialises access to TRAMPOLINE; no asm runs right now.
        let trampoline = unsafe { &mut *TRAMPOLINE.0.get() };
        *trampoline = Trampoline {
            input,
            entry,
            entry_rsp,
            entry_rflags,
            ..Trampoline::default()
        };
    }
    // SAFETY: inside `session`; entry_rsp points at the CPU-written state on the mapped test
    // stack, whose return RIP is the landing pad, so control comes back here. The stubs and
    // handlers only use the test stack below entry_rsp; the emulated privileged
    // instructions run in the signal handler on its alternate stack.
    unsafe { harness_deliver() };
    // SAFETY: as above; the delivery is over.
    let trampoline = unsafe { *TRAMPOLINE.0.get() };
    Outcome {
        via,
        input,
        entry_rsp,
        return_rip: rip,
        return_rsp,
        seen: stubs::seen(),
        fast_calls: stubs::fast_calls(),
        landed: trampoline.output,
        landing_rsp: trampoline.landing_rsp,
        landing_rflags: trampoline.landing_rflags,
        records: Log::since(first),
    }
}

/// Everything that differs between what went in and what the handler and the landing pad
/// saw, one line each; empty for a correct stub.
pub fn preservation_mismatches(outcome: &Outcome, handler_rax: Option<u64>) -> Vec<String> {
    let mut mismatches = Vec::new();
    let Some(seen) = outcome.seen else {
        return vec!["handler did not run".to_string()];
    };
    let input = named(&outcome.input);
    for ((name, expected), (_, got)) in input.iter().zip(named(&seen.frame.gprs)) {
        if got != *expected {
            mismatches.push(format!("frame.{name}: {got:#x}, interrupted {expected:#x}"));
        }
    }
    for ((name, expected), (_, got)) in input.iter().zip(named(&outcome.landed)) {
        let expected = match (*name, handler_rax) {
            ("rax", Some(rax)) => rax,
            _ => *expected,
        };
        if got != expected {
            mismatches.push(format!("landing {name}: {got:#x}, expected {expected:#x}"));
        }
    }
    if outcome.landing_rsp != outcome.return_rsp {
        mismatches.push(format!(
            "landing rsp: {:#x}, expected {:#x}",
            outcome.landing_rsp, outcome.return_rsp
        ));
    }
    mismatches
}
