use super::*;
use multiboot2::{BootInformation, BootInformationHeader};

/// A minimal ELF64 executable: one PT_LOAD of `payload` at paddr `paddr` (vaddr
/// `vaddr`), entry `entry`, optionally a multiboot2 header at the payload's start.
fn elf(paddr: u64, vaddr: u64, entry: u64, with_header: bool) -> std::vec::Vec<u8> {
    let mut payload = std::vec::Vec::new();
    if with_header {
        let (magic, arch, len) = (HEADER_MAGIC, 0u32, 24u32);
        let checksum = 0u32.wrapping_sub(magic.wrapping_add(arch).wrapping_add(len));
        for w in [magic, arch, len, checksum] {
            payload.extend_from_slice(&w.to_le_bytes());
        }
        payload.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]); // end tag
    }
    payload.resize(256, 0x90);
    let mut f = vec![0u8; 0x1000];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELF64
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = &mut f[64..120];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&7u32.to_le_bytes());
    ph[8..16].copy_from_slice(&0x800u64.to_le_bytes()); // offset
    ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[32..40].copy_from_slice(&256u64.to_le_bytes()); // filesz
    ph[40..48].copy_from_slice(&0x2000u64.to_le_bytes()); // memsz
    f[0x800..0x900].copy_from_slice(&payload);
    f
}

#[test]
fn a_multiboot2_elf_gives_its_segments_and_physical_entry() {
    let plan = ImagePlan::parse(&elf(0x20_0000, 0x20_0000, 0x20_0010, true)).unwrap();
    assert_eq!(plan.entry, 0x20_0010);
    assert_eq!(
        plan.segments.as_slice(),
        [Segment {
            dest: 0x20_0000,
            src_offset: 0x800,
            file_size: 256,
            mem_size: 0x2000
        }]
    );
    // A higher-half vaddr with a low paddr: the entry is translated.
    let plan = ImagePlan::parse(&elf(
        0x30_0000,
        0xffff_8080_0030_0000,
        0xffff_8080_0030_0020,
        true,
    ));
    assert_eq!(plan.unwrap().entry, 0x30_0020);
}

#[test]
fn hostile_modules_are_refused_with_a_reason() {
    assert_eq!(ImagePlan::parse(b"#!/bin/sh\n"), Err(ImageError::NotElf));
    assert_eq!(
        ImagePlan::parse(&elf(0x20_0000, 0x20_0000, 0x20_0010, false)),
        Err(ImageError::NoMultiboot2Header)
    );
    let mut bad_sum = elf(0x20_0000, 0x20_0000, 0x20_0010, true);
    bad_sum[0x80c] ^= 1;
    assert_eq!(
        ImagePlan::parse(&bad_sum),
        Err(ImageError::NoMultiboot2Header)
    );
    assert_eq!(
        ImagePlan::parse(&elf(0xffff_f000, 0xffff_f000, 0xffff_f010, true)),
        Err(ImageError::SegmentAbove4GiB { index: 0 })
    );
    assert_eq!(
        ImagePlan::parse(&elf(0x20_0000, 0x20_0000, 0x40_0000, true)),
        Err(ImageError::EntryOutsideSegments { entry: 0x40_0000 })
    );
    let mut truncated = elf(0x20_0000, 0x20_0000, 0x20_0010, true);
    truncated.truncate(0x880);
    assert_eq!(
        ImagePlan::parse(&truncated),
        Err(ImageError::SegmentOutsideFile { index: 0 })
    );
    let mut shared_object = elf(0x20_0000, 0x20_0000, 0x20_0010, true);
    shared_object[16] = 3;
    assert_eq!(
        ImagePlan::parse(&shared_object),
        Err(ImageError::NotExecutable)
    );
    assert_eq!(
        ImageError::NoMultiboot2Header.to_string(),
        "no multiboot2 header in its first 32 KiB: not a multiboot2 image"
    );
}

