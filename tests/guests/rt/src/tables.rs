//! Page-table helpers of the test guests: the three page-table hypercalls, the p2m list,
//! and a walk of the guest's own (read-only mapped) bootstrap tables with VIRT_BASE 0,
//! where a table frame's VA is its pfn << 12.

use xen_abi::layout::DOMID_SELF;
use xen_abi::mm::{MmuUpdate, MmuextOp};
use xen_abi::{Hypercall, StartInfo};

use crate::hypercall;

/// Present, writable, user, accessed, dirty: a plain data page.
pub const PAGE_RW: u64 = 0x67;
/// Present, user, accessed: read-only.
pub const PAGE_RO: u64 = 0x25;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// `update_va_mapping(va, val, UVMF_INVLPG)`; returns `rax`.
pub fn update_va_mapping(va: u64, val: u64) -> u64 {
    // SAFETY: no pointer arguments; the hypervisor validates `val`.
    unsafe { hypercall(Hypercall::UpdateVaMapping, [va, val, 2, 0, 0]) }
}

/// `mmu_update` of `requests`; returns `rax` and how many were done.
pub fn mmu_update(requests: &[MmuUpdate]) -> (u64, u32) {
    let mut done = 0u32;
    // SAFETY: `requests` and `done` are ours and live for the call.
    let rax = unsafe {
        hypercall(
            Hypercall::MmuUpdate,
            [
                requests.as_ptr() as u64,
                requests.len() as u64,
                &mut done as *mut u32 as u64,
                u64::from(DOMID_SELF),
                0,
            ],
        )
    };
    (rax, done)
}

/// `mmuext_op` of `ops`; returns `rax`.
pub fn mmuext_op(ops: &[MmuextOp]) -> u64 {
    // SAFETY: `ops` is ours and lives for the call.
    unsafe {
        hypercall(
            Hypercall::MmuextOp,
            [
                ops.as_ptr() as u64,
                ops.len() as u64,
                0,
                u64::from(DOMID_SELF),
                0,
            ],
        )
    }
}

/// The guest's p2m list (start_info.mfn_list, nr_pages entries).
pub fn p2m(info: &StartInfo) -> &'static [u64] {
    // SAFETY: the builder maps the p2m list read-write at mfn_list, nr_pages entries
    // (pv64-abi.md §2.2), for the guest's whole life.
    unsafe { core::slice::from_raw_parts(info.mfn_list as *const u64, info.nr_pages as usize) }
}

/// The read-only M2P's entry for machine frame `mfn`, read where every PV guest reads it
/// (Xen's `machine_to_phys_mapping`, pv64-abi.md §5.4): the frame's pfn, or all ones.
pub fn m2p(mfn: u64) -> u64 {
    let table = xen_abi::layout::MACH2PHYS_VIRT_START as *const u64;
    // SAFETY: the hypervisor maps the M2P read-only for every guest over all RAM frames; the
    // callers pass frames of their own (RAM), so the entry is mapped.
    unsafe { table.add(mfn as usize).read_volatile() }
}

/// The pfn of machine frame `mfn`, if it is one of the guest's.
pub fn pfn_of(info: &StartInfo, mfn: u64) -> Option<u64> {
    p2m(info).iter().position(|&m| m == mfn).map(|p| p as u64)
}

/// Reads entry `index` of the table in frame `mfn` through its read-only mapping.
pub fn read_entry(info: &StartInfo, mfn: u64, index: usize) -> Option<u64> {
    let pfn = pfn_of(info, mfn)?;
    let table = (pfn << 12) as *const u64;
    // SAFETY: every frame of the bootstrap region, tables included, is mapped at
    // pfn << 12 (VIRT_BASE 0), readable; index < 512 stays in the page.
    Some(unsafe { table.add(index % 512).read_volatile() })
}

/// The machine frame of the L1 table behind `va` and the machine address of its entry.
pub fn l1_entry_of(info: &StartInfo, va: u64) -> Option<(u64, u64)> {
    let l4_mfn = p2m(info)[(info.pt_base >> 12) as usize];
    let mut mfn = l4_mfn;
    for shift in [39u32, 30, 21] {
        let entry = read_entry(info, mfn, ((va >> shift) & 511) as usize)?;
        if entry & 1 == 0 {
            return None;
        }
        mfn = (entry & ADDR) >> 12;
    }
    Some((mfn, (mfn << 12) + ((va >> 12) & 511) * 8))
}

/// One past the last mapped VA of the bootstrap region (pv64-abi.md §2.1): the tables, the
/// boot stack and 512 KiB of slack, rounded up to 4 MiB.
pub fn region_end(info: &StartInfo) -> u64 {
    let pages = (info.pt_base >> 12) + info.nr_pt_frames + 1 + 128;
    pages.next_multiple_of(1024) << 12
}
