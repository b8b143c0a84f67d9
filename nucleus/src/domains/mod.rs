//! Domains: PV64 guests' memory and vCPUs, the mechanism under pv-server's policy (issue 15
//! point 2). Every guest-manager syscall lands here after `syscall` checked the caller is
//! the guest manager; every value it passes is an allegation checked against the frame
//! table (`bsp_x86_64::frame_owner`), the page-table rules (`guest_pte`, `guest_tables`,
//! `guest_walk`) and the return rules (`guest_return`).
//!
//! This module only routes a call to the one that does its job: `registry` (which domains
//! live), `memory` (the frame table and the direct-map view of guest frames), `modules`
//! (guest boot modules), `lifecycle` (create, destroy), `access` (pv-server's copies into a
//! domain), `mmu` (page-table operations), `descriptors` (GDT/LDT frames) and `window`
//! (where the CPU finds them), `vcpu` (start), `console` (guest lines).
//!
//! The nucleus lives in L4 slots 256-271 only (`crate::layout`): `guest_tables` copies
//! them into every guest L4 it validates and refuses every guest entry there; every other
//! slot is the guest's. The M2P (`mm::m2p`) follows every frame a domain owns: set when
//! `domain_create` hands frame `i` as pfn `i` (`lifecycle`), changed by `MachphysUpdate`
//! (`mmu`), cleared when the frame goes back to the allocator (`lifecycle`).
mod access;
mod console;
mod descriptors;
mod lifecycle;
mod memory;
mod mmu;
mod modules;
mod registry;
mod vcpu;
mod window;

pub use lifecycle::{GUESTS_ENDING, destroy_all};

use crate::thread::{ThreadId, Threads};
use bsp_x86_64::frame::Frame;
use ipc::domain::{MmuOp, VcpuStart};
use ipc::syscall::{Syscall, SyscallError};
use registry::domain_number;
use xen_abi::Errno;

/// Boot: the frame table over RAM and the guest modules. One line if guests cannot run.
#[cfg(target_os = "none")]
pub fn init(boot: &crate::bootinfo::BootSummary) {
    if !memory::init() || !window::init() {
        println!("nucleus: no memory for the frame table; no guests");
        return;
    }
    modules::keep(boot);
}

/// The guest-manager syscall `call` of thread `cur` (arguments in `frame`'s registers).
/// `Ok` is the value for RAX; Xen-ABI verdicts are `Ok(errno)`.
pub fn syscall(
    t: &mut Threads,
    cur: ThreadId,
    call: Syscall,
    frame: &Frame,
) -> Result<u64, SyscallError> {
    let g = &frame.gprs;
    let (a0, a1, a2, a3, a4) = (g.rdi, g.rsi, g.rdx, g.r10, g.r8);
    let space = t.get(cur).space.as_ref().ok_or(SyscallError::BadPointer)?;
    match call {
        Syscall::GuestModule => modules::text(space, a0, a1, a2),
        Syscall::GuestModuleRead => modules::read(space, a0, a1, a2, a3),
        Syscall::DomainCreate => lifecycle::create(t, a0, a1, a2, a3),
        Syscall::DomainWrite => access::domain_write(space, a0, a1, a2, a3, a4),
        Syscall::DomainRead => access::domain_read(space, a0, a1, a2, a3, a4),
        Syscall::GuestCopy => access::guest_copy(space, a0, a1, a2, a3),
        Syscall::DomainMmu => {
            let domain = domain_number(a0)?;
            let op = MmuOp::decode(a1, a2, a3).ok_or(SyscallError::BadArgument)?;
            let result = match op {
                MmuOp::SetGdt { list, entries } => {
                    descriptors::set_gdt(space, domain, list, entries)
                        .map(|()| descriptors::track(t, domain))
                }
                MmuOp::SetLdt { va, entries } => descriptors::set_ldt(domain, va, entries)
                    .map(|()| descriptors::track(t, domain)),
                MmuOp::UpdateDescriptor { maddr, desc } => {
                    descriptors::update_descriptor(domain, maddr, desc)
                }
                _ => mmu::mmu(t, domain, op),
            };
            Ok(verdict(result))
        }
        Syscall::VcpuStart => {
            let domain = domain_number(a0)?;
            let mut block = [0u8; VcpuStart::SIZE];
            space
                .read(a1, &mut block)
                .map_err(|_| SyscallError::BadPointer)?;
            Ok(verdict(vcpu::start(
                t,
                domain,
                &VcpuStart::from_bytes(&block),
            )))
        }
        Syscall::VcpuSegmentBase => {
            let domain = domain_number(a0)?;
            Ok(verdict(vcpu::segment_base(t, domain, a1, a2)))
        }
        Syscall::VcpuSelectors => {
            let domain = domain_number(a0)?;
            let (mask, before) =
                vcpu::selectors(t, domain).map_err(|_| SyscallError::BadArgument)?;
            let mut bytes = [0u8; 8];
            for (pair, word) in bytes.chunks_exact_mut(2).zip(before) {
                pair.copy_from_slice(&word.to_le_bytes());
            }
            let space = t.get(cur).space.as_ref().ok_or(SyscallError::BadPointer)?;
            space
                .write(a1, &bytes)
                .map_err(|_| SyscallError::BadPointer)?;
            Ok(mask)
        }
        Syscall::DomainDestroy => lifecycle::destroy(t, domain_number(a0)?),
        Syscall::GuestConsoleWrite => console::write(t, cur, a0, a1, a2),
        Syscall::FreeFrames => Ok(crate::mm::memory::free_count()),
        Syscall::DomainShare => lifecycle::share(domain_number(a0)?),
        Syscall::Clock => {
            let which = ipc::domain::Clock::from_raw(a0).ok_or(SyscallError::BadArgument)?;
            Ok(crate::timer::clock(which))
        }
        _ => Err(SyscallError::NoSuchSyscall),
    }
}

#[cfg(test)]
mod tests;

fn verdict(result: Result<(), Errno>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(errno) => u64::from(errno.raw()),
    }
}
