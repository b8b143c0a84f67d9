//! Which CPUs the machine has: the local APIC entries of the ACPI MADT, found from the RSDP
//! the boot loader passed (multiboot2 tag) and read with the `acpi` crate (no allocator:
//! `Madt::entries` only) through `bsp_x86_64::madt`, which checks what the table says.
//!
//! The firmware's tables are the platform's own description, but still allegations: a
//! missing or corrupt table only means "one CPU" (one line, boot goes on), and a device
//! address that fails `madt::check_device` (page-aligned, below the CPU's physical address
//! width, not RAM of the memory map) is one line and is not used.
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use bsp_x86_64::madt::{self, Machine, MadtError, Platform};
use core::fmt;
use core::ptr::NonNull;

#[derive(Debug)]
pub enum DiscoverError {
    NoRsdp,
    Madt(MadtError),
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRsdp => f.write_str("the boot loader passed no ACPI RSDP"),
            Self::Madt(e) => e.fmt(f),
        }
    }
}

/// A zeroed page the handler hands out for a table address outside the direct map: the
/// crate then finds no valid signature there, instead of the nucleus faulting on it.
static OUTSIDE: [u8; 4096] = [0; 4096];

/// Maps ACPI tables through the nucleus' direct map of physical memory, which covers RAM and
/// the ACPI regions of the memory map (`mm::memory`); nothing to unmap.
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let inside = (phys as u64)
            .checked_add(size as u64)
            .is_some_and(|end| end <= crate::mm::memory::direct_map_top());
        let virt = if inside {
            crate::mm::phys_to_virt(phys as u64) as *mut T
        } else if size <= OUTSIDE.len() {
            println!("smp: an ACPI table pointer {phys:#x} is outside memory; read as empty");
            OUTSIDE.as_ptr() as *mut T
        } else {
            // Only a table whose header is inside and whose length runs out of the direct
            // map gets here (the crate maps the header first).
            panic!("acpi: a {size}-byte table at {phys:#x} runs past memory");
        };
        let Some(virt) = NonNull::new(virt) else {
            panic!("acpi: direct map address is null");
        };
        // SAFETY: `virt` maps `size` bytes: the direct map covers `[phys, phys + size)`
        // (checked just above), or it is the zeroed page of that size at most; the crate
        // only reads through it, and the mapping is never unmapped.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
}

/// Reads and checks the MADT; each refused address is one `smp: ` line.
pub fn cpus(rsdp: Option<u64>) -> Result<Platform, DiscoverError> {
    let rsdp = rsdp.ok_or(DiscoverError::NoRsdp)?;
    // SAFETY: `rsdp` is the RSDP copy inside GRUB's structure, which stays reserved and is
    // covered by the direct map; the handler checks every address the tables lead to.
    let tables = unsafe { AcpiTables::from_rsdp(DirectMap, rsdp as usize) }
        .map_err(|e| DiscoverError::Madt(MadtError::Acpi(e)))?;
    let machine = Machine {
        ram: crate::mm::memory::memory_ranges,
        phys_bits: crate::mm::memory::phys_bits(),
    };
    madt::read(&tables, machine, |line| println!("smp: {line}")).map_err(DiscoverError::Madt)
}
