use super::*;
use acpi::PhysicalMapping;
use core::ptr::NonNull;
use std::string::String;
use std::vec::Vec as StdVec;

/// "Physical" memory of a test: offsets into one buffer.
#[derive(Clone)]
struct Memory(std::rc::Rc<StdVec<u8>>);

impl AcpiHandler for Memory {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(phys + size <= self.0.len(), "mapping past the test memory");
        let virt = NonNull::new(self.0.as_ptr().wrapping_add(phys) as *mut T).unwrap();
        // SAFETY: `[phys, phys + size)` is inside the buffer, which lives as long as the
        // handler's clones.
        unsafe { PhysicalMapping::new(phys, virt, size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
}

const RSDP_AT: usize = 0x100;
const RSDT_AT: usize = 0x200;
const MADT_AT: usize = 0x400;

fn sdt(signature: &[u8; 4], body: &[u8]) -> StdVec<u8> {
    let mut t = StdVec::new();
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(1); // revision
    t.push(0); // checksum, below
    t.extend_from_slice(b"FVTEST");
    t.extend_from_slice(b"FVTABLE ");
    t.extend_from_slice(&[0; 12]);
    t.extend_from_slice(body);
    t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    t
}

/// RSDP (ACPI 1.0) → RSDT → a MADT of `local_apic` and `entries`.
fn tables(local_apic: u32, entries: &[u8]) -> AcpiTables<Memory> {
    let mut memory = vec![0u8; 0x1000];
    let mut rsdp = StdVec::new();
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(b"FVTEST");
    rsdp.push(0);
    rsdp.extend_from_slice(&(RSDT_AT as u32).to_le_bytes());
    rsdp[8] = 0u8.wrapping_sub(rsdp.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    memory[RSDP_AT..RSDP_AT + rsdp.len()].copy_from_slice(&rsdp);
    let rsdt = sdt(b"RSDT", &(MADT_AT as u32).to_le_bytes());
    memory[RSDT_AT..RSDT_AT + rsdt.len()].copy_from_slice(&rsdt);
    let mut body = StdVec::new();
    body.extend_from_slice(&local_apic.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    body.extend_from_slice(entries);
    let madt = sdt(b"APIC", &body);
    memory[MADT_AT..MADT_AT + madt.len()].copy_from_slice(&madt);
    // SAFETY: the RSDP and everything it leads to is inside the test memory.
    unsafe { AcpiTables::from_rsdp(Memory(std::rc::Rc::new(memory)), RSDP_AT) }.unwrap()
}

fn local_apic(apic_id: u8, flags: u32) -> StdVec<u8> {
    let mut e = vec![0, 8, apic_id, apic_id];
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

fn x2apic(id: u32, flags: u32) -> StdVec<u8> {
    let mut e = vec![9, 16, 0, 0];
    e.extend_from_slice(&id.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&id.to_le_bytes());
    e
}

fn io_apic(id: u8, address: u32) -> StdVec<u8> {
    let mut e = vec![1, 12, id, 0];
    e.extend_from_slice(&address.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e
}

fn override_to(address: u64) -> StdVec<u8> {
    let mut e = vec![5, 12, 0, 0];
    e.extend_from_slice(&address.to_le_bytes());
    e
}

/// 128 MiB of RAM at 0 and 1 GiB above 4 GiB; a 36-bit CPU.
const RAM: [Range<u64>; 2] = [0..0x800_0000, 0x1_0000_0000..0x1_4000_0000];
fn machine() -> Machine<impl Fn() -> std::iter::Cloned<core::slice::Iter<'static, Range<u64>>>> {
    Machine {
        ram: || RAM.iter().cloned(),
        phys_bits: 36,
    }
}

fn read_lines(tables: &AcpiTables<Memory>) -> (Result<Platform, MadtError>, StdVec<String>) {
    let mut lines = StdVec::new();
    let result = read(tables, machine(), |args| lines.push(args.to_string()));
    (result, lines)
}

#[test]
fn a_sound_table_gives_its_cpus_local_apic_and_io_apic() {
    let entries = [
        local_apic(0, 1),
        local_apic(1, 1),
        local_apic(2, 0), // disabled
        local_apic(3, 2), // online capable
        x2apic(1, 1),     // CPU 1 again
        io_apic(7, 0xfec0_0000),
    ]
    .concat();
    let (platform, lines) = read_lines(&tables(0xfee0_0000, &entries));
    let platform = platform.unwrap();
    assert_eq!(platform.apic_ids.as_slice(), &[0, 1, 3]);
    assert_eq!(platform.local_apic, Some(0xfee0_0000));
    assert_eq!(
        platform.io_apics.as_slice(),
        &[IoApic {
            id: 7,
            address: 0xfec0_0000,
            gsi_base: 0
        }]
    );
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn a_local_apic_address_in_ram_is_one_line_and_no_address() {
    let (platform, lines) = read_lines(&tables(0x0010_0000, &local_apic(0, 1)));
    let platform = platform.unwrap();
    assert_eq!(platform.local_apic, None);
    assert_eq!(
        platform.apic_ids.as_slice(),
        &[0],
        "the CPUs are still listed"
    );
    assert_eq!(
        lines,
        [
            "the MADT's local APIC address 0x100000 lies in RAM [0x0, 0x8000000) of the memory map; ignored"
        ]
    );
}

#[test]
fn the_64_bit_override_is_checked_too() {
    let beyond = [local_apic(0, 1), override_to(1 << 40)].concat();
    let (platform, lines) = read_lines(&tables(0xfee0_0000, &beyond));
    assert_eq!(platform.unwrap().local_apic, None);
    assert_eq!(
        lines,
        [
            "the MADT's local APIC address 0x10000000000 is beyond the CPU's 36-bit physical addresses; ignored"
        ]
    );
    let in_high_ram = [local_apic(0, 1), override_to(0x1_2000_0000)].concat();
    let (platform, lines) = read_lines(&tables(0xfee0_0000, &in_high_ram));
    assert_eq!(platform.unwrap().local_apic, None);
    assert_eq!(lines.len(), 1);
    let good = [local_apic(0, 1), override_to(0xfee0_1000)].concat();
    let (platform, lines) = read_lines(&tables(0xfee0_0000, &good));
    assert_eq!(platform.unwrap().local_apic, Some(0xfee0_1000));
    assert!(lines.is_empty());
}

#[test]
fn bad_io_apics_are_left_out_with_a_line_each() {
    let entries = [
        local_apic(0, 1),
        io_apic(1, 0xfec0_0010),
        io_apic(2, 0),
        io_apic(3, 0x0020_0000),
        io_apic(4, 0xfec0_1000),
    ]
    .concat();
    let (platform, lines) = read_lines(&tables(0xfee0_0000, &entries));
    let platform = platform.unwrap();
    assert_eq!(
        platform
            .io_apics
            .iter()
            .map(|io| io.id)
            .collect::<StdVec<_>>(),
        [4]
    );
    assert_eq!(
        lines,
        [
            "the MADT's IO APIC 1 at 0xfec00010 is not page-aligned; left out",
            "the MADT's IO APIC 2 at 0x0 is 0; left out",
            "the MADT's IO APIC 3 at 0x200000 lies in RAM [0x0, 0x8000000) of the memory map; left out",
        ]
    );
}

#[test]
fn corrupt_entry_lengths_refuse_the_table_instead_of_hanging_or_reading_past_it() {
    // A zero length would make the crate's iterator loop for ever.
    let zero = [local_apic(0, 1), vec![0, 0, 0, 0, 0, 0, 0, 0]].concat();
    let (result, _) = read_lines(&tables(0xfee0_0000, &zero));
    assert!(matches!(
        result,
        Err(MadtError::Entries(EntriesError::BadLength {
            offset: 52,
            entry_type: 0,
            length: 0
        }))
    ));
    // An x2APIC entry cut to 8 bytes at the table's end: the crate would read 16.
    let short = [local_apic(0, 1), x2apic(1, 1)[..8].to_vec()].concat();
    let mut short = short;
    short[9] = 8;
    let (result, _) = read_lines(&tables(0xfee0_0000, &short));
    assert!(matches!(
        result,
        Err(MadtError::Entries(EntriesError::BadLength {
            entry_type: 9,
            length: 8,
            ..
        }))
    ));
    // A length running past the table.
    let mut past = local_apic(0, 1);
    past[1] = 200;
    let (result, _) = read_lines(&tables(0xfee0_0000, &past));
    assert!(matches!(
        result,
        Err(MadtError::Entries(EntriesError::BadLength {
            length: 200,
            ..
        }))
    ));
    // One stray byte after the last entry.
    let tail = [local_apic(0, 1), vec![0]].concat();
    let (result, _) = read_lines(&tables(0xfee0_0000, &tail));
    assert!(matches!(
        result,
        Err(MadtError::Entries(EntriesError::Tail { offset: 52 }))
    ));
    // Reserved and OEM types are skipped, at any length from the header up.
    let oem = [vec![0x80, 2], vec![0x20, 3, 0], local_apic(0, 1)].concat();
    let (result, _) = read_lines(&tables(0xfee0_0000, &oem));
    assert_eq!(result.unwrap().apic_ids.as_slice(), &[0]);
}

#[test]
fn device_pages_are_checked_for_alignment_width_and_ram() {
    let ram = || RAM.iter().cloned();
    assert_eq!(check_device(0xfee0_0000, 36, ram()), Ok(()));
    assert_eq!(check_device(0, 36, ram()), Err(DeviceAddressError::Zero));
    assert_eq!(
        check_device(0xfee0_0800, 36, ram()),
        Err(DeviceAddressError::NotPageAligned)
    );
    // The last page below the width passes; the first at it does not.
    assert_eq!(check_device((1 << 36) - 4096, 36, ram()), Ok(()));
    assert_eq!(
        check_device(1 << 36, 36, ram()),
        Err(DeviceAddressError::BeyondAddressWidth { bits: 36 })
    );
    assert_eq!(
        check_device(!0xfff, 64, ram()),
        Err(DeviceAddressError::BeyondAddressWidth { bits: 64 })
    );
    // Touching RAM at either end.
    assert_eq!(check_device(0x800_0000, 36, ram()), Ok(()));
    assert_eq!(
        check_device(0x7ff_f000, 36, ram()),
        Err(DeviceAddressError::InRam {
            start: 0,
            end: 0x800_0000
        })
    );
    assert_eq!(check_device(0xffff_f000, 36, ram()), Ok(()));
    assert!(check_device(0x1_0000_0000, 36, ram()).is_err());
}
