//! What pv-server reads of the CPU itself: CPUID (the emulated CPUID policy's input) and the
//! time stamp counter. On the host, where no guest runs, both read as zero.

use crate::emulate::cpuid::Regs;

/// The host's CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> Regs {
    #[cfg(target_os = "none")]
    {
        let r = ipc::rt::cpu::cpuid(leaf, subleaf);
        Regs {
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (leaf, subleaf);
        Regs::default()
    }
}

/// The time stamp counter.
pub fn tsc() -> u64 {
    #[cfg(target_os = "none")]
    {
        ipc::rt::cpu::rdtsc()
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}
