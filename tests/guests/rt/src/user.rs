//! Guest user mode for the test guests (issue 16): [`run_user`] enters user code through the
//! `iret` hypercall and returns once the user code is done, which it says by ending up in the
//! kernel in one of two ways: a trap whose handler calls [`back_to_kernel`] on its frame, or
//! a jump (a call gate's target) to `guest_rt_back_to_kernel`.
//!
//! One vCPU, one user-mode excursion at a time: the kernel RSP and the resume address are
//! kept in two statics.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use xen_abi::Hypercall;
use xen_abi::layout::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS};

use crate::traps::TrapFrame;

/// The kernel RSP [`run_user`] left on (its callee-saved registers are pushed there).
static KERNEL_RSP: AtomicU64 = AtomicU64::new(0);
/// Where [`run_user`] goes on from, on that RSP.
static BACK: AtomicU64 = AtomicU64::new(0);

/// RFLAGS in user mode: IF and the reserved bit 1.
const USER_RFLAGS: u64 = 0x202;

global_asm!(
    ".globl guest_rt_back_to_kernel",
    "guest_rt_back_to_kernel:",
    "    mov rsp, [rip + {krsp}]",
    "    jmp [rip + {back}]",
    krsp = sym KERNEL_RSP,
    back = sym BACK,
);

unsafe extern "C" {
    /// Ends user mode from kernel code that runs on no particular stack (a call gate's
    /// target): back to where [`run_user`] was called.
    static guest_rt_back_to_kernel: u8;
}

/// The address of `guest_rt_back_to_kernel`, for a call gate's target.
pub fn back_to_kernel_address() -> u64 {
    &raw const guest_rt_back_to_kernel as u64
}

/// Runs `entry` in guest user mode on the stack that ends at `user_rsp`, with events
/// enabled, and returns once the user code has come back (see the module's text).
///
/// # Safety
/// `entry` and the stack must be mapped user-accessible in the user page tables, the kernel
/// stack (`stack_switch`) and `NEW_USER_BASEPTR` must be set, and the user code must end by
/// coming back as the module describes.
pub unsafe fn run_user(user_rsp: u64, entry: u64) {
    // SAFETY: saves the callee-saved registers and the kernel RSP, enters user mode through
    // `iret` (flags 0); the way back lands on label 2 on that RSP, which pops them again.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "mov [rip + {krsp}], rsp",
            "lea rax, [rip + 2f]",
            "mov [rip + {back}], rax",
            "push {ss}",
            "push rdi",
            "push {rflags}",
            "push {cs}",
            "push rsi",
            "push 0",
            "jmp hypercall_page + {iret}",
            "2:",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbp",
            "pop rbx",
            krsp = sym KERNEL_RSP,
            back = sym BACK,
            ss = const FLAT_USER_SS,
            cs = const FLAT_USER_CS,
            rflags = const USER_RFLAGS,
            in("rdi") user_rsp,
            in("rsi") entry,
            iret = const Hypercall::Iret.stub_offset(),
            clobber_abi("C"),
        )
    }
}

/// Makes a trap's return go back to where [`run_user`] was called, in kernel mode.
pub fn back_to_kernel(frame: &mut TrapFrame) {
    frame.rip = BACK.load(Ordering::SeqCst);
    // The kernel's code selector as the guest kernel names it (RPL 0; Xen runs it at 3).
    frame.cs = u64::from(FLAT_KERNEL_CS & !3);
    frame.rsp = KERNEL_RSP.load(Ordering::SeqCst);
    frame.ss = u64::from(FLAT_KERNEL_SS);
    frame.rflags = USER_RFLAGS;
}
