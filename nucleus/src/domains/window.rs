//! A domain's descriptor-table window (issue 16): the linear range its vCPU's GDTR and
//! LDTR name while it runs, as Xen's per-vCPU GDT/LDT areas. One share of
//! [`crate::layout::DESCRIPTORS_BASE`] per domain (one vCPU each):
//!
//! * GDT pages 0-13: the `set_gdt` frames in order, the rest the shared zero frame
//!   (read-only: a selector there names a null descriptor, `#GP(sel)` in the guest);
//! * GDT page 14 (0xe000): the domain's reserved page, `gdt::HypervisorEntries` with the
//!   nucleus' and Xen's flat entries and the LDT descriptor (no TSS: TR is loaded once per
//!   CPU from its own GDT and never read through this one);
//! * the LDT window, 64 KiB up: the `SET_LDT` frames, nothing else mapped.
//!
//! Guest frames are mapped writable here, supervisor only: the CPU sets the accessed bit of
//! a descriptor it loads. Their guest mappings stay read-only (the frames' `SegDesc` type).
//! The mappings are not global, so a CPU that switches address space drops stale ones.
use super::registry::domain;
use crate::layout::{DESCRIPTOR_WINDOW, DESCRIPTORS_BASE, LDT_WINDOW_OFFSET};
use crate::racy::racy_static;
use bsp_x86_64::gdt::{self, DescriptorView, HypervisorEntries};
use bsp_x86_64::paging::PhysAddr;
use ipc::domain::{MAX_GDT_FRAMES, MAX_LDT_FRAMES};
use xen_abi::{Errno, Mfn};

/// GDT pages a guest's frames may fill (Xen's 14 reserved below 0xe000).
const GUEST_GDT_PAGES: u64 = gdt::FIRST_RESERVED_INDEX as u64 / 512;
/// The reserved page's place in the GDT window.
const RESERVED_PAGE: u64 = GUEST_GDT_PAGES;

const _: () = assert!(MAX_GDT_FRAMES as u64 <= GUEST_GDT_PAGES);
const _: () = assert!(MAX_LDT_FRAMES as u64 * 4096 <= DESCRIPTOR_WINDOW - LDT_WINDOW_OFFSET);
const _: () = assert!((RESERVED_PAGE + 1) * 4096 <= LDT_WINDOW_OFFSET);

racy_static! {
    /// The frame every unused GDT page maps (allocated zeroed once, never freed).
    fn zero_cell() -> Option<PhysAddr> = None;
}

/// The linear address of domain `number`'s GDT (entry 0).
pub fn gdt_base(number: u16) -> u64 {
    DESCRIPTORS_BASE + u64::from(number - 1) * DESCRIPTOR_WINDOW
}

fn ldt_base(number: u16) -> u64 {
    gdt_base(number) + LDT_WINDOW_OFFSET
}

fn zero_frame() -> Result<PhysAddr, Errno> {
    // SAFETY: written once at boot (`init`), read on the guest-manager syscall path.
    unsafe { *zero_cell().get() }.ok_or(Errno::Enomem)
}

/// Boot: the zero frame and the page tables of every domain's window, so a domain's
/// window costs only its reserved page and gives back all it took. False if memory ran out.
pub fn init() -> bool {
    let Some(frame) = crate::mm::memory::alloc_frame() else {
        return false;
    };
    // SAFETY: boot, one CPU: nothing reads the cell yet.
    unsafe { *zero_cell().get() = Some(frame) };
    // Every window lies in one 2 MiB range: one mapping builds all the tables they use.
    const _: () = assert!(
        DESCRIPTORS_BASE.is_multiple_of(2 << 20)
            && ipc::domain::MAX_DOMAINS as u64 * DESCRIPTOR_WINDOW <= 2 << 20
    );
    remap(DESCRIPTORS_BASE, Some((frame, false))).is_ok() && remap(DESCRIPTORS_BASE, None).is_ok()
}

/// Points the window page at `va` at `target` (frame, writable) or leaves it unmapped.
#[cfg(target_os = "none")]
fn remap(va: u64, target: Option<(PhysAddr, bool)>) -> Result<(), Errno> {
    use bsp_x86_64::paging::{PageTableFlags as F, VirtAddr};
    let virt = VirtAddr::new_truncate(va);
    let mapped = crate::mm::memory::with_mapper(|mapper, root| {
        let _ = mapper.unmap_4k(root, virt);
        match target {
            Some((frame, writable)) => {
                let mut flags = F::PRESENT | F::NO_EXECUTE;
                if writable {
                    flags |= F::WRITABLE;
                }
                mapper.map_4k(root, virt, frame, flags)
            }
            None => Ok(()),
        }
    });
    // SAFETY: CPL 0; dropping a translation of the nucleus' own window is always safe.
    unsafe { bsp_x86_64::insn::invlpg(va) };
    mapped.map_err(|_| Errno::Enomem)
}

