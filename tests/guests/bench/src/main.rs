//! guest-bench (issue 15 point 8, issue 16 point 9): times 1000 `xen_version(0)` hypercalls
//! and 1000 bounces (a `ud2` → its `#UD` handler, four instructions that step over it →
//! the `iret` hypercall → back), each between two `rdtsc`, minus the cost of an empty pair,
//! and prints `bench: hypercall-roundtrip min=A max=B` and `bench: bounce-roundtrip min=A
//! max=B` (TSC ticks; `image-builder bench` converts under `-icount`), then powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
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

    unsafe extern "C" {
        static bench_ud_handler: u8;
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

    fn main(_boot: Boot) -> ! {
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
        shutdown(ShutdownReason::Poweroff)
    }

    guest_main!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {}
