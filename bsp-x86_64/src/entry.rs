//! The entry and exit stubs of both deliveries: all of fredvisor's event asm.
//!
//! Every handler is an `extern "C" fn(*mut Frame) -> *mut Frame`: it gets the frame the stub
//! saved and returns the frame to leave through (the same one, or the next thread's after a
//! switch), so a context switch moves a pointer and never copies a frame.
//!
//! Where a frame is saved: an event from **ring 3** goes straight into the register save area
//! of the thread that runs (`cpu_info.save_area`, a `Frame` that belongs to the thread); an
//! event from **ring 0** gets its frame on the stack it arrived on, as before. The stubs never
//! point RSP into a save area while an event could still arrive on it: they save and restore
//! through a base register, and the FRED exit runs ERETU from a copy of the return state on
//! its own stack (Bochs' FRED model takes interrupts with RFLAGS.IF = 0, issue 14; the IDT
//! exit's IRETQ from the area is safe: NMI, `#DB`, `#MC` and `#DF` use IST stacks and
//! interrupts are masked).
//!
//! [`entry_stubs!`](crate::entry_stubs) emits, in one `global_asm!`:
//!
//! * `idt_vector_stubs`: 256 stubs of 16 bytes each (`idt_vector_stubs + 16 * vector` is the
//!   gate target). Each pushes a zero error code where the CPU pushes none, then the vector
//!   and the FRED event type it stands for, and jumps to `idt_common`.
//! * `idt_common`: copies the CPU's 5-qword IDT frame into the FRED layout (type/vector in the
//!   SS qword, CR2 or DR6 as event data) with the GPRs, in the save area (ring 3, after
//!   SWAPGS) or 64-byte aligned below the CPU's frame (ring 0), and calls the dispatcher.
//! * `idt_exit`: restores the frame the handler returned in RAX and IRETQs from it, SWAPGS
//!   when it returns to ring 3.
//! * `syscall_entry` (IDT delivery only, the `IA32_LSTAR` target): SYSCALL does not switch
//!   stacks, so it SWAPGSes, takes the stack from `cpu_info` and saves what a Rust call
//!   clobbers (with RIP, RFLAGS, RSP) in the save area. The syscall fast path (issue 17)
//!   either completes the call, and the stub returns with SYSRETQ restoring only those
//!   registers, or declines it: then the stub completes the frame FRED would have written
//!   for a SYSCALL (type 7, vector 1, instruction length 2) and joins `idt_exit` through the
//!   dispatcher.
//! * `syscall_compat_entry` (IDT delivery only, the `IA32_CSTAR` target): a SYSCALL from
//!   compatibility mode. fredvisor has no 32-bit user segment, so this is only a backstop:
//!   it builds the frame of the `#UD` Intel CPUs raise there, so the dispatcher forwards it
//!   as the server's fault.
//! * `fred_entry_ring3` (4 KiB aligned, the `IA32_FRED_CONFIG` entry point) and
//!   `fred_entry_ring0` at +256: the CPU has already written the 64-byte return state on the
//!   stack; the ring-3 entry saves the GPRs and pops that state into the save area (a
//!   64-bit SYSCALL first goes to the syscall fast path with only what a Rust call clobbers
//!   saved; one it completes returns with ERETU from the CPU's own return state, one it
//!   declines gets the rest of its frame and goes to `syscall_fred`, the syscall table's way
//!   in, as under IDT), the ring-0 entry saves the GPRs below it. `fred_exit` returns with
//!   ERETU when the frame's CS has RPL 3 (from a copy of RIP..SS it pushes) and with ERETS
//!   otherwise. No SWAPGS/SYSRET/IRET on this path.
//!
//! The macro takes the Rust handlers as paths, so the nucleus and the host trap-and-emulate
//! harness assemble the *same* stub text around their own handlers. Every frame offset the asm
//! uses is a `const` operand from [`crate::frame`] and [`crate::cpu_info`]; GPRs are stored
//! with `mov` to named offsets rather than pushed, so the save order cannot drift from the
//! struct.
//!
//! Register contract at each label is written above it.

