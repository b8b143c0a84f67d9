//! The MADT read and its allegations checked (issue 20 point 1, and its address validation).
//!
//! The `acpi` crate finds and checksums the table; what the table *says* is still firmware's
//! word, and a corrupt table must not hang the boot, read past the table or make the nucleus
//! map a wild device page. So before the crate's entry iterator runs, [`entries_sound`] walks
//! the entries' lengths (the crate's iterator loops forever on a zero length and reads past
//! the table on a short one), and every device address the table names (the local APIC's,
//! its 64-bit override, each IO APIC's) goes through [`check_device`]: page-aligned, inside
//! the CPU's physical address width, not in RAM of the memory map. A refused address is one
//! line and falls back (the local APIC to IA32_APIC_BASE, an IO APIC is left out); a refused
//! entry list is one line and the boot CPU only.
use acpi::madt::{
    EntryHeader, GicInterruptTranslationServiceEntry, GicMsiFrameEntry, GicRedistributorEntry,
    GiccEntry, GicdEntry, InterruptSourceOverrideEntry, IoApicEntry, IoSapicEntry,
    LocalApicAddressOverrideEntry, LocalApicEntry, LocalApicNmiEntry, LocalSapicEntry,
    LocalX2ApicEntry, Madt, MadtEntry, MultiprocessorWakeupEntry, NmiSourceEntry,
    PlatformInterruptSourceEntry, X2ApicNmiEntry,
};
use acpi::{AcpiHandler, AcpiTables};
use core::fmt;
use core::mem::size_of;
use core::ops::Range;
use heapless::Vec;

/// Most local APIC entries kept (more are counted, not started).
pub const MAX_CPUS_FOUND: usize = 64;
/// Most IO APICs kept (more are counted).
pub const MAX_IO_APICS: usize = 8;
/// Bytes of a device register page.
pub const PAGE: u64 = 4096;
/// The physical address width when CPUID has no leaf 0x8000_0008 (SDM vol. 3 §4.1.4).
pub const DEFAULT_PHYS_BITS: u8 = 36;

/// Why a device address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAddressError {
    Zero,
    NotPageAligned,
    BeyondAddressWidth { bits: u8 },
    InRam { start: u64, end: u64 },
}

impl fmt::Display for DeviceAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Zero => f.write_str("is 0"),
            Self::NotPageAligned => f.write_str("is not page-aligned"),
            Self::BeyondAddressWidth { bits } => {
                write!(f, "is beyond the CPU's {bits}-bit physical addresses")
            }
            Self::InRam { start, end } => {
                write!(f, "lies in RAM [{start:#x}, {end:#x}) of the memory map")
            }
        }
    }
}

/// Checks that the device page at `phys` may be mapped: not 0, page-aligned, its whole page
/// below `1 << phys_bits`, and in none of the `ram` ranges (every range of the memory map
/// that is memory, whatever its use: usable, ACPI, NVS, defective).
pub fn check_device(
    phys: u64,
    phys_bits: u8,
    ram: impl IntoIterator<Item = Range<u64>>,
) -> Result<(), DeviceAddressError> {
    if phys == 0 {
        return Err(DeviceAddressError::Zero);
    }
    if !phys.is_multiple_of(PAGE) {
        return Err(DeviceAddressError::NotPageAligned);
    }
    let limit = 1u64.checked_shl(u32::from(phys_bits)).unwrap_or(u64::MAX);
    if phys_bits > 52 || phys.checked_add(PAGE).is_none_or(|end| end > limit) {
        return Err(DeviceAddressError::BeyondAddressWidth { bits: phys_bits });
    }
    let page = phys..phys + PAGE;
    match ram
        .into_iter()
        .find(|r| r.start < page.end && page.start < r.end)
    {
        Some(r) => Err(DeviceAddressError::InRam {
            start: r.start,
            end: r.end,
        }),
        None => Ok(()),
    }
}

/// Why the MADT's entry list is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntriesError {
    /// The table is shorter than its fixed part.
    TableTooShort { length: u32 },
    /// At `offset` (from the table's start) fewer bytes are left than an entry header.
    Tail { offset: usize },
    /// The entry at `offset` says a length below its type's size (or 0), or past the table.
    BadLength {
        offset: usize,
        entry_type: u8,
        length: u8,
    },
}

impl fmt::Display for EntriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TableTooShort { length } => {
                write!(
                    f,
                    "the table is {length} bytes, shorter than its fixed part"
                )
            }
            Self::Tail { offset } => write!(f, "a partial entry header at offset {offset}"),
            Self::BadLength {
                offset,
                entry_type,
                length,
            } => write!(
                f,
                "entry type {entry_type} at offset {offset} says length {length}"
            ),
        }
    }
}

/// The least length of an entry of `entry_type`: the size of the crate's struct for it (the
/// crate reads that many bytes), the header for reserved and OEM types (skipped).
fn least_length(entry_type: u8) -> usize {
    match entry_type {
        0x0 => size_of::<LocalApicEntry>(),
        0x1 => size_of::<IoApicEntry>(),
        0x2 => size_of::<InterruptSourceOverrideEntry>(),
        0x3 => size_of::<NmiSourceEntry>(),
        0x4 => size_of::<LocalApicNmiEntry>(),
        0x5 => size_of::<LocalApicAddressOverrideEntry>(),
        0x6 => size_of::<IoSapicEntry>(),
        0x7 => size_of::<LocalSapicEntry>(),
        0x8 => size_of::<PlatformInterruptSourceEntry>(),
        0x9 => size_of::<LocalX2ApicEntry>(),
        0xa => size_of::<X2ApicNmiEntry>(),
        0xb => size_of::<GiccEntry>(),
        0xc => size_of::<GicdEntry>(),
        0xd => size_of::<GicMsiFrameEntry>(),
        0xe => size_of::<GicRedistributorEntry>(),
        0xf => size_of::<GicInterruptTranslationServiceEntry>(),
        0x10 => size_of::<MultiprocessorWakeupEntry>(),
        _ => size_of::<EntryHeader>(),
    }
}