/// The host's window: what `remap` would map, recorded (`host::mm::window`).
#[cfg(not(target_os = "none"))]
fn remap(va: u64, target: Option<(PhysAddr, bool)>) -> Result<(), Errno> {
    crate::mm::window::remap(va, target);
    Ok(())
}

/// The reserved page of domain `number`, with the window around it, made on first use. Once
/// it exists every later `remap` in the window finds its page table, so calling this first
/// leaves nothing that can fail after a table change.
pub fn reserved(number: u16) -> Result<Mfn, Errno> {
    if let Some(mfn) = domain(number).reserved {
        return Ok(mfn);
    }
    let zero = zero_frame()?;
    let frame = crate::mm::memory::alloc_frame().ok_or(Errno::Enomem)?;
    let mfn = Mfn(frame.as_u64() >> 12);
    // SAFETY: a fresh zeroed nucleus frame, reached through the direct map; nothing else
    // uses it. `HypervisorEntries` is plain `u64`s, 4 KiB, page-aligned like the frame.
    unsafe {
        (*(super::memory::frame_bytes(mfn) as *mut [u8; 4096] as *mut HypervisorEntries)).set_flat()
    };
    let base = gdt_base(number);
    let mapped = remap(base + RESERVED_PAGE * 4096, Some((frame, true))).and_then(|()| {
        (0..GUEST_GDT_PAGES).try_for_each(|page| remap(base + page * 4096, Some((zero, false))))
    });
    if let Err(e) = mapped {
        unmap_all(number);
        crate::mm::memory::free_frame(frame);
        return Err(e);
    }
    domain(number).reserved = Some(mfn);
    Ok(mfn)
}

/// Maps `frames` as domain `number`'s GDT pages (the zero frame after them).
pub fn map_gdt(number: u16, frames: &[Mfn]) -> Result<(), Errno> {
    reserved(number)?;
    let zero = zero_frame()?;
    let base = gdt_base(number);
    for page in 0..GUEST_GDT_PAGES {
        let target = match frames.get(page as usize) {
            Some(mfn) => (PhysAddr::new(mfn.0 << 12), true),
            None => (zero, false),
        };
        remap(base + page * 4096, Some(target))?;
    }
    Ok(())
}

/// Maps `frames` as domain `number`'s LDT of `entries` descriptors (none: no LDT).
pub fn map_ldt(number: u16, frames: &[Mfn], entries: u32) -> Result<(), Errno> {
    let page_of_reserved = reserved(number)?;
    let base = ldt_base(number);
    for page in 0..MAX_LDT_FRAMES as u64 {
        let target = frames
            .get(page as usize)
            .map(|mfn| (PhysAddr::new(mfn.0 << 12), true));
        remap(base + page * 4096, target)?;
    }
    // SAFETY: the domain's reserved page, a nucleus frame only this window uses; the CPU
    // reads its LDT descriptor only at LLDT, which runs after this (`sched::switch`).
    let page = unsafe {
        &mut *(super::memory::frame_bytes(page_of_reserved) as *mut [u8; 4096]
            as *mut HypervisorEntries)
    };
    page.set_ldt(base, if frames.is_empty() { 0 } else { entries });
    Ok(())
}

/// What domain `number`'s vCPU runs on: its window once it has a GDT or an LDT.
pub fn view(number: u16) -> DescriptorView {
    let d = domain(number);
    if d.reserved.is_none() || (d.gdt.is_empty() && d.ldt.is_empty()) {
        return DescriptorView::default();
    }
    DescriptorView {
        gdt_base: gdt_base(number),
        ldt: !d.ldt.is_empty(),
    }
}

fn unmap_all(number: u16) {
    let base = gdt_base(number);
    for page in 0..=RESERVED_PAGE {
        let _ = remap(base + page * 4096, None);
    }
    for page in 0..MAX_LDT_FRAMES as u64 {
        let _ = remap(ldt_base(number) + page * 4096, None);
    }
}

/// Domain `number` ends: its window is unmapped and its reserved page freed (`reserved`,
/// taken out of the domain already).
pub fn release(number: u16, reserved: Option<Mfn>) {
    if let Some(mfn) = reserved {
        // No other CPU may keep the window as its GDT (an idle one still may) or cached.
        crate::cpu::ipi::shootdown_tlb_everywhere();
        unmap_all(number);
        crate::mm::memory::free_frame(PhysAddr::new(mfn.0 << 12));
    }
}