/// Offsets inside the CPU's IDT frame as `idt_common` finds it after its own `push rax` and
/// `push rdi`, above the vector stub's two pushes (SDM vol. 3 §6.14.1, 64-bit mode).
pub mod idt_hw {
    pub const SAVED_RDI: usize = 0;
    pub const SAVED_RAX: usize = 8;
    pub const VECTOR_INFO: usize = 16;
    pub const ERROR_CODE: usize = 24;
    pub const RIP: usize = 32;
    pub const CS: usize = 40;
    pub const RFLAGS: usize = 48;
    pub const RSP: usize = 56;
    pub const SS: usize = 64;
}

/// Size of one IDT vector stub: gate `v` points at `idt_vector_stubs + v * IDT_STUB_SIZE`.
pub const IDT_STUB_SIZE: usize = 16;

/// DR6 bits that read as 1 when clear; FRED reports DR6 with them flipped ("positive
/// polarity", fred-facts.md §3.7), so the IDT stub XORs them to match.
pub const DR6_POLARITY_FLIP: u64 = 0xffff_0ff0;

/// The SS qword FRED writes for a 64-bit SYSCALL from ring 3 (fred-facts.md §3.5): user DS,
/// SWEVENT, vector 1, type 7 (other), 64-bit mode, instruction length 2. The IDT `syscall`
/// stub writes the same, so both deliveries decode to the same event.
pub const SYSCALL_SS_QWORD: u64 =
    crate::gdt::USER_DS.raw() as u64 | (1 << 17) | (1 << 32) | (7 << 48) | (1 << 57) | (2 << 60);

/// The SS qword `syscall_compat_entry` writes: user DS, vector 6 (`#UD`), type 3 (hardware
/// exception), not 64-bit mode. A compat-mode SYSCALL is the caller's fault, as on Intel CPUs.
pub const COMPAT_SYSCALL_SS_QWORD: u64 = crate::gdt::USER_DS.raw() as u64 | (6 << 32) | (3 << 48);

/// The upper half of the SS qword FRED writes for a plain 64-bit SYSCALL from ring 3: vector
/// 1 (bits 7:0), type 7 (19:16), 64-bit mode (25), instruction length 2 (31:28), every other
/// bit 0 (reserved, not in an enclave, not nested). The FRED ring-3 entry compares the whole
/// dword with this to offer the event to the syscall fast path and the syscall table's way
/// in: one compare. A SYSCALL that differs in anything but its selector half (one with
/// prefixes is longer) goes to the general path, which finds it a syscall too.
pub const SYSCALL_SIGNATURE: u32 = (SYSCALL_SS_QWORD >> 32) as u32;
const _: () = assert!(SYSCALL_SIGNATURE == 1 | (7 << 16) | (1 << 25) | (2 << 28));

/// What a syscall fast path (`syscall_idt_fast`/`syscall_fred_fast` of
/// [`entry_stubs!`](crate::entry_stubs)) returns to its stub in RAX:RDX (SysV returns a
/// two-qword `repr(C)` struct in those registers): the save area it was given, and whether
/// it completed the call (the stub returns to the caller with the area's RAX) or declined
/// it, untouched (the stub saves the rest of the frame and calls the syscall table's way
/// in: `syscall_idt`, or under FRED `syscall_fred`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastSyscall {
    pub area: *mut crate::frame::Frame,
    /// 0: declined; else completed.
    pub completed: u64,
}

impl FastSyscall {
    pub fn new(area: *mut crate::frame::Frame, completed: bool) -> Self {
        Self {
            area,
            completed: u64::from(completed),
        }
    }
}

/// Lowest non-canonical address above the user half (48-bit linear addresses).
const USER_END: u64 = 1 << 47;

