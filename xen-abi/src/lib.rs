//! xen-abi: the part of Xen's public PV64 interface that fredvisor speaks, as Rust types.
//!
//! One crate for both sides of the ABI: pv-server (the domain builder, the hypercall
//! handlers) and the project's own test guests (`tests/guests/`) use these definitions, so a
//! number or an offset is written once. The facts come from the project's
//! `pv64-abi.md` (section numbers are cited at each item); the layouts are `#[repr(C)]` and
//! every offset the document gives is `const`-asserted, so a wrong field fails the build.
//!
//! Structures that cross the guest boundary also have a safe little-endian codec
//! (`to_bytes`/`from_bytes`) built on `offset_of!`, so pv-server can read and write guest
//! memory as bytes without `unsafe`, while a guest may still read the same struct in place.
//!
//! Nothing here decides anything: what is allowed is the nucleus' and pv-server's business.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[macro_use]
mod macros;
mod wire;

pub mod console;
pub mod elfnote;
pub mod errno;
pub mod evtchn;
pub mod frame;
pub mod grant;
pub mod hypercall;
pub mod layout;
pub mod memory;
pub mod mm;
pub mod sched;
pub mod segment;
pub mod shared_info;
pub mod start_info;
pub mod traps;
pub mod vcpu;
pub mod version;
pub mod vm_assist;

pub use errno::Errno;
pub use frame::{Mfn, Pfn};
pub use hypercall::Hypercall;
pub use shared_info::{ArchSharedInfo, ArchVcpuInfo, SharedInfo, VcpuInfo, VcpuTimeInfo};
pub use start_info::{SifFlags, StartInfo};

/// Bytes in a guest page (PV64 has 4 KiB pages only).
pub const PAGE_SIZE: u64 = 4096;
/// `log2(PAGE_SIZE)`: a pfn or mfn times this is an address.
pub const PAGE_SHIFT: u32 = 12;
