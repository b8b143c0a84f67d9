//! bsp-x86_64: typed x86-64 hardware for the fredvisor nucleus (architecture.md §1).
//!
//! Pure encoders and decoders (descriptors, MSR values, the FRED frame, the command line,
//! the register dump) are plain functions with host unit tests. The few instructions the
//! nucleus needs live in `insn` and `port`; they assemble for the host too, so the FRED
//! trap-and-emulate harness can run the very code the nucleus links.
#![cfg_attr(not(test), no_std)]

pub mod cmdline;
pub mod cpu_info;
pub mod entry;
pub mod error_code;
pub mod frame;
pub mod frame_alloc;
pub mod frame_owner;
pub mod fred;
pub mod gdt;
pub mod guest_descriptor;
pub mod guest_pte;
pub mod guest_return;
pub mod guest_segments;
pub mod guest_selectors;
pub mod guest_tables;
pub mod guest_walk;
pub mod idt;
pub mod insn;
pub mod kexec;
pub mod madt;
pub mod msr;
pub mod paging;
pub mod port;
pub mod protection;
pub mod regs;
pub mod rtc;
pub mod server_image;
pub mod stack_block;
pub mod tss;
pub mod uart;
