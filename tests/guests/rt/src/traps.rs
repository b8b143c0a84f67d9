//! Trap handling for the test guests (issue 16): entry stubs for a fixed set of vectors and
//! the syscall callback, each turning Xen's bounce frame (rcx, r11, [error code], rip, cs,
//! rflags, rsp, ss) into one [`TrapFrame`] for the guest's handler, which may change the
//! return state; the way back is always the `iret` hypercall (flags 0).
//!
//! Also the set-up hypercalls (`set_trap_table`, `callback_op`, `stack_switch`,
//! `mmuext_op(NEW_USER_BASEPTR)`) and [`iret_to`], which enters a context through `iret`.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicUsize, Ordering};

use xen_abi::Hypercall;
use xen_abi::traps::TrapInfo;

use crate::hypercall;

/// Vectors with a stub, in the order of `guest_rt_trap_entries`.
pub const VECTORS: [u8; 14] = [0, 1, 3, 4, 6, 7, 11, 12, 13, 14, 0x20, 0x21, 0x80, 0x81];
/// The `vector` a syscall-callback entry reports.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// The `error_code` of a vector that pushes none.
pub const NO_ERROR_CODE: u64 = u64::MAX;

macro_rules! stubs {
    ($($vector:literal $kind:ident),*) => {
        global_asm!(
            $(
                concat!(".globl guest_rt_trap_", stringify!($vector)),
                concat!("guest_rt_trap_", stringify!($vector), ":"),
                "    pop rcx",
                "    pop r11",
                stubs!(@$kind),
                concat!("    push ", stringify!($vector)),
                "    jmp guest_rt_trap_common",
            )*
            ".pushsection .rodata.guest_rt_traps, \"a\"",
            ".balign 8",
            ".globl guest_rt_trap_entries",
            "guest_rt_trap_entries:",
            $(concat!("    .quad guest_rt_trap_", stringify!($vector)),)*
            ".popsection",
        );
    };
    (@plain) => { "    push -1" };
    (@error) => { "" };
}

stubs!(0 plain, 1 plain, 3 plain, 4 plain, 6 plain, 7 plain, 11 error, 12 error, 13 error, 14 error,
       0x20 plain, 0x21 plain, 0x80 plain, 0x81 plain, 0x100 plain);

global_asm!(
    ".globl guest_rt_trap_common",
    "guest_rt_trap_common:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push rbx",
    "    mov rbx, rsp",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call guest_rt_trap_dispatch",
    "    mov rsp, rbx",
    "    pop rbx",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    // Vector and error code off: an IRETQ frame is left; flags 0 and the iret stub.
    "    add rsp, 16",
    "    push 0",
    "    jmp hypercall_page + {iret}",
    iret = const Hypercall::Iret.stub_offset(),
);

unsafe extern "C" {
    static guest_rt_trap_entries: [u64; VECTORS.len() + 1];
}

/// What a handler sees and may change: the registers the stub saved, the vector, the
/// error code ([`NO_ERROR_CODE`] if none) and the return state of the bounce frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    /// The saved CS: selector in bits 0-15, the saved event mask in bits 32-39.
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Every trap goes to `handler`.
pub fn set_handler(handler: fn(&mut TrapFrame)) {
    HANDLER.store(handler as usize, Ordering::SeqCst);
}

#[unsafe(no_mangle)]
extern "C" fn guest_rt_trap_dispatch(frame: &mut TrapFrame) {
    let raw = HANDLER.load(Ordering::SeqCst);
    if raw == 0 {
        crate::shutdown(xen_abi::sched::ShutdownReason::Crash);
    }
    // SAFETY: the only value ever stored is a `fn(&mut TrapFrame)` (`set_handler`).
    let handler: fn(&mut TrapFrame) = unsafe { core::mem::transmute(raw) };
    handler(frame);
}

