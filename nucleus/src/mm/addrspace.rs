//! Server address spaces: a PML4 per server, the nucleus' window shared (architecture.md §6).
//!
//! The nucleus' slots 257-271 (image, stacks, direct map: [`crate::layout`]) are copied from
//! its tables, so the nucleus stays mapped — supervisor-only — in every space and events can
//! land on its stacks; slot 256, the guests' M2P, is left out. The lower half holds only what
//! the nucleus put there for the server: ELF segments, start page, rings, stack; every other
//! slot is empty. A pointer a server passes is an allegation until [`AddressSpace::check`]
//! found every byte of it mapped user-accessible (and writable when the nucleus will write).
use super::memory::{self, MemoryError};
use crate::layout;
use bsp_x86_64::paging::{PageTable, PageTableFlags as F, PhysAddr, VirtAddr};

/// The nucleus' slots a server's PML4 gets: its window without the M2P.
const NUCLEUS_SLOTS: core::ops::Range<usize> = layout::M2P_SLOT + 1..layout::END_SLOT;
/// The slots a server's own mappings live in (the lower half).
const SERVER_SLOTS: core::ops::Range<usize> = 0..layout::FIRST_SLOT;

pub struct AddressSpace {
    root: PhysAddr,
}

/// A user pointer that does not name memory the server may use that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPointer;

fn table(phys: PhysAddr) -> &'static mut PageTable {
    // SAFETY: `phys` is a page-table frame of a space the nucleus built; the direct map covers
    // it. The nucleus edits tables only with interrupts off on its single CPU.
    unsafe { &mut *(memory::phys_to_virt(phys.as_u64()) as *mut PageTable) }
}

impl AddressSpace {
    pub fn new() -> Result<Self, MemoryError> {
        let root = memory::alloc_frame().ok_or(MemoryError::OutOfFrames)?;
        let new = table(root);
        for slot in NUCLEUS_SLOTS {
            new[slot] = memory::nucleus_root_entry(slot);
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Maps a fresh zeroed frame at `virt` with `flags` (USER is added) and returns it.
    pub fn map_new(&mut self, virt: u64, flags: F) -> Result<PhysAddr, MemoryError> {
        let frame = memory::alloc_frame().ok_or(MemoryError::OutOfFrames)?;
        let root = self.root;
        let result = memory::with_mapper(|mapper, _| {
            mapper.map_4k(
                root,
                VirtAddr::new_truncate(virt),
                frame,
                flags | F::PRESENT | F::USER,
            )
        });
        if let Err(e) = result {
            memory::free_frame(frame);
            return Err(e.into());
        }
        Ok(frame)
    }

    /// Checks that `[ptr, ptr + len)` is mapped for the server (and writable if `write`).
    pub fn check(&self, ptr: u64, len: u64, write: bool) -> Result<(), BadPointer> {
        if len == 0 {
            return Ok(());
        }
        let end = ptr.checked_add(len).ok_or(BadPointer)?;
        if end > ipc::layout::USER_END {
            return Err(BadPointer);
        }
        let mut page = ptr & !0xfff;
        while page < end {
            let (_, flags) = self.translate(page).ok_or(BadPointer)?;
            if !flags.contains(F::USER) || (write && !flags.contains(F::WRITABLE)) {
                return Err(BadPointer);
            }
            page += 4096;
        }
        Ok(())
    }

    fn translate(&self, virt: u64) -> Option<(PhysAddr, F)> {
        let root = self.root;
        let virt = VirtAddr::try_new(virt).ok()?;
        memory::with_mapper(|mapper, _| mapper.translate(root, virt))
    }

    /// Copies checked user bytes into `buf` through the direct map, a page at a time.
    pub fn read(&self, ptr: u64, buf: &mut [u8]) -> Result<(), BadPointer> {
        self.check(ptr, buf.len() as u64, false)?;
        let mut done = 0;
        while done < buf.len() {
            let va = ptr + done as u64;
            let in_page = ((4096 - (va & 0xfff)) as usize).min(buf.len() - done);
            let (phys, _) = self.translate(va & !0xfff).ok_or(BadPointer)?;
            let src = memory::phys_to_virt(phys.as_u64() + (va & 0xfff)) as *const u8;
            // SAFETY: `check` found the page mapped for the server; `in_page` bytes stay
            // inside that one frame, which the direct map covers. The server may change the
            // bytes concurrently only on another CPU, and there is one.
            unsafe { core::ptr::copy_nonoverlapping(src, buf[done..].as_mut_ptr(), in_page) };
            done += in_page;
        }
        Ok(())
    }

    /// Copies `bytes` to checked user memory writable by the server, a page at a time.
    pub fn write(&self, ptr: u64, bytes: &[u8]) -> Result<(), BadPointer> {
        self.check(ptr, bytes.len() as u64, true)?;
        let mut done = 0;
        while done < bytes.len() {
            let va = ptr + done as u64;
            let in_page = ((4096 - (va & 0xfff)) as usize).min(bytes.len() - done);
            let (phys, _) = self.translate(va & !0xfff).ok_or(BadPointer)?;
            let dst = memory::phys_to_virt(phys.as_u64() + (va & 0xfff)) as *mut u8;
            // SAFETY: `check` found the page mapped writable for the server; `in_page` bytes
            // stay inside that one frame, a server page (never a nucleus table: those are
            // not mapped in its lower half), reached through the direct map.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), dst, in_page) };
            done += in_page;
        }
        Ok(())
    }

    /// Frees every frame of the lower half (leaves and tables) and the root.
    pub fn destroy(self) {
        // Never free the tables the CPU is walking: leave them for the nucleus' own first.
        if super::is_loaded(self.root) {
            super::load_root(memory::kernel_root());
        }
        let root = table(self.root);
        for pml4e in &root.entries()[SERVER_SLOTS] {
            if !pml4e.is_present() {
                continue;
            }
            let pdpt_phys = pml4e.addr();
            for pdpte in table(pdpt_phys).entries().iter().filter(|e| e.is_present()) {
                let pd_phys = pdpte.addr();
                for pde in table(pd_phys).entries().iter().filter(|e| e.is_present()) {
                    let pt_phys = pde.addr();
                    for pte in table(pt_phys).entries().iter().filter(|e| e.is_present()) {
                        memory::free_frame(pte.addr());
                    }
                    memory::free_frame(pt_phys);
                }
                memory::free_frame(pd_phys);
            }
            memory::free_frame(pdpt_phys);
        }
        memory::free_frame(self.root);
    }
}
