//! guest-bench (issue 15 point 8, issue 16 point 9, issue 18 point 4): times 1000
//! `xen_version(0)` hypercalls, 1000 bounces (a `ud2` → its `#UD` handler, four instructions
//! that step over it → the `iret` hypercall → back) and, in user mode, 1000 call-gate round
//! trips (`call far` through a DPL 3 gate into the kernel → six instructions that turn the
//! gate's frame into an `iret` frame → the `iret` hypercall → back in user mode), each
//! between two `rdtsc`, minus the cost of an empty pair, and prints `bench:
//! hypercall-roundtrip`, `bench: bounce-roundtrip` and `bench: callgate-roundtrip` with
//! `min=A max=B` (TSC ticks; `image-builder bench` converts under `-icount`), then powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU64, Ordering};

    use guest_rt::tables::{PAGE_RO, p2m, region_end, update_va_mapping};
    use guest_rt::{Boot, guest_main, hypercall, println, shutdown, xen_guest_notes};
    use xen_abi::Hypercall;
    use xen_abi::sched::ShutdownReason;

    xen_guest_notes!("fredvisor-bench");

    const SAMPLES: u32 = 1000;

    // The smallest `#UD` handler: drop the frame's rcx/r11, step the saved RIP over the
    // 2-byte `ud2`, push iret's flags (0) and jump to the `iret` stub.
    core::arch::global_asm!(
        ".globl bench_ud_handler",
        "bench_ud_handler:",
        "    pop rcx",
        "    pop r11",
        "    add qword ptr [rsp], 2",
        "    push 0",
        "    jmp hypercall_page + {iret}",
        iret = const Hypercall::Iret.stub_offset(),
    );

    /// The call-gate round trip's kernel side: the gate's frame (rip, cs, rsp, ss) becomes
    /// an `iret` frame (flags, rip, cs, rflags, rsp, ss) back to user mode. The user-mode
    /// driver: `bench_gate_samples` (Rust, in user mode), then `call far` through the exit
    /// gate, whose target goes back to the kernel context `callgate_bench` saved.
    core::arch::global_asm!(
        ".globl bench_gate_target",
        "bench_gate_target:",
        "    pop rax",
        "    pop rcx",
        "    push 0x202",
        "    push rcx",
        "    push rax",
        "    push 0",
        "    jmp hypercall_page + {iret}",
        ".globl bench_user_entry",
        "bench_user_entry:",
        "    call bench_gate_samples",
        "    lea rdi, [rip + {exit_op}]",
        "    .byte 0xff, 0x1f",
        ".pushsection .bss.bench_stacks, \"aw\", @nobits",
        ".balign 16",
        ".globl bench_kstack",
        "bench_kstack:",
        "    .skip 16384",
        ".globl bench_ustack",
        "bench_ustack:",
        "    .skip 16384",
        ".popsection",
        iret = const Hypercall::Iret.stub_offset(),
        exit_op = sym EXIT_OPERAND,
    );

    unsafe extern "C" {
        static bench_ud_handler: u8;
        static bench_gate_target: u8;
        static bench_user_entry: u8;
        static bench_kstack: u8;
        static bench_ustack: u8;
    }

    /// GDT entries 16/17: the DPL 3 gate timed; 18/19: the exit gate.
    const BENCH_GATE: u16 = 16 << 3 | 3;
    const EXIT_GATE: u16 = 18 << 3 | 3;
    /// m16:32 far pointers through the two gates (offset 0, then the selector).
    static BENCH_OPERAND: AtomicU64 = AtomicU64::new((BENCH_GATE as u64) << 32);
    static EXIT_OPERAND: AtomicU64 = AtomicU64::new((EXIT_GATE as u64) << 32);
    static OVERHEAD: AtomicU64 = AtomicU64::new(0);
    static GATE_MIN: AtomicU64 = AtomicU64::new(u64::MAX);
    static GATE_MAX: AtomicU64 = AtomicU64::new(0);

    /// Runs in guest-user mode: the samples of the call-gate round trip.
    #[unsafe(no_mangle)]
    extern "C" fn bench_gate_samples() {
        let overhead = OVERHEAD.load(Ordering::Relaxed);
        let (mut min, mut max) = (u64::MAX, 0);
        for _ in 0..SAMPLES {
            let start = rdtsc();
            // SAFETY: the gate's target returns through `iret` right after the far call,
            // in user mode, with every register but rax, rcx and r11 as they were.
            unsafe {
                core::arch::asm!(
                    ".byte 0xff, 0x1f",
                    in("rdi") &BENCH_OPERAND as *const AtomicU64 as u64,
                    out("rax") _,
                    out("rcx") _,
                    out("r11") _,
                )
            };
            let ticks = rdtsc().saturating_sub(start).saturating_sub(overhead);
            min = min.min(ticks);
            max = max.max(ticks);
        }
        GATE_MIN.store(min, Ordering::Relaxed);
        GATE_MAX.store(max, Ordering::Relaxed);
    }

    fn addr(symbol: &u8) -> u64 {
        symbol as *const u8 as u64
    }

    /// A present 64-bit call gate, DPL 3, to Xen's flat kernel CS.
    fn user_gate(offset: u64) -> [u64; 2] {
        let low = (offset & 0xffff)
            | u64::from(xen_abi::layout::selector::FLAT_KERNEL_CS) << 16
            | 0xec << 40
            | ((offset >> 16) & 0xffff) << 48;
        [low, offset >> 32]
    }

    /// Sets up the two gates, `stack_switch` and user tables, and times the call-gate round
    /// trip in user mode; `Err` names the set-up step that was refused.
    fn callgate_bench(info: &xen_abi::StartInfo) -> Result<(u64, u64), &'static str> {
        let gdt_va = region_end(info) - 3 * 4096;
        let gdt = p2m(info)[(gdt_va >> 12) as usize];
        // SAFETY: only the symbols' addresses are taken.
        let (target, exit, entry, ktop, utop) = unsafe {
            (
                addr(&bench_gate_target),
                guest_rt::user::back_to_kernel_address(),
                addr(&bench_user_entry),
                addr(&bench_kstack) + 16384,
                addr(&bench_ustack) + 16384,
            )
        };
        let page = gdt_va as *mut u64;
        for (index, offset) in [(16, target), (18, exit)] {
            let [low, high] = user_gate(offset);
            // SAFETY: the page is ours, in the bootstrap region's padding, mapped read-write
            // until it becomes the GDT below.
            unsafe {
                page.add(index).write_volatile(low);
                page.add(index + 1).write_volatile(high);
            }
        }
        if update_va_mapping(gdt_va, gdt << 12 | PAGE_RO) != 0 {
            return Err("GDT frame read-only");
        }
        let frames = [gdt];
        // SAFETY: the frame list lives on our stack for the call.
        if unsafe { hypercall(Hypercall::SetGdt, [frames.as_ptr() as u64, 512, 0, 0, 0]) } != 0 {
            return Err("set_gdt");
        }
        if guest_rt::traps::stack_switch(ktop) != 0 {
            return Err("stack_switch");
        }
        let l4 = p2m(info)[(info.pt_base >> 12) as usize];
        if guest_rt::traps::new_user_baseptr(l4) != 0 {
            return Err("NEW_USER_BASEPTR");
        }
        // SAFETY: the user stack and code are mapped for user mode, the kernel stack and the
        // user tables are set above, and the user code ends by coming back to the kernel.
        unsafe { guest_rt::user::run_user(utop, entry) };
        Ok((
            GATE_MIN.load(Ordering::Relaxed),
            GATE_MAX.load(Ordering::Relaxed),
        ))
    }

    /// Installs the `#UD` handler; `rax` of `set_trap_table`.
    fn install_ud_handler() -> u64 {
        let mut table = [[0u8; xen_abi::traps::TrapInfo::SIZE]; 2];
        table[0] = xen_abi::traps::TrapInfo {
            vector: 6,
            flags: 0,
            cs: xen_abi::layout::selector::FLAT_KERNEL_CS,
            _pad: 0,
            // SAFETY: only the symbol's address is taken.
            address: unsafe { &bench_ud_handler as *const u8 as u64 },
        }
        .to_bytes();
        // SAFETY: the table lives on our stack for the call.
        unsafe { hypercall(Hypercall::SetTrapTable, [table.as_ptr() as u64, 0, 0, 0, 0]) }
    }

    /// One bounce round trip, in ticks.
    fn bounce() -> u64 {
        let start = rdtsc();
        // SAFETY: the `#UD` handler returns right after the `ud2` with every register but
        // rcx and r11 (the bounce frame's, restored by `iret`) as they were.
        unsafe { core::arch::asm!("ud2", out("rcx") _, out("r11") _) };
        rdtsc().saturating_sub(start)
    }

    fn rdtsc() -> u64 {
        // SAFETY: `rdtsc` reads the time-stamp counter; CR4.TSD is clear, so CPL3 may.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    fn main(boot: Boot) -> ! {
        let overhead = (0..64)
            .map(|_| {
                let start = rdtsc();
                rdtsc().saturating_sub(start)
            })
            .min()
            .unwrap_or(0);
        let (mut min, mut max) = (u64::MAX, 0);
        let mut version = 0;
        for _ in 0..SAMPLES {
            let start = rdtsc();
            // SAFETY: xen_version(0) takes no pointer.
            version = unsafe { hypercall(Hypercall::XenVersion, [0; 5]) };
            let ticks = rdtsc().saturating_sub(start).saturating_sub(overhead);
            min = min.min(ticks);
            max = max.max(ticks);
        }
        println!(
            "bench: hypercall-roundtrip min={min} max={max} samples={SAMPLES} version={version:#x}"
        );
        let answer = install_ud_handler();
        if answer != 0 {
            println!("bench: bounce-roundtrip unavailable: set_trap_table -> {answer:#x}");
            shutdown(ShutdownReason::Crash);
        }
        let (mut min, mut max) = (u64::MAX, 0);
        for _ in 0..SAMPLES {
            let ticks = bounce().saturating_sub(overhead);
            min = min.min(ticks);
            max = max.max(ticks);
        }
        println!("bench: bounce-roundtrip min={min} max={max} samples={SAMPLES}");
        OVERHEAD.store(overhead, Ordering::Relaxed);
        match callgate_bench(boot.start_info) {
            Ok((min, max)) => {
                println!("bench: callgate-roundtrip min={min} max={max} samples={SAMPLES}")
            }
            Err(step) => {
                println!("bench: callgate-roundtrip unavailable: {step} refused");
                shutdown(ShutdownReason::Crash);
            }
        }
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