/// The entry stub of `vector` (one of [`VECTORS`]).
pub fn entry(vector: u8) -> u64 {
    let at = VECTORS.iter().position(|&v| v == vector).unwrap_or(0);
    // SAFETY: a table of addresses the asm above emits, read-only.
    unsafe { guest_rt_trap_entries[at] }
}

/// The syscall callback's entry.
pub fn syscall_entry() -> u64 {
    // SAFETY: as in `entry`; the last slot is the syscall stub.
    unsafe { guest_rt_trap_entries[VECTORS.len()] }
}

/// `set_trap_table` with `(vector, flags)` for vectors with stubs; returns `rax`.
pub fn set_trap_table(entries: &[(u8, u8)]) -> u64 {
    let mut table = [[0u8; TrapInfo::SIZE]; VECTORS.len() + 1];
    for (slot, &(vector, flags)) in table.iter_mut().zip(entries) {
        *slot = TrapInfo {
            vector,
            flags,
            cs: xen_abi::layout::selector::FLAT_KERNEL_CS,
            _pad: 0,
            address: entry(vector),
        }
        .to_bytes();
    }
    raw_trap_table(table.as_ptr() as u64)
}

/// `set_trap_table(ptr)` as given (NULL clears the table).
pub fn raw_trap_table(ptr: u64) -> u64 {
    // SAFETY: the hypervisor only reads at `ptr`; bad pointers are refused.
    unsafe { hypercall(Hypercall::SetTrapTable, [ptr, 0, 0, 0, 0]) }
}

/// `callback_op(register, {kind, flags, address})`; returns `rax`.
pub fn register_callback(kind: u16, flags: u16, address: u64) -> u64 {
    let mut block = [0u8; 16];
    block[0..2].copy_from_slice(&kind.to_le_bytes());
    block[2..4].copy_from_slice(&flags.to_le_bytes());
    block[8..16].copy_from_slice(&address.to_le_bytes());
    // SAFETY: `block` is ours for the call.
    unsafe { hypercall(Hypercall::CallbackOp, [0, block.as_ptr() as u64, 0, 0, 0]) }
}

/// `stack_switch(FLAT_KERNEL_SS, rsp)`.
pub fn stack_switch(rsp: u64) -> u64 {
    let ss = u64::from(xen_abi::layout::selector::FLAT_KERNEL_SS);
    // SAFETY: no pointers.
    unsafe { hypercall(Hypercall::StackSwitch, [ss, rsp, 0, 0, 0]) }
}

/// `mmuext_op(NEW_USER_BASEPTR, mfn)`.
pub fn new_user_baseptr(mfn: u64) -> u64 {
    let op = xen_abi::mm::MmuextOp {
        cmd: xen_abi::mm::MmuextCmd::NewUserBaseptr.raw(),
        _pad: 0,
        arg1: mfn,
        arg2: 0,
    };
    crate::tables::mmuext_op(&[op])
}

/// An `iret` frame: where [`iret_to`] goes.
#[derive(Clone, Copy, Debug)]
pub struct IretTarget {
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub flags: u64,
}

/// Enters `to` through the `iret` hypercall, with `rax`, `rcx`, `r11` as given.
///
/// # Safety
/// `to` must be a context the guest can run in (its stack and code mapped).
pub unsafe fn iret_to(to: &IretTarget, rax: u64, rcx: u64, r11: u64) -> ! {
    // SAFETY: the caller vouches for the context; the frame is built on our own stack.
    unsafe {
        asm!(
            "push {ss}",
            "push {rsp}",
            "push {rflags}",
            "push {cs}",
            "push {rip}",
            "push {flags}",
            "jmp hypercall_page + {iret}",
            ss = in(reg) to.ss,
            rsp = in(reg) to.rsp,
            rflags = in(reg) to.rflags,
            cs = in(reg) to.cs,
            rip = in(reg) to.rip,
            flags = in(reg) to.flags,
            iret = const Hypercall::Iret.stub_offset(),
            in("rax") rax,
            in("rcx") rcx,
            in("r11") r11,
            options(noreturn),
        )
    }
}
