//! `cpu_info`: the 64-byte per-CPU block at the top of the primary stack (architecture.md §4).
//!
//! GS_BASE points here while the nucleus runs (both deliveries: FRED swaps GS on ring-3
//! delivery and ERETU, the IDT stubs SWAPGS). The IDT `syscall` stub reaches its stack through
//! it, because SYSCALL does not switch stacks; the nucleus finds its per-CPU data through
//! [`CpuInfo::percpu`]; diagnostics find the block by address.
use core::mem::{offset_of, size_of};

#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// Where the IDT `syscall` stub builds its frame: the primary stack top (= FRED RSP0 =
    /// TSS.RSP0), 64-byte aligned.
    pub kernel_rsp: u64,
    /// The user RDI while the IDT `syscall` stub builds its frame in the save area.
    pub scratch_rsp: u64,
    /// CPU number.
    pub cpu: u64,
    /// The nucleus' per-CPU block of this CPU (its `PerCpu`): what `gs:[CPU_INFO_PERCPU]`
    /// reads in ring 0.
    pub percpu: u64,
    /// The register save area of the thread this CPU runs (a `Frame`): the ring-3 entry
    /// stubs save the interrupted context straight into it, so a context switch only moves
    /// this pointer. It belongs to the thread; the CPU only points at it.
    pub save_area: u64,
    pub reserved: [u64; 3],
}

pub const CPU_INFO_KERNEL_RSP: usize = offset_of!(CpuInfo, kernel_rsp);
pub const CPU_INFO_SCRATCH_RSP: usize = offset_of!(CpuInfo, scratch_rsp);
pub const CPU_INFO_PERCPU: usize = offset_of!(CpuInfo, percpu);
pub const CPU_INFO_SAVE_AREA: usize = offset_of!(CpuInfo, save_area);

const _: () = assert!(size_of::<CpuInfo>() as u64 == crate::stack_block::CPU_INFO_SIZE);
