//! The SIGSEGV/SIGILL handler that emulates privileged instructions, and harness sessions.
//!
//! At CPL 3, RDMSR/WRMSR, MOV CR/DR, MOV SS with a ring-0 selector, SWAPGS and IRETQ to
//! ring 0 raise `#GP` (SIGSEGV); ERETS/ERETU/LKGS raise `#UD` (SIGILL). The handler runs on
//! its own `sigaltstack`, so the test stack the stubs run on is never touched. It emulates
//! only the instruction kinds of [`Insn`], only on the thread that owns the current
//! [`Session`], and only in their register forms; anything else resets the signal to its
//! default action and returns, so the instruction faults again and the process dies as it
//! would without the harness. The handler allocates nothing and takes no lock.

use core::ffi::c_void;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};

use crate::machine::{
    ARITHMETIC_FLAGS, Eret, Fault, Insn, Log, Machine, Popped, RING0_CS, addr, eret_check,
    wrmsr_check,
};

/// Thread id (gettid) of the session owner; 0 when no session is active.
static OWNER: AtomicI64 = AtomicI64::new(0);
/// Where forbidden control transfers (SYSRET, SYSEXIT) are sent: the delivery landing pad,
/// which returns to the test. 0 = none set.
static ABORT_TARGET: AtomicU64 = AtomicU64::new(0);
static SESSIONS: Mutex<()> = Mutex::new(());

const ALTSTACK_SIZE: usize = 256 * 1024;

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and no side effects; it is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// One harness run on the current thread: installs the handler and an alternate signal
/// stack, resets the machine and the log; undone on drop. Sessions are serialised through a
/// global mutex because signal dispositions are process-wide.
pub struct Session {
    _serial: MutexGuard<'static, ()>,
    old_segv: libc::sigaction,
    old_ill: libc::sigaction,
    old_altstack: libc::stack_t,
    altstack: *mut c_void,
}

