//! Which CPUs the machine has: the local APIC entries of the ACPI MADT, found from the RSDP
//! the boot loader passed (multiboot2 tag) and read with the `acpi` crate (no allocator:
//! `Madt::entries` only).
//!
//! The firmware's tables are the platform's own description, not input from a server or
//! guest; still, a missing or malformed table only means "one CPU" (one line, boot goes on).
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::fmt;
use core::ptr::NonNull;
use heapless::Vec;

/// Most local APIC entries kept (more are counted, not started).
pub const MAX_FOUND: usize = 64;

/// The CPUs the MADT lists as usable (enabled or online-capable), in table order.
pub struct Found {
    pub apic_ids: Vec<u32, MAX_FOUND>,
    /// Usable entries past [`MAX_FOUND`].
    pub dropped: usize,
}

#[derive(Debug)]
pub enum DiscoverError {
    NoRsdp,
    Acpi(acpi::AcpiError),
}

impl fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRsdp => f.write_str("the boot loader passed no ACPI RSDP"),
            Self::Acpi(e) => write!(f, "ACPI: {e:?}"),
        }
    }
}

/// Maps ACPI tables through the nucleus' direct map of physical memory, which covers RAM and
/// the ACPI regions of the memory map (`mm::memory`); nothing to unmap.
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = crate::mm::phys_to_virt(phys as u64) as *mut T;
        let Some(virt) = NonNull::new(virt) else {
            panic!("acpi: direct map address is null");
        };
        // SAFETY: the direct map maps `[phys, phys + size)` (the caller's contract: an ACPI
        // table in RAM or an ACPI region); the mapping is never unmapped.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
}

/// Reads the MADT's local APIC and x2APIC entries.
pub fn cpus(rsdp: Option<u64>) -> Result<Found, DiscoverError> {
    let rsdp = rsdp.ok_or(DiscoverError::NoRsdp)?;
    // SAFETY: `rsdp` is the RSDP copy inside GRUB's structure, which stays reserved and is
    // covered by the direct map; the tables it leads to are firmware tables in RAM or ACPI
    // regions of the memory map, which the direct map covers too.
    let tables =
        unsafe { AcpiTables::from_rsdp(DirectMap, rsdp as usize) }.map_err(DiscoverError::Acpi)?;
    let madt = tables.find_table::<Madt>().map_err(DiscoverError::Acpi)?;
    let mut found = Found {
        apic_ids: Vec::new(),
        dropped: 0,
    };
    // Bit 0: enabled; bit 1: online capable (ACPI 6.3 §5.2.12.2).
    let usable = |flags: u32| flags & 0b11 != 0;
    for entry in madt.get().entries() {
        // Copies: the entries are packed.
        let (id, flags) = match entry {
            MadtEntry::LocalApic(e) => (u32::from(e.apic_id), e.flags),
            MadtEntry::LocalX2Apic(e) => (e.x2apic_id, e.flags),
            _ => continue,
        };
        if !usable(flags) {
            continue;
        }
        if found.apic_ids.contains(&id) {
            continue; // the same CPU listed as xAPIC and x2APIC
        }
        if found.apic_ids.push(id).is_err() {
            found.dropped += 1;
        }
    }
    Ok(found)
}
