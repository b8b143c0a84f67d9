//! The few unprivileged instructions servers need: time stamps, breakpoints, test faults.
//!
//! Servers forbid `unsafe`, so the instructions they use for benchmarks and crash tests are
//! wrapped here. The fault helpers fault *on purpose*: the nucleus turns them into events for
//! `fred-server`; none of them can corrupt the server's memory.

use core::arch::asm;

/// Reads the time-stamp counter after earlier instructions completed (`lfence; rdtsc`).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: `lfence` and `rdtsc` read the TSC into edx:eax and touch no memory. (CR4.TSD
    // would make `rdtsc` #GP in Ring3; that is a fault the nucleus reports, not UB.)
    unsafe { asm!("lfence", "rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// CPUID leaf `leaf`, subleaf `subleaf`: `[eax, ebx, ecx, edx]` (pv-server's guest policy
/// starts from the host's answers).
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    // SAFETY: CPUID exists on every x86-64 CPU and only reads; at CPL 3 it either runs or
    // (with CPUID faulting on) traps to the nucleus, neither of which is UB.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Executes `int3`: a `#BP` the nucleus forwards to `fred-server`, which resumes us.
#[inline(always)]
pub fn breakpoint() {
    // SAFETY: `int3` traps to the nucleus; when resumed, execution continues after it with
    // every register as it was (fred-server's policy for `#BP` is `Resume`). If the policy
    // kills us instead, nothing after this runs, which is also sound.
    unsafe { asm!("int3", options(nomem, nostack)) };
}

/// Writes to address 0 (never mapped: below `layout::IMAGE_START`): a user `#PF`.
pub fn null_write() -> ! {
    // SAFETY: address 0 is never mapped in a server's address space (layout::IMAGE_START is
    // 0x10000), so the store faults before it changes anything. A plain `Resume` re-executes
    // the store and faults again; the `ud2` only runs if a reply moved RIP past the store.
    unsafe {
        asm!("mov qword ptr [0], rax", "ud2", in("rax") 0xdead_u64, options(nostack, noreturn))
    }
}

/// Executes `ud2`: a `#UD`.
pub fn invalid_opcode() -> ! {
    // SAFETY: `ud2` raises #UD and has no other effect; we never continue past it.
    unsafe { asm!("ud2", "2: jmp 2b", options(nomem, nostack, noreturn)) }
}

/// Spins forever without a syscall: only preemption gets the CPU back.
pub fn spin_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
