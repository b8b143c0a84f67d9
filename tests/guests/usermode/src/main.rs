//! guest-usermode (issue 16 points 3, 4 and 8): sets up user mode as a minimal PV kernel
//! does (a trap table, the syscall callback, `stack_switch`, `NEW_USER_BASEPTR` with its own
//! L4), enters user mode with `iret`, runs code there, and comes back to the kernel by
//! `int 0x80` (DPL 3), by `syscall`, by a refused `int 0x81` (DPL 1: `#GP`) and by a fault
//! (`ud2`), each time on the `stack_switch` stack; the first three return to user mode
//! through `iret`, the fault returns to the kernel. One line per entry, the same under IDT
//! and FRED.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::{asm, global_asm};
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::tables::p2m;
    use guest_rt::traps::{self, SYSCALL_VECTOR, TrapFrame};
    use guest_rt::{Boot, guest_main, println, shutdown, xen_guest_notes};
    use xen_abi::sched::ShutdownReason;
    use xen_abi::traps::CALLBACKF_MASK_EVENTS;

    xen_guest_notes!("fredvisor-usermode");

    const KSTACK_BYTES: u64 = 16384;
    const USTACK_BYTES: u64 = 8192;

    // The user code and the two stacks.
    global_asm!(
        ".pushsection .text.usermode, \"ax\", @progbits",
        ".globl usermode_user_entry",
        "usermode_user_entry:",
        "    mov eax, 6",
        "    imul eax, eax, 7",
        "    mov [rip + {result}], rax",
        "    int 0x80",
        ".globl usermode_after_int",
        "usermode_after_int:",
        "    syscall",
        ".globl usermode_after_syscall",
        "usermode_after_syscall:",
        ".globl usermode_at_int81",
        "usermode_at_int81:",
        "    int 0x81",
        ".globl usermode_at_ud2",
        "usermode_at_ud2:",
        "    ud2",
        ".popsection",
        ".pushsection .bss.usermode_stacks, \"aw\", @nobits",
        ".balign 16",
        ".globl usermode_kstack",
        "usermode_kstack:",
        "    .skip {kstack}",
        ".globl usermode_ustack",
        "usermode_ustack:",
        "    .skip {ustack}",
        ".popsection",
        result = sym USER_RESULT,
        kstack = const KSTACK_BYTES,
        ustack = const USTACK_BYTES,
    );

    unsafe extern "C" {
        static usermode_user_entry: u8;
        static usermode_after_int: u8;
        static usermode_after_syscall: u8;
        static usermode_at_int81: u8;
        static usermode_at_ud2: u8;
        static usermode_kstack: u8;
        static usermode_ustack: u8;
    }

    fn addr(symbol: &u8) -> u64 {
        symbol as *const u8 as u64
    }

    static USER_RESULT: AtomicU64 = AtomicU64::new(0);

    /// One entry into the kernel, as the handler saw it.
    #[derive(Clone, Copy)]
    struct Entry {
        vector: u64,
        error: u64,
        rip: u64,
        rcx: u64,
        cs: u64,
        frame: u64,
        rsp: u64,
    }

    static mut ENTRIES: [Option<Entry>; 4] = [None; 4];
    static COUNT: AtomicU64 = AtomicU64::new(0);

    fn kstack() -> (u64, u64) {
        // SAFETY: only the symbol's address is taken.
        let base = addr(unsafe { &usermode_kstack });
        (base, base + KSTACK_BYTES)
    }

    fn handler(frame: &mut TrapFrame) {
        let n = COUNT.fetch_add(1, Ordering::SeqCst) as usize;
        let entry = Entry {
            vector: frame.vector,
            error: frame.error_code,
            rip: frame.rip,
            rcx: frame.rcx,
            cs: frame.cs & 0xffff,
            frame: frame as *mut TrapFrame as u64,
            rsp: frame.rsp,
        };
        if n < 4 {
            // SAFETY: one vCPU, handlers do not nest here; written before main reads it.
            unsafe { (*(&raw mut ENTRIES))[n] = Some(entry) };
        }
        match frame.vector {
            // Past the refused `int 0x81`, back in user mode.
            13 => frame.rip += 2,
            // The fault ends user mode: back to the kernel where it left.
            6 => {
                guest_rt::user::back_to_kernel(frame);
            }
            // int 0x80 and syscall: a trap, RIP is already past the instruction.
            _ => {}
        }
    }

    fn yes(b: bool) -> &'static str {
        if b { "yes" } else { "NO" }
    }

    fn expect(what: &str, got: u64, want: u64) {
        if got != want {
            println!("usermode: WRONG {what}: got {got:#x}, want {want:#x}");
            shutdown(ShutdownReason::Crash);
        }
    }

    fn main(boot: Boot) -> ! {
        let info = boot.start_info;
        traps::set_handler(handler);
        expect(
            "set_trap_table",
            traps::set_trap_table(&[(6, 0), (13, 0), (14, 0), (0x80, 3), (0x81, 1)]),
            0,
        );
        expect(
            "register syscall",
            traps::register_callback(2, CALLBACKF_MASK_EVENTS, traps::syscall_entry()),
            0,
        );
        let (kbase, ktop) = kstack();
        expect("stack_switch", traps::stack_switch(ktop), 0);
        let l4 = p2m(info)[(info.pt_base >> 12) as usize];
        expect("NEW_USER_BASEPTR", traps::new_user_baseptr(l4), 0);
        // SAFETY: only the symbol's address is taken.
        let utop = addr(unsafe { &usermode_ustack }) + USTACK_BYTES;
        // SAFETY: as above.
        let entry = addr(unsafe { &usermode_user_entry });
        println!("usermode: entering user mode");
        // SAFETY: the user stack and code are mapped for user mode, the kernel stack and the
        // user tables are set above, and the user code ends by coming back to the kernel.
        unsafe { guest_rt::user::run_user(utop, entry) };
        println!(
            "usermode: user code computed {}",
            USER_RESULT.load(Ordering::SeqCst)
        );
        // SAFETY: the handler is done (we are back in the kernel); one vCPU.
        let entries = unsafe { *(&raw const ENTRIES) };
        let on_kstack = |e: &Entry| e.frame >= kbase && e.frame < ktop;
        let user_rsp = |e: &Entry| e.rsp > utop - USTACK_BYTES && e.rsp <= utop;
        // SAFETY: only the symbols' addresses are taken.
        let (after_int, after_syscall, at_int81, at_ud2) = unsafe {
            (
                addr(&usermode_after_int),
                addr(&usermode_after_syscall),
                addr(&usermode_at_int81),
                addr(&usermode_at_ud2),
            )
        };
        let names = ["int 0x80", "syscall", "int 0x81", "ud2"];
        let wants = [
            (0x80, None, after_int),
            (SYSCALL_VECTOR, None, after_syscall),
            (13, Some(0x81 << 3 | 2), at_int81),
            (6, None, at_ud2),
        ];
        for ((name, e), (vector, error, rip)) in names.iter().zip(entries).zip(wants) {
            let Some(e) = e else {
                println!("usermode: WRONG {name}: never entered the kernel");
                shutdown(ShutdownReason::Crash)
            };
            let error_ok = error.is_none_or(|want| e.error == want);
            println!(
                "usermode: {name} from user: vector {:#x}{}, rip right {}, cs {:#x}, on the kernel stack {}, user rsp kept {}",
                e.vector,
                if error.is_some() {
                    " with its error code"
                } else {
                    ""
                },
                yes(e.rip == rip && error_ok && e.vector == vector),
                e.cs,
                yes(on_kstack(&e)),
                yes(user_rsp(&e)),
            );
            if *name == "syscall" {
                println!(
                    "usermode: syscall from user: rcx is the return rip {}",
                    yes(e.rcx == after_syscall)
                );
            }
        }
        println!("usermode: back in kernel mode, powering off");
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