/// Checks the whole MADT's bytes (`table`, header included, as long as its `length` says):
/// every entry's length covers its type and stays inside the table, so the crate's
/// iterator neither loops nor reads past the end.
pub fn entries_sound(table: &[u8]) -> Result<(), EntriesError> {
    let fixed = size_of::<Madt>();
    if table.len() < fixed {
        return Err(EntriesError::TableTooShort {
            length: table.len() as u32,
        });
    }
    let mut offset = fixed;
    while offset < table.len() {
        let &[entry_type, length] = table.get(offset..offset + 2).unwrap_or(&[]) else {
            return Err(EntriesError::Tail { offset });
        };
        let fits = offset + usize::from(length) <= table.len();
        if usize::from(length) < least_length(entry_type) || !fits {
            return Err(EntriesError::BadLength {
                offset,
                entry_type,
                length,
            });
        }
        offset += usize::from(length);
    }
    Ok(())
}

/// An IO APIC the MADT lists, its address checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

/// What the MADT says, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// The usable CPUs' APIC ids (enabled or online capable), in table order, no repeats.
    pub apic_ids: Vec<u32, MAX_CPUS_FOUND>,
    /// Usable CPUs past [`MAX_CPUS_FOUND`].
    pub cpus_dropped: usize,
    /// The local APIC page (the 64-bit override if there is one); `None` if refused.
    pub local_apic: Option<u64>,
    /// The IO APICs whose addresses pass.
    pub io_apics: Vec<IoApic, MAX_IO_APICS>,
    /// IO APICs past [`MAX_IO_APICS`].
    pub io_apics_dropped: usize,
}

/// Why no CPU list came out of the tables.
#[derive(Debug)]
pub enum MadtError {
    Acpi(acpi::AcpiError),
    Entries(EntriesError),
}

impl fmt::Display for MadtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "ACPI: {e:?}"),
            Self::Entries(e) => write!(f, "the MADT is corrupt: {e}"),
        }
    }
}

/// What the checks need to know of the machine.
#[derive(Clone, Copy)]
pub struct Machine<R> {
    /// Every memory range of the memory map, each time it is called (device pages must not
    /// lie in one).
    pub ram: R,
    /// CPUID.8000_0008:EAX bits 7:0.
    pub phys_bits: u8,
}

/// Reads the MADT of `tables` and checks it on `machine`; each refused address is one line to
/// `complain` (its text, without a prefix) and leaves that address out.
pub fn read<H: AcpiHandler, R: Fn() -> I, I: Iterator<Item = Range<u64>>>(
    tables: &AcpiTables<H>,
    machine: Machine<R>,
    mut complain: impl FnMut(fmt::Arguments<'_>),
) -> Result<Platform, MadtError> {
    let madt = tables.find_table::<Madt>().map_err(MadtError::Acpi)?;
    let length = madt.get().header.length as usize;
    if length < size_of::<Madt>() {
        return Err(MadtError::Entries(EntriesError::TableTooShort {
            length: length as u32,
        }));
    }
    // SAFETY: the crate mapped and checksummed the whole table: `length` bytes from its start.
    let bytes =
        unsafe { core::slice::from_raw_parts(madt.virtual_start().as_ptr().cast::<u8>(), length) };
    entries_sound(bytes).map_err(MadtError::Entries)?;

    let mut platform = Platform::default();
    let mut local_apic = u64::from(madt.get().local_apic_address);
    let mut io_apics = Vec::<IoApic, MAX_IO_APICS>::new();
    // Bit 0: enabled; bit 1: online capable (ACPI 6.3 §5.2.12.2).
    let usable = |flags: u32| flags & 0b11 != 0;
    for entry in madt.get().entries() {
        // Copies: the entries are packed.
        let (id, flags) = match entry {
            MadtEntry::LocalApic(e) => (u32::from(e.apic_id), e.flags),
            MadtEntry::LocalX2Apic(e) => (e.x2apic_id, e.flags),
            MadtEntry::LocalApicAddressOverride(e) => {
                local_apic = e.local_apic_address;
                continue;
            }
            MadtEntry::IoApic(e) => {
                let io = IoApic {
                    id: e.io_apic_id,
                    address: u64::from(e.io_apic_address),
                    gsi_base: e.global_system_interrupt_base,
                };
                if io_apics.push(io).is_err() {
                    platform.io_apics_dropped += 1;
                }
                continue;
            }
            _ => continue,
        };
        if !usable(flags) || platform.apic_ids.contains(&id) {
            continue; // off, or the same CPU listed as xAPIC and x2APIC
        }
        if platform.apic_ids.push(id).is_err() {
            platform.cpus_dropped += 1;
        }
    }
    match check_device(local_apic, machine.phys_bits, (machine.ram)()) {
        Ok(()) => platform.local_apic = Some(local_apic),
        Err(e) => complain(format_args!(
            "the MADT's local APIC address {local_apic:#x} {e}; ignored"
        )),
    }
    for io in io_apics {
        match check_device(io.address, machine.phys_bits, (machine.ram)()) {
            // Cannot overflow: at most MAX_IO_APICS were kept.
            Ok(()) => {
                let _ = platform.io_apics.push(io);
            }
            Err(e) => complain(format_args!(
                "the MADT's IO APIC {} at {:#x} {e}; left out",
                io.id, io.address
            )),
        }
    }
    Ok(platform)
}

#[cfg(test)]
mod tests;