impl Session {
    /// Starts a session (blocks while another thread has one).
    pub fn begin() -> Self {
        let serial = SESSIONS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Machine::reset();
        Log::clear();
        ABORT_TARGET.store(0, Ordering::Relaxed);

        // SAFETY: a fresh private anonymous mapping; the result is checked below.
        let altstack = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                ALTSTACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            altstack,
            libc::MAP_FAILED,
            "mmap of the signal stack failed"
        );
        let stack = libc::stack_t {
            ss_sp: altstack,
            ss_flags: 0,
            ss_size: ALTSTACK_SIZE,
        };
        // SAFETY: an all-zero stack_t is a valid out-parameter.
        let mut old_altstack: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: `stack` describes the mapping above, which outlives the session (unmapped in
        // drop after the old stack is restored).
        let rc = unsafe { libc::sigaltstack(&stack, &mut old_altstack) };
        assert_eq!(rc, 0, "sigaltstack failed");

        OWNER.store(gettid(), Ordering::SeqCst);
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction = on_trap as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a valid sigset_t inside `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: as above, out-parameters.
        let mut old_segv: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        let mut old_ill: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: `on_trap` has the SA_SIGINFO signature and is async-signal-safe.
        let rc = unsafe { libc::sigaction(libc::SIGSEGV, &action, &mut old_segv) };
        assert_eq!(rc, 0, "sigaction(SIGSEGV) failed");
        // SAFETY: as above.
        let rc = unsafe { libc::sigaction(libc::SIGILL, &action, &mut old_ill) };
        assert_eq!(rc, 0, "sigaction(SIGILL) failed");
        Self {
            _serial: serial,
            old_segv,
            old_ill,
            old_altstack,
            altstack,
        }
    }

    /// Sets where a forbidden SYSRET/SYSEXIT sends control (the landing pad).
    pub fn set_abort_target(&self, target: u64) {
        ABORT_TARGET.store(target, Ordering::Relaxed);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions saved in `begin`.
        unsafe { libc::sigaction(libc::SIGSEGV, &self.old_segv, core::ptr::null_mut()) };
        // SAFETY: as above.
        unsafe { libc::sigaction(libc::SIGILL, &self.old_ill, core::ptr::null_mut()) };
        OWNER.store(0, Ordering::SeqCst);
        let mut disable = self.old_altstack;
        if disable.ss_sp.is_null() {
            disable.ss_flags = libc::SS_DISABLE;
        }
        // SAFETY: restores the previous alternate stack (or disables ours), so ours is no
        // longer referenced before it is unmapped.
        unsafe { libc::sigaltstack(&disable, core::ptr::null_mut()) };
        // SAFETY: the mapping made in `begin`, no longer in use.
        unsafe { libc::munmap(self.altstack, ALTSTACK_SIZE) };
    }
}

/// What the emulation decided.
enum Outcome {
    /// Continue after the instruction.
    Next,
    /// Continue at the given context (ERETx, IRETQ, redirect).
    Jump { rip: u64, rsp: u64, rflags: u64 },
    /// Not ours: let the fault happen.
    Refuse,
}

/// Logs a return instruction (ERETS, ERETU, IRETQ) with the frame it popped, and continues
/// at the popped context.
fn return_to(insn: Insn, rip: u64, frame: u64, popped: &Popped, fault: Option<Fault>) -> Outcome {
    Log::push(
        insn,
        rip,
        [
            frame,
            popped.rip,
            popped.cs,
            popped.rflags,
            popped.rsp,
            popped.ss,
        ],
        fault,
    );
    Outcome::Jump {
        rip: popped.rip,
        rsp: popped.rsp,
        rflags: popped.rflags,
    }
}

/// The interrupted context's registers.
struct Context<'a> {
    gregs: &'a mut [libc::greg_t; 23],
}

impl Context<'_> {
    fn index(register: Register) -> Option<usize> {
        use Register::*;
        // (64-, 32-, 16-bit name, gregs slot): operands of the emulated forms come in all three.
        const TABLE: [(Register, Register, Register, libc::c_int); 16] = [
            (RAX, EAX, AX, libc::REG_RAX),
            (RCX, ECX, CX, libc::REG_RCX),
            (RDX, EDX, DX, libc::REG_RDX),
            (RBX, EBX, BX, libc::REG_RBX),
            (RSP, ESP, SP, libc::REG_RSP),
            (RBP, EBP, BP, libc::REG_RBP),
            (RSI, ESI, SI, libc::REG_RSI),
            (RDI, EDI, DI, libc::REG_RDI),
            (R8, R8D, R8W, libc::REG_R8),
            (R9, R9D, R9W, libc::REG_R9),
            (R10, R10D, R10W, libc::REG_R10),
            (R11, R11D, R11W, libc::REG_R11),
            (R12, R12D, R12W, libc::REG_R12),
            (R13, R13D, R13W, libc::REG_R13),
            (R14, R14D, R14W, libc::REG_R14),
            (R15, R15D, R15W, libc::REG_R15),
        ];
        TABLE
            .iter()
            .find(|(r64, r32, r16, _)| [*r64, *r32, *r16].contains(&register))
            .map(|&(_, _, _, slot)| slot as usize)
    }
    fn get(&self, register: Register) -> Option<u64> {
        Self::index(register).map(|index| self.gregs[index] as u64)
    }
    fn set(&mut self, register: Register, value: u64) -> Option<()> {
        let index = Self::index(register)?;
        self.gregs[index] = value as i64;
        Some(())
    }
    fn reg(&self, index: libc::c_int) -> u64 {
        self.gregs[index as usize] as u64
    }
    fn set_reg(&mut self, index: libc::c_int, value: u64) {
        self.gregs[index as usize] = value as i64;
    }
}

/// Reads the five qwords at `address` (ERETx: `address` = &RIP).
///
/// # Safety
/// `address` must point at 40 readable bytes.
unsafe fn pop_state(address: u64) -> Popped {
    let words = address as *const u64;
    // SAFETY: the caller guarantees 40 readable bytes; unaligned reads are allowed.
    let word = |i: usize| unsafe { words.add(i).read_unaligned() };
    Popped {
        rip: word(0),
        cs: word(1),
        rflags: word(2),
        rsp: word(3),
        ss: word(4),
    }
}

fn register_operand(insn: &Instruction, operand: u32) -> Option<Register> {
    (insn.op_kind(operand) == OpKind::Register).then(|| insn.op_register(operand))
}

fn emulate(insn: &Instruction, context: &mut Context<'_>) -> Outcome {
    let rip = insn.ip();
    let fred_on = Machine::fred_on();
    match insn.code() {
        Code::Wrmsr => {
            let msr = context.reg(libc::REG_RCX) as u32;
            let value =
                (context.reg(libc::REG_RDX) << 32) | (context.reg(libc::REG_RAX) & 0xffff_ffff);
            let fault = wrmsr_check(msr, value).err();
            if fault.is_none() {
                Machine::store_msr(msr, value);
            }
            Log::push(Insn::Wrmsr, rip, [msr as u64, value, 0, 0, 0, 0], fault);
            Outcome::Next
        }
        Code::Rdmsr => {
            let msr = context.reg(libc::REG_RCX) as u32;
            let (value, fault) = match Machine::msr(msr) {
                Some(value) => (value, None),
                None => (0, Some(Fault::UnknownMsr)),
            };
            context.set_reg(libc::REG_RAX, value & 0xffff_ffff);
            context.set_reg(libc::REG_RDX, value >> 32);
            Log::push(Insn::Rdmsr, rip, [msr as u64, value, 0, 0, 0, 0], fault);
            Outcome::Next
        }
        Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_r64m16
            if insn.op0_register() == Register::SS =>
        {
            let Some(selector) = register_operand(insn, 1).and_then(|source| context.get(source))
            else {
                return Outcome::Refuse;
            };
            let selector = selector & 0xffff;
            Machine::set_ss(selector);
            Log::push(Insn::MovSs, rip, [selector, 0, 0, 0, 0, 0], None);
            Outcome::Next
        }
        Code::Mov_r64_cr => {
            let (kind, value) = match insn.op1_register() {
                Register::CR4 => (Insn::ReadCr4, Machine::cr4()),
                Register::CR2 => (Insn::ReadCr2, Machine::cr2()),
                _ => return Outcome::Refuse,
            };
            if context.set(insn.op0_register(), value).is_none() {
                return Outcome::Refuse;
            }
            Log::push(kind, rip, [value, 0, 0, 0, 0, 0], None);
            Outcome::Next
        }
        Code::Mov_cr_r64 if insn.op0_register() == Register::CR4 => {
            let Some(value) = context.get(insn.op1_register()) else {
                return Outcome::Refuse;
            };
            let old = Machine::cr4();
            let fault =
                ((value ^ old) & !crate::machine::CR4_FRED != 0).then_some(Fault::Cr4OtherBits);
            if fault.is_none() {
                Machine::set_cr4(value);
            }
            Log::push(Insn::WriteCr4, rip, [value, old, 0, 0, 0, 0], fault);
            Outcome::Next
        }
        Code::Mov_r64_dr if insn.op1_register() == Register::DR6 => {
            let value = Machine::dr6();
            if context.set(insn.op0_register(), value).is_none() {
                return Outcome::Refuse;
            }
            Log::push(Insn::ReadDr6, rip, [value, 0, 0, 0, 0, 0], None);
            Outcome::Next
        }
        Code::Lkgs_rm16 | Code::Lkgs_r32m16 | Code::Lkgs_r64m16 => {
            let Some(selector) = register_operand(insn, 0).and_then(|source| context.get(source))
            else {
                return Outcome::Refuse;
            };
            let selector = selector & 0xffff;
            // No descriptor table is modelled: every selector is a flat segment (base 0),
            // whose base LKGS puts into IA32_KERNEL_GS_BASE.
            Machine::set_gs_selector(selector);
            Machine::store_msr(addr::KERNEL_GS_BASE, 0);
            Log::push(Insn::Lkgs, rip, [selector, 0, 0, 0, 0, 0], None);
            Outcome::Next
        }
        Code::Erets | Code::Eretu => {
            let which = if insn.code() == Code::Erets {
                Eret::Erets
            } else {
                Eret::Eretu
            };
            let frame = context.reg(libc::REG_RSP);
            // SAFETY: RSP points at the stub's frame on the test stack (error code, then the
            // five qwords ERETx pops); the delivery mapped it.
            let popped = unsafe { pop_state(frame + 8) };
            let fault = eret_check(
                which,
                fred_on,
                &popped,
                RING0_CS,
                Machine::ss(),
                Machine::csl(),
            )
            .err();
            let kind = match which {
                Eret::Erets => Insn::Erets,
                Eret::Eretu => {
                    // ERETU swaps GS.base with IA32_KERNEL_GS_BASE (fred-facts.md §4.3).
                    if fault.is_none() {
                        Machine::swap_gs();
                    }
                    Insn::Eretu
                }
            };
            return_to(kind, rip, frame, &popped, fault)
        }
        Code::Iretq => {
            let frame = context.reg(libc::REG_RSP);
            // SAFETY: RSP points at the IDT stub's copy of RIP..SS on the test stack.
            let popped = unsafe { pop_state(frame) };
            let fault = fred_on.then_some(Fault::ForbiddenUnderFred);
            return_to(Insn::Iretq, rip, frame, &popped, fault)
        }
        Code::Swapgs => {
            let fault = fred_on.then_some(Fault::ForbiddenUnderFred);
            if fault.is_none() {
                Machine::swap_gs();
            }
            let gs = Machine::msr(addr::GS_BASE).unwrap_or(0);
            let kernel = Machine::msr(addr::KERNEL_GS_BASE).unwrap_or(0);
            Log::push(Insn::Swapgs, rip, [gs, kernel, 0, 0, 0, 0], fault);
            Outcome::Next
        }
        Code::Sysretd | Code::Sysretq | Code::Sysexitd | Code::Sysexitq => {
            let kind = if matches!(insn.code(), Code::Sysretd | Code::Sysretq) {
                Insn::Sysret
            } else {
                Insn::Sysexit
            };
            let fault = fred_on.then_some(Fault::ForbiddenUnderFred);
            Log::push(kind, rip, [0; 6], fault);
            // Nothing sensible follows a return the harness cannot model: end the delivery.
            match ABORT_TARGET.load(Ordering::Relaxed) {
                0 => Outcome::Refuse,
                target => Outcome::Jump {
                    rip: target,
                    rsp: context.reg(libc::REG_RSP),
                    rflags: 0x2,
                },
            }
        }
        // `mov gs:[disp32], reg` / `mov reg, gs:[disp32]`: the IDT `syscall_entry` reaches
        // `cpu_info` through GS. The process' real GS base is 0, so the access faults; it is
        // redone at the *emulated* GS base, inside the window the test registered.
        Code::Mov_rm64_r64 | Code::Mov_r64_rm64
            if insn.memory_segment() == Register::GS
                && insn.memory_base() == Register::None
                && insn.memory_index() == Register::None =>
        {
            let base = Machine::msr(addr::GS_BASE).unwrap_or(0);
            let address = base.wrapping_add(insn.memory_displacement64());
            if !Machine::in_gs_window(address) {
                return Outcome::Refuse;
            }
            if insn.code() == Code::Mov_rm64_r64 {
                let Some(value) = register_operand(insn, 1).and_then(|r| context.get(r)) else {
                    return Outcome::Refuse;
                };
                // SAFETY: `address` lies in the test's own cpu_info block (checked above),
                // which stays allocated for the whole delivery.
                unsafe { (address as *mut u64).write_unaligned(value) };
                Log::push(Insn::GsStore, rip, [address, value, 0, 0, 0, 0], None);
            } else {
                // SAFETY: as above.
                let value = unsafe { (address as *const u64).read_unaligned() };
                if context.set(insn.op0_register(), value).is_none() {
                    return Outcome::Refuse;
                }
                Log::push(Insn::GsLoad, rip, [address, value, 0, 0, 0, 0], None);
            }
            Outcome::Next
        }
        _ => Outcome::Refuse,
    }
}

/// Resets `signal` to its default action; returning then re-executes the faulting
/// instruction, which kills the process as it would without the harness.
fn refuse(signal: libc::c_int) {
    // SAFETY: an all-zero sigaction with SIG_DFL (0) is the default disposition.
    let mut default: libc::sigaction = unsafe { core::mem::zeroed() };
    default.sa_sigaction = libc::SIG_DFL;
    // SAFETY: sigaction is async-signal-safe; `default` is a valid disposition.
    unsafe { libc::sigaction(signal, &default, core::ptr::null_mut()) };
}

extern "C" fn on_trap(signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    if OWNER.load(Ordering::SeqCst) != gettid() {
        refuse(signal);
        return;
    }
    // SAFETY: with SA_SIGINFO the third argument is the interrupted thread's ucontext_t,
    // valid and exclusively ours for the duration of the handler.
    let ucontext = unsafe { &mut *context.cast::<libc::ucontext_t>() };
    let mut context = Context {
        gregs: &mut ucontext.uc_mcontext.gregs,
    };
    let rip = context.reg(libc::REG_RIP);
    // SAFETY: RIP is the faulting instruction inside the harness' own (mapped, executable)
    // text; 15 bytes is the longest x86 instruction, and the stubs are followed by more
    // text in the same segment.
    let bytes: [u8; 15] = unsafe { (rip as *const [u8; 15]).read_unaligned() };
    let mut decoder = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        refuse(signal);
        return;
    }
    match emulate(&insn, &mut context) {
        Outcome::Next => context.set_reg(libc::REG_RIP, insn.next_ip()),
        Outcome::Jump { rip, rsp, rflags } => {
            context.set_reg(libc::REG_RIP, rip);
            context.set_reg(libc::REG_RSP, rsp);
            let host = context.reg(libc::REG_EFL);
            context.set_reg(
                libc::REG_EFL,
                (host & !ARITHMETIC_FLAGS) | (rflags & ARITHMETIC_FLAGS),
            );
        }
        Outcome::Refuse => refuse(signal),
    }
}