#[test]
fn copies_that_would_overwrite_what_must_survive_are_refused() {
    let plan = ImagePlan::parse(&elf(0x20_0000, 0x20_0000, 0x20_0010, true)).unwrap();
    assert_eq!(
        plan.check_clear_of(&[("a module", 0x20_2000..0x30_0000)]),
        Ok(())
    );
    let err = plan
        .check_clear_of(&[("the kexec image", 0x20_1000..0x20_3000)])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "segment 0 (0x200000-0x202000) would overwrite the kexec image (0x201000-0x203000)"
    );
}

#[test]
fn the_written_information_reads_back_with_the_multiboot2_crate() {
    #[repr(C, align(8))]
    struct Buf([u8; 1024]);
    let mut buf = Buf([0; 1024]);
    let rsdp = [14u32.to_le_bytes(), 28u32.to_le_bytes()].concat();
    let mut rsdp_tag = rsdp.clone();
    rsdp_tag.extend_from_slice(b"RSD PTR \x00BOCHS \x00\x00\x00\x00\x00\x00\x00");
    rsdp_tag.truncate(28);
    let mut w = MbiWriter::new(&mut buf.0);
    w.cmdline(b"exit=qemu kexec-generation=2")
        .module(0x40_0000, 0x40_1000, b"fred-server")
        .module(0x50_0000, 0x50_0100, b"kexec-image")
        .memory_map(
            [
                (0, 0x9f000, memory_type::AVAILABLE),
                (0x10_0000, 0x7f0_0000, memory_type::AVAILABLE),
                (0xfffc_0000, 0x4_0000, memory_type::RESERVED),
            ]
            .into_iter(),
        )
        .raw_tag(&rsdp_tag);
    let len = w.finish().unwrap();
    assert!(len.is_multiple_of(8));
    // SAFETY: `buf` is 8-byte aligned and holds `len` bytes of a finished structure.
    let info = unsafe { BootInformation::load(buf.0.as_ptr().cast::<BootInformationHeader>()) }
        .expect("the multiboot2 crate accepts it");
    assert_eq!(info.total_size(), len);
    assert_eq!(
        info.command_line_tag().unwrap().cmdline().unwrap(),
        "exit=qemu kexec-generation=2"
    );
    let modules: std::vec::Vec<_> = info
        .module_tags()
        .map(|m| {
            (
                m.start_address(),
                m.end_address(),
                m.cmdline().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        modules,
        [
            (0x40_0000, 0x40_1000, "fred-server".to_owned()),
            (0x50_0000, 0x50_0100, "kexec-image".to_owned())
        ]
    );
    let areas: std::vec::Vec<_> = info
        .memory_map_tag()
        .unwrap()
        .memory_areas()
        .iter()
        .map(|a| (a.start_address(), a.size()))
        .collect();
    assert_eq!(
        areas,
        [
            (0, 0x9f000),
            (0x10_0000, 0x7f0_0000),
            (0xfffc_0000, 0x4_0000)
        ]
    );
    assert!(info.rsdp_v1_tag().is_some());
    // Too small a buffer is an error, not a cut structure.
    let mut small = Buf([0; 1024]);
    let mut w = MbiWriter::new(&mut small.0[..32]);
    w.cmdline(&[b'x'; 40]);
    assert_eq!(w.finish(), Err(MbiFull));
}

#[test]
fn the_next_command_line_drops_what_the_handoff_sets() {
    let mut line: Vec<u8, 256> = Vec::new();
    next_cmdline(
        b"exit=qemu kexec=reboot-into kexec-generation=1 selftest=panic crashkernel cpus=4",
        2,
        KexecReason::Request,
        &mut line,
    );
    assert_eq!(
        core::str::from_utf8(&line).unwrap(),
        "exit=qemu crashkernel cpus=4 kexec-generation=2 kexec-reason=request"
    );
    // A full line keeps whole words only and always the hand-off words.
    let long = [b'a'; 100];
    let mut line: Vec<u8, 80> = Vec::new();
    next_cmdline(&long, 3, KexecReason::DoubleFault, &mut line);
    assert_eq!(
        core::str::from_utf8(&line).unwrap(),
        "kexec-generation=3 kexec-reason=double-fault"
    );
}