/// Whether SYSRETQ may return to `rip` (the IDT syscall fast path's check): only a
/// canonical user-half address. SYSRETQ to a non-canonical RCX raises `#GP` on Intel CPUs
/// *in ring 0*, after RSP is the caller's: the caller would own the nucleus' stack. A
/// SYSCALL as the last instruction below the hole hands in exactly such a RIP.
pub const fn sysret_safe(rip: u64) -> bool {
    rip < USER_END
}

/// Emits the IDT and FRED entry stubs around the given handlers: `idt`, `fred_ring3`,
/// `fred_ring0`, `syscall_idt` and `syscall_fred` are each an
/// `extern "C" fn(*mut Frame) -> *mut Frame` (the frame saved, the frame to leave through;
/// `syscall_idt` and `syscall_fred` get the 64-bit SYSCALLs the IDT and the FRED fast path
/// declined, `fred_ring3` every other ring-3 event under FRED). `syscall_idt_fast` and
/// `syscall_fred_fast` are the syscall fast paths, each an
/// `extern "C" fn(*mut Frame) -> FastSyscall` given a save area that holds only RAX, RDX,
/// RSI, RDI and R8-R10, and which may change only RAX. Under IDT the area also holds RIP,
/// RFLAGS and RSP (SYSCALL's RCX and R11 are in the RIP and RFLAGS slots only); under FRED,
/// RCX and R11, the return state being on the stack only:
/// `entry_stubs!(idt: path::to::idt_handler, fred_ring3: ..., fred_ring0: ...,
/// syscall_idt_fast: ..., syscall_idt: ..., syscall_fred_fast: ..., syscall_fred: ...)`.
#[macro_export]
macro_rules! entry_stubs {
    (
        idt: $idt:path,
        fred_ring3: $ring3:path,
        fred_ring0: $ring0:path,
        syscall_idt_fast: $syscall_idt_fast:path,
        syscall_idt: $syscall_idt:path,
        syscall_fred_fast: $syscall_fred_fast:path,
        syscall_fred: $syscall_fred:path $(,)?
    ) => {
        ::core::arch::global_asm!(
            // Stores the registers a syscall's arguments arrive in but RAX and RDI (RDX,
            // RSI, R8-R10) into the frame at `base`: with RAX, RCX, RDI and R11 these are
            // what a Rust call clobbers. Uses no other register.
            ".macro FREDVISOR_SAVE_ARGS base",
            "mov [\\base + {rdx}], rdx",
            "mov [\\base + {rsi}], rsi",
            "mov [\\base + {r8}], r8",
            "mov [\\base + {r9}], r9",
            "mov [\\base + {r10}], r10",
            ".endm",
            // Stores the registers a Rust call preserves (RBX, RBP, R12-R15) and the spare
            // slot into the frame at `base`.
            ".macro FREDVISOR_SAVE_CALLEE base",
            "mov [\\base + {rbx}], rbx",
            "mov [\\base + {rbp}], rbp",
            "mov [\\base + {r12}], r12",
            "mov [\\base + {r13}], r13",
            "mov [\\base + {r14}], r14",
            "mov [\\base + {r15}], r15",
            "mov qword ptr [\\base + {gprs_reserved}], 0",
            ".endm",
            // Stores every GPR but RAX, RCX and RDI into the frame at `base`. Uses no other
            // register.
            ".macro FREDVISOR_SAVE_GPRS base",
            "FREDVISOR_SAVE_ARGS \\base",
            "mov [\\base + {r11}], r11",
            "FREDVISOR_SAVE_CALLEE \\base",
            ".endm",
            // Loads what FREDVISOR_SAVE_ARGS stored and RDI from the frame at `base` (the
            // syscall fast paths' return: the callee-saved registers never left the CPU).
            ".macro FREDVISOR_RESTORE_ARGS base",
            "mov rdx, [\\base + {rdx}]",
            "mov rsi, [\\base + {rsi}]",
            "mov rdi, [\\base + {rdi}]",
            "mov r8, [\\base + {r8}]",
            "mov r9, [\\base + {r9}]",
            "mov r10, [\\base + {r10}]",
            ".endm",
            // The FRED ring-3 entry's second half: RDI = the save area, RSP = &return state.
            // The callee-saved registers, then the return state popped into the area field
            // by field (the frame's order: error code, RIP, CS, RFLAGS, RSP, SS, event data)
            // and RSP put back 16 bytes below it, where `fred_exit` wants it. The CPU's copy
            // stays where it is (the `fred-ring3` self-test compares the two), and while RSP
            // walks up through it an event could only land below it: a delivery at CSL 0
            // writes below (RSP & ~63).
            ".macro FREDVISOR_RING3_REST",
            "FREDVISOR_SAVE_CALLEE rdi",
            "pop qword ptr [rdi + {error_code}]",
            "pop qword ptr [rdi + {rip}]",
            "pop qword ptr [rdi + {cs}]",
            "pop qword ptr [rdi + {rflags}]",
            "pop qword ptr [rdi + {rsp}]",
            "pop qword ptr [rdi + {ss}]",
            "pop qword ptr [rdi + {event_data}]",
            "sub rsp, {event_data} + 8 - {ret} + 16",
            "mov qword ptr [rdi + {reserved}], 0",
            ".endm",
            // Loads every GPR but RAX from the frame at `base` (`base` itself last but one:
            // the caller loads RAX, or RAX is the base and goes last).
            ".macro FREDVISOR_RESTORE_GPRS_BUT_RAX base",
            "mov rcx, [\\base + {rcx}]",
            "mov rdx, [\\base + {rdx}]",
            "mov rbx, [\\base + {rbx}]",
            "mov rsi, [\\base + {rsi}]",
            "mov rdi, [\\base + {rdi}]",
            "mov rbp, [\\base + {rbp}]",
            "mov r8, [\\base + {r8}]",
            "mov r9, [\\base + {r9}]",
            "mov r10, [\\base + {r10}]",
            "mov r11, [\\base + {r11}]",
            "mov r12, [\\base + {r12}]",
            "mov r13, [\\base + {r13}]",
            "mov r14, [\\base + {r14}]",
            "mov r15, [\\base + {r15}]",
            ".endm",

            // ---- FRED: one 4 KiB page, ring-3 entry at +0, ring-0 entry at +256 ----------
            ".pushsection .text.fred, \"ax\"",
            ".balign 4096",
            ".global fred_entry_ring3",
            // In: RSP = &return state (64-byte aligned, on the stack FRED chose), GS =
            // nucleus (hardware swapped it), RFLAGS = 2. The registers a Rust call clobbers
            // go into the save area first. A 64-bit SYSCALL is offered to the syscall fast
            // path, which completes it or declines it untouched; a completed one returns
            // with ERETU from the CPU's own return state (the callee-saved registers never
            // left the CPU, `fred_syscall_done`), a declined one goes to `syscall_fred`.
            // Anything else goes on in `fred_ring3_full`.
            "fred_entry_ring3:",
            // The user RDI goes through the stack into its slot (`pop` computes the
            // address with the RDI it just loaded).
            "push rdi",
            "mov rdi, gs:[{ci_save_area}]",
            "pop qword ptr [rdi + {rdi}]",
            "mov [rdi + {rax}], rax",
            "mov [rdi + {rcx}], rcx",
            "FREDVISOR_SAVE_ARGS rdi",
            "mov [rdi + {r11}], r11",
            // The SS qword's upper half: vector, type, 64-bit mode and length.
            "cmp dword ptr [rsp + {ss} - {ret} + 4], {syscall_sig}",
            "jne fred_ring3_full",
            // In: RDI = the save area. Out: RAX = the save area, RDX = 0: declined.
            "call {syscall_fred_fast}",
            "test rdx, rdx",
            "jnz fred_syscall_done",
            // Declined: the rest of the frame, and straight to the syscall table's way in
            // (no event decode, no general dispatcher), as the IDT's `syscall_entry` does.
            "mov rdi, rax",
            "FREDVISOR_RING3_REST",
            "call {syscall_fred}",
            "jmp fred_exit",
            ".org fred_entry_ring3 + 256, 0xcc",
            ".global fred_entry_ring0",
            // In: as above, on the current stack level (or a higher one). The frame is built
            // on that stack.
            "fred_entry_ring0:",
            "sub rsp, {ret}",
            "mov [rsp + {rax}], rax",
            "mov [rsp + {rcx}], rcx",
            "mov [rsp + {rdi}], rdi",
            "FREDVISOR_SAVE_GPRS rsp",
            "mov rdi, rsp",
            "sub rsp, 16",
            "call {ring0}",
            ".global fred_exit",
            // In: RAX = &Frame to leave through, RSP 16 bytes below a 64-byte boundary (every
            // stub calls its handler so; `nucleus_enter_frame` too). Ring 0: the frame is on
            // this stack (its own event's, or the idle frame at the top of the idle stack),
            // ERETS from it. Ring 3: ERETU from a copy of RIP..SS on this stack, never from
            // the save area itself.
            "fred_exit:",
            "test byte ptr [rax + {cs}], 3",
            "jnz 2f",
            "mov rsp, rax",
            "FREDVISOR_RESTORE_GPRS_BUT_RAX rsp",
            "mov rax, [rsp + {rax}]",
            "lea rsp, [rsp + {ret}]",
            "erets",
            // The copy is pushed below RSP (free stack: whatever called the handler, or
            // `nucleus_enter_frame`'s caller, is never returned to), SS first, then one more
            // qword for the error code slot ERETU skips, so it lies 64-byte aligned, as the
            // CPU writes a return state. An event between the pushes lands below them.
            "2:",
            "push qword ptr [rax + {ss}]",
            "push qword ptr [rax + {rsp}]",
            "push qword ptr [rax + {rflags}]",
            "push qword ptr [rax + {cs}]",
            "push qword ptr [rax + {rip}]",
            "push rax",
            "FREDVISOR_RESTORE_GPRS_BUT_RAX rax",
            "mov rax, [rax + {rax}]",
            "eretu",
            // The syscall fast path completed the call: ERETU from the CPU's own return
            // state (RSP still points at it); the callee-saved registers never left the CPU.
            "fred_syscall_done:",
            "mov rcx, [rax + {rcx}]",
            "mov r11, [rax + {r11}]",
            "FREDVISOR_RESTORE_ARGS rax",
            "mov rax, [rax + {rax}]",
            "eretu",
            // In: RDI = the save area holding RAX, RCX, RDX, RSI, RDI, R8-R11; RSP = &return
            // state. The callee-saved registers and a copy of the return state join them;
            // RSP stays on the stack. Out: fred_exit. Every ring-3 event but a 64-bit SYSCALL.
            "fred_ring3_full:",
            "FREDVISOR_RING3_REST",
            "call {ring3}",
            "jmp fred_exit",
            ".global fred_entry_page_end",
            "fred_entry_page_end:",
            ".popsection",

            // ---- IDT: 256 vector stubs, then the common part -----------------------------
            ".pushsection .text.idt, \"ax\"",
            ".balign 16",
            ".global idt_vector_stubs",
            "idt_vector_stubs:",
            ".set fredvisor_vec, 0",
            ".rept 256",
            "fredvisor_stub_start = .",
            // Vectors with a CPU-pushed error code: 8, 10-14, 17, 21, 29, 30.
            ".if (fredvisor_vec == 8) || ((fredvisor_vec >= 10) && (fredvisor_vec <= 14)) || (fredvisor_vec == 17) || (fredvisor_vec == 21) || (fredvisor_vec == 29) || (fredvisor_vec == 30)",
            ".else",
            "push 0",
            ".endif",
            // Vector | FRED event type << 16 (frame::idt_event_type, cross-checked by a test).
            ".if fredvisor_vec == 2",
            "push (fredvisor_vec | (2 << 16))",
            ".elseif (fredvisor_vec == 3) || (fredvisor_vec == 4)",
            "push (fredvisor_vec | (6 << 16))",
            ".elseif fredvisor_vec < 32",
            "push (fredvisor_vec | (3 << 16))",
            ".else",
            "push fredvisor_vec",
            ".endif",
            "jmp idt_common",
            // Pads to exactly IDT_STUB_SIZE; the assembler refuses if a stub grew larger.
            ".org fredvisor_stub_start + {stub_size}, 0xcc",
            ".set fredvisor_vec, fredvisor_vec + 1",
            ".endr",

            // In: [rsp] = vector | type << 16, [rsp+8] = error code, then the CPU's frame.
            // RAX = the CPU's frame (idt_hw offsets), RDI = where the Frame goes.
            ".global idt_common",
            "idt_common:",
            "push rax",
            "push rdi",
            "mov rax, rsp",
            "test byte ptr [rax + {hw_cs}], 3",
            "jz 1f",
            "swapgs",
            "mov rdi, gs:[{ci_save_area}]",
            "and rsp, -16",
            "jmp 2f",
            "1:",
            "lea rdi, [rsp - {frame_size}]",
            "and rdi, -64",
            "mov rsp, rdi",
            "2:",
            "mov [rdi + {rcx}], rcx",
            "mov rcx, [rax + {hw_saved_rax}]",
            "mov [rdi + {rax}], rcx",
            "mov rcx, [rax + {hw_saved_rdi}]",
            "mov [rdi + {rdi}], rcx",
            "FREDVISOR_SAVE_GPRS rdi",
            "mov rcx, [rax + {hw_error}]",
            "mov [rdi + {error_code}], rcx",
            "mov rcx, [rax + {hw_rip}]",
            "mov [rdi + {rip}], rcx",
            "movzx ecx, word ptr [rax + {hw_cs}]",
            "mov [rdi + {cs}], rcx",
            "mov rcx, [rax + {hw_rflags}]",
            "mov [rdi + {rflags}], rcx",
            "mov rcx, [rax + {hw_rsp}]",
            "mov [rdi + {rsp}], rcx",
            // SS qword: selector | vector << 32 | type << 48 | 64-bit mode (bit 57): every
            // context fredvisor runs is 64-bit code.
            "mov edx, [rax + {hw_vector_info}]",
            "shl rdx, 32",
            "bts rdx, 57",
            "movzx ecx, word ptr [rax + {hw_ss}]",
            "or rcx, rdx",
            "mov [rdi + {ss}], rcx",
            // Event data as FRED would write it: CR2 for #PF, DR6 (positive polarity) for #DB.
            "xor ecx, ecx",
            "movzx edx, byte ptr [rax + {hw_vector_info}]",
            "cmp edx, 14",
            "jne 3f",
            "mov rcx, cr2",
            "jmp 4f",
            "3:",
            "cmp edx, 1",
            "jne 4f",
            "mov rcx, dr6",
            "mov edx, {dr6_flip}",
            "xor rcx, rdx",
            "4:",
            "mov [rdi + {event_data}], rcx",
            "mov qword ptr [rdi + {reserved}], 0",
            // RFLAGS as FRED delivers it (2). An IDT gate leaves the interrupted DF live
            // (Rust requires DF = 0 at a call; found by the fred-harness) and AC too, which
            // a server sets with `popf` to switch SMAP off for the nucleus (issue 13).
            "push 2",
            "popfq",
            "call {idt}",
            ".global idt_exit",
            // In: RAX = &Frame to leave through. IRETQ from the frame's RIP..SS (a save area
            // or this stack); the CPU's original frame is abandoned (IRETQ loads RSP).
            "idt_exit:",
            "mov rsp, rax",
            "FREDVISOR_RESTORE_GPRS_BUT_RAX rsp",
            "mov rax, [rsp + {rax}]",
            "test byte ptr [rsp + {cs}], 3",
            "jz 5f",
            "swapgs",
            "5:",
            "lea rsp, [rsp + {rip}]",
            "iretq",

            // In: RCX = user RIP, R11 = user RFLAGS, RSP = user RSP, GS = user (IDT only).
            // What a Rust call clobbers goes into the save area (`cpu_info.scratch` holds the
            // user RDI meanwhile), RIP, RFLAGS and RSP with it, and the syscall fast path
            // completes the call or declines it untouched. A completed one returns with
            // SYSRETQ (the fast path checked that SYSRETQ restores exactly this context:
            // `sysret_safe`); the callee-saved registers never left the CPU. A declined one
            // gets the rest of the frame FRED would have written for a SYSCALL (type 7,
            // vector 1, instruction length 2) and joins `idt_exit` through the dispatcher.
            ".global syscall_entry",
            "syscall_entry:",
            "swapgs",
            "mov gs:[{ci_scratch}], rdi",
            "mov rdi, gs:[{ci_save_area}]",
            "mov [rdi + {rsp}], rsp",
            "mov rsp, gs:[{ci_kernel_rsp}]",
            "mov [rdi + {rax}], rax",
            "mov [rdi + {rip}], rcx",
            "mov [rdi + {rflags}], r11",
            "FREDVISOR_SAVE_ARGS rdi",
            "mov rcx, gs:[{ci_scratch}]",
            "mov [rdi + {rdi}], rcx",
            // In: RDI = the save area. Out: RAX = the save area, RDX = 0: declined.
            "call {syscall_idt_fast}",
            "test rdx, rdx",
            "jz 1f",
            "mov rcx, [rax + {rip}]",
            "mov r11, [rax + {rflags}]",
            "FREDVISOR_RESTORE_ARGS rax",
            "mov rsp, [rax + {rsp}]",
            "mov rax, [rax + {rax}]",
            "swapgs",
            "sysretq",
            "1:",
            "mov rdi, rax",
            "mov rcx, [rdi + {rip}]",
            "mov [rdi + {rcx}], rcx",
            "mov rcx, [rdi + {rflags}]",
            "mov [rdi + {r11}], rcx",
            "FREDVISOR_SAVE_CALLEE rdi",
            "mov qword ptr [rdi + {cs}], {user_cs}",
            "mov rcx, {syscall_ss}",
            "mov [rdi + {ss}], rcx",
            "xor ecx, ecx",
            "mov [rdi + {error_code}], rcx",
            "mov [rdi + {event_data}], rcx",
            "mov [rdi + {reserved}], rcx",
            "call {syscall_idt}",
            "jmp idt_exit",

            // In: RCX = user RIP after the SYSCALL, R11 = user RFLAGS, RSP = user RSP,
            // GS = user, FMASK applied (IDT only). Out: idt_exit with a #UD frame.
            ".global syscall_compat_entry",
            "syscall_compat_entry:",
            "swapgs",
            "mov gs:[{ci_scratch}], rdi",
            "mov rdi, gs:[{ci_save_area}]",
            "mov [rdi + {rsp}], rsp",
            "mov rsp, gs:[{ci_kernel_rsp}]",
            "mov [rdi + {rax}], rax",
            "mov [rdi + {rcx}], rcx",
            "FREDVISOR_SAVE_GPRS rdi",
            // The fault is at the SYSCALL itself (two bytes).
            "sub rcx, 2",
            "mov [rdi + {rip}], rcx",
            "mov [rdi + {rflags}], r11",
            "mov rcx, gs:[{ci_scratch}]",
            "mov [rdi + {rdi}], rcx",
            "mov qword ptr [rdi + {cs}], {user_cs32}",
            "mov rcx, {compat_syscall_ss}",
            "mov [rdi + {ss}], rcx",
            "xor ecx, ecx",
            "mov [rdi + {error_code}], rcx",
            "mov [rdi + {event_data}], rcx",
            "mov [rdi + {reserved}], rcx",
            "call {idt}",
            "jmp idt_exit",
            ".popsection",

            ci_scratch = const $crate::cpu_info::CPU_INFO_SCRATCH_RSP,
            ci_kernel_rsp = const $crate::cpu_info::CPU_INFO_KERNEL_RSP,
            ci_save_area = const $crate::cpu_info::CPU_INFO_SAVE_AREA,
            user_cs = const $crate::gdt::USER_CS64.raw() as u64,
            user_cs32 = const $crate::gdt::USER_CS32.raw() as u64,
            compat_syscall_ss = const $crate::entry::COMPAT_SYSCALL_SS_QWORD,
            syscall_ss = const $crate::entry::SYSCALL_SS_QWORD,
            ring3 = sym $ring3,
            ring0 = sym $ring0,
            idt = sym $idt,
            syscall_idt_fast = sym $syscall_idt_fast,
            syscall_idt = sym $syscall_idt,
            syscall_fred_fast = sym $syscall_fred_fast,
            syscall_fred = sym $syscall_fred,
            syscall_sig = const $crate::entry::SYSCALL_SIGNATURE,
            stub_size = const $crate::entry::IDT_STUB_SIZE,
            dr6_flip = const $crate::entry::DR6_POLARITY_FLIP,
            frame_size = const $crate::frame::FRAME_SIZE,
            ret = const $crate::frame::FRAME_RET,
            error_code = const $crate::frame::FRAME_ERROR_CODE,
            rip = const $crate::frame::FRAME_RIP,
            cs = const $crate::frame::FRAME_CS,
            rflags = const $crate::frame::FRAME_RFLAGS,
            rsp = const $crate::frame::FRAME_RSP,
            ss = const $crate::frame::FRAME_SS,
            event_data = const $crate::frame::FRAME_EVENT_DATA,
            reserved = const $crate::frame::FRAME_RESERVED,
            gprs_reserved = const $crate::frame::FRAME_GPRS_RESERVED,
            rax = const $crate::frame::FRAME_RAX,
            rcx = const $crate::frame::FRAME_RCX,
            rdx = const $crate::frame::FRAME_RDX,
            rbx = const $crate::frame::FRAME_RBX,
            rsi = const $crate::frame::FRAME_RSI,
            rdi = const $crate::frame::FRAME_RDI,
            rbp = const $crate::frame::FRAME_RBP,
            r8 = const $crate::frame::FRAME_R8,
            r9 = const $crate::frame::FRAME_R9,
            r10 = const $crate::frame::FRAME_R10,
            r11 = const $crate::frame::FRAME_R11,
            r12 = const $crate::frame::FRAME_R12,
            r13 = const $crate::frame::FRAME_R13,
            r14 = const $crate::frame::FRAME_R14,
            r15 = const $crate::frame::FRAME_R15,
            hw_saved_rax = const $crate::entry::idt_hw::SAVED_RAX,
            hw_saved_rdi = const $crate::entry::idt_hw::SAVED_RDI,
            hw_vector_info = const $crate::entry::idt_hw::VECTOR_INFO,
            hw_error = const $crate::entry::idt_hw::ERROR_CODE,
            hw_rip = const $crate::entry::idt_hw::RIP,
            hw_cs = const $crate::entry::idt_hw::CS,
            hw_rflags = const $crate::entry::idt_hw::RFLAGS,
            hw_rsp = const $crate::entry::idt_hw::RSP,
            hw_ss = const $crate::entry::idt_hw::SS,
        );
    };
}

// The FRED return state must sit 64-byte aligned directly above the GPRs, and the frame must
// keep RSP 16-byte aligned at the `call` (fred-facts.md §3.2, §8.4).
const _: () = assert!(crate::frame::FRAME_RET.is_multiple_of(64));
const _: () = assert!(crate::frame::FRAME_SIZE == crate::frame::FRAME_RET + 64);
const _: () = assert!(crate::frame::FRAME_SIZE.is_multiple_of(64));

#[cfg(test)]
mod tests;
