//! Host tests of the whole builder over synthetic ELF images and a fake frame writer.

use std::collections::HashMap;
use std::vec::Vec;

use proptest::prelude::*;
use xen_abi::elfnote::XenNote;

use super::notes::tests::{note, xen};
use super::*;

// --- a synthetic ELF64 writer -------------------------------------------------------------

#[derive(Clone)]
struct Seg {
    p_type: u32,
    flags: u32,
    paddr: u64,
    vaddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

fn load(paddr: u64, data: Vec<u8>, memsz: u64) -> Seg {
    Seg {
        p_type: elf::abi::PT_LOAD,
        flags: elf::abi::PF_R | elf::abi::PF_X,
        paddr,
        vaddr: paddr,
        memsz,
        data,
    }
}

fn note_seg(data: Vec<u8>) -> Seg {
    Seg {
        p_type: elf::abi::PT_NOTE,
        flags: elf::abi::PF_R,
        paddr: 0,
        vaddr: 0,
        memsz: data.len() as u64,
        data,
    }
}

struct ElfSpec {
    class: u8,
    data: u8,
    e_type: u16,
    machine: u16,
    entry: u64,
    segs: Vec<Seg>,
    /// Contents of one SHT_NOTE section, if any.
    note_section: Option<Vec<u8>>,
}

impl ElfSpec {
    fn new(entry: u64, segs: Vec<Seg>) -> Self {
        Self {
            class: 2,
            data: 1,
            e_type: elf::abi::ET_EXEC,
            machine: elf::abi::EM_X86_64,
            entry,
            segs,
            note_section: None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let phoff = 64usize;
        let mut offset = phoff + 56 * self.segs.len();
        let mut body = Vec::new();
        let mut offsets = Vec::new();
        for seg in &self.segs {
            offset = offset.next_multiple_of(16);
            body.resize(offset - phoff - 56 * self.segs.len(), 0);
            offsets.push(offset);
            body.extend_from_slice(&seg.data);
            offset += seg.data.len();
        }
        let (shoff, shnum, section_at) = match &self.note_section {
            Some(data) => {
                let at = offset.next_multiple_of(16);
                body.resize(at - phoff - 56 * self.segs.len(), 0);
                body.extend_from_slice(data);
                let shoff = (at + data.len()).next_multiple_of(16);
                (shoff, 2u16, at)
            }
            None => (0, 0, 0),
        };
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = self.class;
        out[5] = self.data;
        out[6] = 1;
        out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        out[18..20].copy_from_slice(&self.machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&self.entry.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(self.segs.len() as u16).to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&shnum.to_le_bytes());
        for (seg, &at) in self.segs.iter().zip(&offsets) {
            let mut ph = [0u8; 56];
            ph[0..4].copy_from_slice(&seg.p_type.to_le_bytes());
            ph[4..8].copy_from_slice(&seg.flags.to_le_bytes());
            ph[8..16].copy_from_slice(&(at as u64).to_le_bytes());
            ph[16..24].copy_from_slice(&seg.vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&seg.paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(seg.data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&seg.memsz.to_le_bytes());
            ph[48..56].copy_from_slice(&4096u64.to_le_bytes());
            out.extend_from_slice(&ph);
        }
        out.extend_from_slice(&body);
        if let Some(data) = &self.note_section {
            out.resize(shoff, 0);
            out.extend_from_slice(&[0u8; 64]);
            let mut sh = [0u8; 64];
            sh[4..8].copy_from_slice(&elf::abi::SHT_NOTE.to_le_bytes());
            sh[24..32].copy_from_slice(&(section_at as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            sh[48..56].copy_from_slice(&4u64.to_le_bytes());
            out.extend_from_slice(&sh);
        }
        out
    }
}

/// The Xen notes `list` names, in its order.
fn xen_notes(list: &[(XenNote, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|&(kind, desc)| xen(kind, desc))
        .collect()
}

fn standard_notes() -> Vec<u8> {
    xen_notes(&[
        (XenNote::GuestOs, b"fredvisor-test\0"),
        (XenNote::XenVersion, b"xen-3.0\0"),
        (XenNote::Loader, b"generic\0"),
        (XenNote::VirtBase, &0u64.to_le_bytes()),
        (XenNote::HypercallPage, &0x2000u64.to_le_bytes()),
    ])
}

/// The standard notes, then `extra`'s 8-byte notes.
fn standard_notes_and(extra: &[(XenNote, u64)]) -> Vec<u8> {
    let mut notes = standard_notes();
    for &(kind, value) in extra {
        notes.extend(xen(kind, &value.to_le_bytes()));
    }
    notes
}

/// The standard notes without their last, HYPERCALL_PAGE.
fn standard_notes_without_hypercall_page() -> Vec<u8> {
    let mut notes = standard_notes();
    notes.truncate(notes.len() - xen(XenNote::HypercallPage, &[0; 8]).len());
    notes
}

/// Text at 0x1000 (0x1800 file bytes in 0x2000, holding the hypercall page at 0x2000), data
/// at 0x3000 (0x10 bytes, then 0x2ff0 of bss): the image ends at 0x6000.
fn standard_segments() -> Vec<Seg> {
    let text: Vec<u8> = (0..0x1800u32).map(|i| (i % 251) as u8 + 1).collect();
    vec![
        load(0x1000, text, 0x2000),
        Seg {
            flags: elf::abi::PF_R | elf::abi::PF_W,
            ..load(0x3000, vec![0xaa; 0x10], 0x3000)
        },
        note_seg(standard_notes()),
    ]
}

fn standard_elf() -> Vec<u8> {
    ElfSpec::new(0x1010, standard_segments()).bytes()
}

fn with_notes(notes: Vec<u8>) -> Vec<u8> {
    let mut segs = standard_segments();
    segs[2] = note_seg(notes);
    ElfSpec::new(0x1010, segs).bytes()
}

// --- a fake frame writer ------------------------------------------------------------------

#[derive(Default)]
struct FakeMemory {
    frames: HashMap<u64, Box<[u8; 4096]>>,
}

impl FrameWriter for FakeMemory {
    fn write(&mut self, mfn: Mfn, offset: usize, bytes: &[u8]) -> Result<(), FrameWriteError> {
        assert!(offset + bytes.len() <= 4096, "write across a page");
        let frame = self
            .frames
            .entry(mfn.0)
            .or_insert_with(|| Box::new([0; 4096]));
        frame[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

impl FakeMemory {
    fn frame(&self, mfn: Mfn) -> [u8; 4096] {
        self.frames.get(&mfn.0).map_or([0; 4096], |f| **f)
    }

    fn u64_at(&self, mfn: Mfn, index: usize) -> u64 {
        let frame = self.frame(mfn);
        u64::from_le_bytes(frame[index * 8..index * 8 + 8].try_into().unwrap())
    }

    /// Walks the 4-level tables at `cr3` the way the CPU would.
    fn translate(&self, cr3: u64, va: u64) -> Option<(u64, u64)> {
        let mut table = cr3 >> 12;
        let mut flags = 0;
        for shift in [39, 30, 21, 12] {
            let entry = self.u64_at(Mfn(table), ((va >> shift) & 511) as usize);
            if entry & 1 == 0 {
                return None;
            }
            flags = entry & 0xfff;
            table = (entry & 0x000f_ffff_ffff_f000) >> 12;
        }
        Some((table, flags))
    }
}

/// Frames that are clearly not the pfns: the builder must translate every one.
fn p2m(nr_pages: u64) -> Vec<Mfn> {
    (0..nr_pages).map(|pfn| Mfn(0x4_0000 + 3 * pfn)).collect()
}

const SHARED_INFO: Mfn = Mfn(0x3_ffff);

/// A domain of the pages `p2m` lists, with shared_info `SHARED_INFO`.
fn domain_frames(p2m: &[Mfn]) -> DomainFrames<'_> {
    DomainFrames {
        p2m,
        shared_info: SHARED_INFO,
    }
}

/// One L4, L3 and L2 table and `l1` L1s.
fn tables(l1: u64) -> TableCounts {
    TableCounts {
        l4: 1,
        l3: 1,
        l2: 1,
        l1,
    }
}

fn build_standard(nr_pages: u64) -> (BuiltDomain, FakeMemory, Vec<Mfn>) {
    let bytes = standard_elf();
    let image = GuestImage::parse(&bytes).unwrap();
    let layout = Layout::plan(&image, nr_pages, 1 << 20).unwrap();
    let p2m = p2m(nr_pages);
    let frames = domain_frames(&p2m);
    let mut memory = FakeMemory::default();
    let built = build(&image, &layout, &frames, b"hello=1 world", &mut memory).unwrap();
    (built, memory, p2m)
}

// --- parsing ------------------------------------------------------------------------------

#[test]
fn parses_the_standard_image() {
    let bytes = standard_elf();
    let image = GuestImage::parse(&bytes).unwrap();
    assert_eq!(image.virt_base, 0);
    assert_eq!((image.virt_kstart, image.virt_kend), (0x1000, 0x6000));
    assert_eq!(image.entry, 0x1010);
    assert_eq!(image.image_pages(), 6);
    assert_eq!(image.notes.hypercall_page, Some(0x2000));
    assert_eq!(image.notes.guest_os, Some(&b"fredvisor-test"[..]));
    assert_eq!(image.notes.count, 5);
    let segments: Vec<_> = image
        .segments
        .iter()
        .map(|s| (s.pseudo_phys, s.memsz, s.data.len()))
        .collect();
    assert_eq!(segments, [(0x1000, 0x2000, 0x1800), (0x3000, 0x3000, 0x10)]);
}

#[test]
fn entry_note_overrides_e_entry_and_sections_are_the_fallback() {
    let mut notes = standard_notes();
    notes.extend(xen(XenNote::Entry, &0x1234u32.to_le_bytes()));
    let image_bytes = with_notes(notes.clone());
    assert_eq!(GuestImage::parse(&image_bytes).unwrap().entry, 0x1234);

    // No PT_NOTE: the notes are found in the SHT_NOTE section.
    let mut spec = ElfSpec::new(0x1010, standard_segments()[..2].to_vec());
    spec.note_section = Some(notes);
    let image_bytes = spec.bytes();
    let image = GuestImage::parse(&image_bytes).unwrap();
    assert_eq!(image.entry, 0x1234);
    assert_eq!(image.notes.count, 6);
}

#[test]
fn linux_style_addresses() {
    // Linux: VIRT_BASE 0xffffffff80000000, PADDR_OFFSET 0, segments at physical 16 MiB and
    // one with p_vaddr 0 (per-cpu): the physical address is what counts.
    let base = 0xffff_ffff_8000_0000u64;
    let notes = xen_notes(&[
        (XenNote::GuestOs, b"linux\0"),
        (XenNote::XenVersion, b"xen-3.0\0"),
        (XenNote::VirtBase, &base.to_le_bytes()),
        (XenNote::PaddrOffset, &0u64.to_le_bytes()),
        (XenNote::Entry, &(base + 0x100_0000).to_le_bytes()),
        (XenNote::InitP2m, &0x80_0000_0000u64.to_le_bytes()),
    ]);
    let percpu = Seg {
        vaddr: 0,
        ..load(0x110_0000, vec![1; 16], 0x1000)
    };
    let segs = vec![
        load(0x100_0000, vec![0x90; 64], 0x10_0000),
        percpu,
        note_seg(notes),
    ];
    let bytes = ElfSpec::new(0, segs).bytes();
    let image = GuestImage::parse(&bytes).unwrap();
    assert_eq!(image.virt_kstart, base + 0x100_0000);
    assert_eq!(image.virt_kend, base + 0x110_1000);
    assert_eq!(image.segments[1].pseudo_phys, 0x110_0000);
    assert_eq!(image.image_pages(), 0x1101);
    // 64 MiB: the region is at -2 GiB and needs 16 MiB + 4 KiB of image plus the rest.
    let layout = Layout::plan(&image, 16384, 16384).unwrap();
    assert_eq!(layout.va(0), base);
    assert_eq!(layout.p2m, 0x1101..0x1101 + 32);
    // Region: image 0x1101 + p2m 32 + 3 + tables + stack + slack → 20 MiB, 10 L1s.
    assert_eq!(layout.v_end, 5120);
    assert_eq!(layout.tables, tables(10));

    let p2m = p2m(16384);
    let frames = domain_frames(&p2m);
    let mut memory = FakeMemory::default();
    let built = build(&image, &layout, &frames, b"console=hvc0", &mut memory).unwrap();
    assert_eq!(built.registers.rip, base + 0x100_0000);
    assert_eq!(built.registers.rsi, base + (0x1101 + 32) * 4096);
    assert_eq!(
        built.start_info.pt_base,
        base + layout.page_tables.start * 4096
    );
    let cr3 = built.registers.cr3;
    // Slot 511, then 510 of the L3: virt == virt_base + pfn << 12 over the whole region.
    assert_eq!(
        memory.u64_at(p2m[layout.page_tables.start as usize], 511) & 0xfff,
        0x67
    );
    for pfn in (0..layout.v_end).step_by(97).chain([layout.v_end - 1]) {
        assert_eq!(
            memory.translate(cr3, base + pfn * 4096).map(|(mfn, _)| mfn),
            Some(p2m[pfn as usize].0),
            "pfn {pfn}"
        );
    }
    assert_eq!(memory.translate(cr3, base + layout.v_end * 4096), None);
    assert_eq!(memory.translate(cr3, 0), None);
    // The per-cpu segment landed at its physical address.
    assert_eq!(&memory.frame(p2m[0x1100])[..16], &[1; 16]);
}

fn rejection(bytes: &[u8]) -> String {
    GuestImage::parse(bytes).unwrap_err().to_string()
}

#[test]
fn rejections_name_the_reason() {
    assert_eq!(rejection(b""), "not an ELF image (no \\x7fELF magic)");
    assert_eq!(
        rejection(b"#!/bin/sh\necho hi\n"),
        "not an ELF image (no \\x7fELF magic)"
    );
    assert_eq!(
        rejection(&standard_elf()[..40]),
        "malformed ELF image (a table lies outside the file)"
    );
    let variants = [
        (
            ElfSpec {
                class: 1,
                ..ElfSpec::new(0x1010, vec![])
            },
            // An ELF32 header is shorter; the class is what the builder reports.
            None,
        ),
        (
            ElfSpec {
                machine: 3,
                ..ElfSpec::new(0x1010, standard_segments())
            },
            Some("not a 64-bit x86-64 image (ELF64, little-endian, e_machine 3)"),
        ),
        (
            ElfSpec {
                e_type: elf::abi::ET_DYN,
                ..ElfSpec::new(0x1010, standard_segments())
            },
            Some("not an executable ELF image (e_type 3)"),
        ),
        (
            ElfSpec::new(0x1010, standard_segments()[..2].to_vec()),
            Some("no Xen ELF notes (not a Xen PV guest)"),
        ),
        (
            ElfSpec::new(0x6000, standard_segments()),
            Some("entry 0x6000 is outside the image [0x1000, 0x6000)"),
        ),
        (
            ElfSpec::new(0xfff, standard_segments()),
            Some("entry 0xfff is outside the image [0x1000, 0x6000)"),
        ),
    ];
    for (spec, expected) in variants {
        let text = rejection(&spec.bytes());
        match expected {
            Some(expected) => assert_eq!(text, expected),
            None => assert!(
                text.starts_with("not a 64-bit x86-64 image (ELF32"),
                "{text}"
            ),
        }
    }
    let big_endian = ElfSpec {
        data: 2,
        ..ElfSpec::new(0x1010, vec![])
    };
    assert!(rejection(&big_endian.bytes()).starts_with("not a 64-bit x86-64 image"));
}

#[test]
fn note_rejections_follow_xens_checks() {
    let notes = xen_notes(&[
        (XenNote::GuestOs, b"fredvisor-test\0"),
        (XenNote::Loader, b"generic\0"),
    ]);
    assert_eq!(rejection(&with_notes(notes.clone())), "no XEN_VERSION note");

    let mut wrong = notes.clone();
    wrong.extend(xen(XenNote::XenVersion, b"xen-4.0\0"));
    assert_eq!(
        rejection(&with_notes(wrong)),
        "XEN_VERSION note is \"xen-4.0\", not xen-3.0"
    );

    let no_loader = xen_notes(&[
        (XenNote::GuestOs, b"plan9\0"),
        (XenNote::XenVersion, b"xen-3.0\0"),
    ]);
    assert_eq!(
        rejection(&with_notes(no_loader)),
        "LOADER note is missing, not \"generic\", and GUEST_OS is \"plan9\", not \"linux\""
    );
    let bad_loader = xen_notes(&[
        (XenNote::Loader, b"elf\x01\0"),
        (XenNote::XenVersion, b"xen-3.0\0"),
    ]);
    assert_eq!(
        rejection(&with_notes(bad_loader)),
        "LOADER note is \"elf\\x01\", not \"generic\", and GUEST_OS is missing, not \"linux\""
    );

    // GUEST_OS linux needs no LOADER; a longer version string is fine.
    let linux = xen_notes(&[
        (XenNote::GuestOs, b"linux\0"),
        (XenNote::XenVersion, b"xen-3.0-unstable\0"),
    ]);
    assert!(GuestImage::parse(&with_notes(linux)).is_ok());

    // Only "Xen" notes count.
    let foreign = note(b"GNU\0", 5, b"xen-3.0\0");
    assert_eq!(
        rejection(&with_notes(foreign)),
        "no Xen ELF notes (not a Xen PV guest)"
    );
}

#[test]
fn address_rejections() {
    // VIRT_BASE 0x1000 with PADDR_OFFSET 0x2000 puts the image at VA 0..0x5000.
    let notes = standard_notes_and(&[
        (XenNote::VirtBase, 0x1000),
        (XenNote::PaddrOffset, 0x2000),
        (XenNote::Entry, 0x10),
    ]);
    assert_eq!(
        rejection(&with_notes(notes)),
        "VIRT_BASE 0x1000 lies above the image start 0x0"
    );
    // VIRT_BASE alone moves the image: entry 0x1010 is now below it.
    let notes = standard_notes_and(&[(XenNote::VirtBase, 0x2000)]);
    assert_eq!(
        rejection(&with_notes(notes)),
        "entry 0x1010 is outside the image [0x3000, 0x8000)"
    );
    let notes = standard_notes_and(&[(XenNote::HypercallPage, 0x6000)]);
    assert_eq!(
        rejection(&with_notes(notes)),
        "HYPERCALL_PAGE 0x6000 is outside the image"
    );
    let notes = standard_notes_and(&[(XenNote::InitP2m, 0x3000)]);
    assert_eq!(
        rejection(&with_notes(notes)),
        "INIT_P2M 0x3000 lies inside the image"
    );

    let mut segs = standard_segments();
    segs[0].memsz = 0x100; // smaller than the file bytes
    assert_eq!(
        rejection(&ElfSpec::new(0x1010, segs).bytes()),
        "PT_LOAD segment 0 is malformed (outside the file, or filesz > memsz)"
    );
    let mut segs = standard_segments();
    segs[1].paddr = u64::MAX - 0x10;
    assert_eq!(
        rejection(&ElfSpec::new(0x1010, segs).bytes()),
        "PT_LOAD segment 1 is malformed (outside the file, or filesz > memsz)"
    );
    // A PT_LOAD without any access is not loaded (Xen's elf_phdr_is_loadable).
    let mut segs = standard_segments();
    segs.insert(
        0,
        Seg {
            flags: 0,
            ..load(0x100_0000, vec![1], 1)
        },
    );
    assert_eq!(
        GuestImage::parse(&ElfSpec::new(0x1010, segs).bytes())
            .unwrap()
            .virt_kend,
        0x6000
    );
    let only_notes = ElfSpec::new(0x1010, vec![note_seg(standard_notes())]);
    assert_eq!(
        rejection(&only_notes.bytes()),
        "no loadable PT_LOAD segment"
    );
}

#[test]
fn memory_rejections() {
    let bytes = standard_elf();
    let image = GuestImage::parse(&bytes).unwrap();
    assert_eq!(
        Layout::plan(&image, 16384, 4096).unwrap_err().to_string(),
        "mem=64 MiB is more than the 16 MiB free"
    );
    // 4 pages cannot hold a segment that ends at 0x6000.
    assert_eq!(
        Layout::plan(&image, 4, 4096).unwrap_err().to_string(),
        "PT_LOAD segment 1 at [0x3000, 0x6000) is outside the guest's 0 MiB"
    );
    // 512 pages (2 MiB) hold the image but not the 4 MiB region.
    assert_eq!(
        Layout::plan(&image, 512, 4096).unwrap_err().to_string(),
        "start-of-day layout needs 1024 pages, the guest has 512 (2 MiB)"
    );
    assert!(Layout::plan(&image, 1024, 1024).is_ok());

    let high = ElfSpec::new(
        0x1_0000_0010,
        vec![
            load(0x1_0000_0000, vec![1; 32], 0x1000),
            note_seg(standard_notes()),
        ],
    );
    let notes = standard_notes_without_hypercall_page();
    let high = ElfSpec {
        segs: vec![high.segs[0].clone(), note_seg(notes)],
        ..high
    };
    let bytes = high.bytes();
    let image = GuestImage::parse(&bytes).unwrap();
    assert_eq!(
        Layout::plan(&image, 4096, 4096).unwrap_err().to_string(),
        "PT_LOAD segment 0 at [0x100000000, 0x100001000) is outside the guest's 16 MiB"
    );
}

// --- layout and build ---------------------------------------------------------------------

#[test]
fn layout_of_a_16_mib_domain() {
    let (built, _, _) = build_standard(4096);
    let layout = &built.layout;
    assert_eq!(
        *layout,
        Layout {
            virt_base: 0,
            nr_pages: 4096,
            image: 0..6,
            p2m: 6..14,
            start_info: Pfn(14),
            store: Pfn(15),
            console: Pfn(16),
            page_tables: 17..22,
            tables: tables(2),
            boot_stack: Pfn(22),
            v_end: 1024,
        }
    );
}

#[test]
fn start_info_and_registers_are_exact() {
    let (built, memory, p2m) = build_standard(4096);
    let info = &built.start_info;
    assert_eq!(info.magic_str(), b"xen-3.0-x86_64");
    assert_eq!(info.nr_pages, 4096);
    assert_eq!(info.shared_info, 0x3fff_f000);
    assert_eq!(info.flags, 0);
    assert_eq!(info.store_mfn, p2m[15].0);
    assert_eq!(info.console.mfn, p2m[16].0);
    assert_eq!(info.pt_base, 0x11000);
    assert_eq!(info.nr_pt_frames, 5);
    assert_eq!(info.mfn_list, 0x6000);
    assert_eq!((info.mod_start, info.mod_len), (0, 0));
    assert_eq!(info.cmdline(), b"hello=1 world");
    // What the guest reads at its rsi is exactly that.
    assert_eq!(memory.frame(p2m[14])[..StartInfo::SIZE], info.to_bytes());

    assert_eq!(
        built.registers,
        StartRegisters {
            rip: 0x1010,
            rsp: 0x17000,
            rsi: 0xe000,
            rflags: 0x200,
            cs: 0xe033,
            ss: 0xe02b,
            data: 0,
            cr3: p2m[17].addr(),
            kernel_ss: 0xe02b,
            kernel_sp: 0x17000,
        }
    );
    assert_eq!(
        built.started(1).to_string(),
        "started (domain 1, 16 MiB, entry 0x1010, start_info 0xe000)"
    );
    let vcpu = built.registers.vcpu();
    assert_eq!(vcpu.frame.gprs[ipc::message::Gpr::Rsi as usize], 0xe000);
    assert_eq!(vcpu.frame.gprs.iter().filter(|&&r| r != 0).count(), 1);
    assert_eq!(vcpu.upcall_mask, 1);
    assert_eq!(vcpu.mode, crate::guests::GuestMode::Kernel);
    let public = vcpu.public_registers();
    assert_eq!(
        (public.rip, public.cs, public.ss, public.rsp),
        (0x1010, 0xe033, 0xe02b, 0x17000)
    );
}

#[test]
fn page_tables_map_the_region_at_pfn_times_4k() {
    let (built, memory, p2m) = build_standard(4096);
    let cr3 = built.registers.cr3;
    // Exact top-level entries.
    assert_eq!(memory.u64_at(p2m[17], 0), p2m[18].addr() | 0x67);
    assert!((1..512).all(|i| memory.u64_at(p2m[17], i) == 0));
    assert_eq!(memory.u64_at(p2m[18], 0), p2m[19].addr() | 0x67);
    assert_eq!(memory.u64_at(p2m[19], 0), p2m[20].addr() | 0x67);
    assert_eq!(memory.u64_at(p2m[19], 1), p2m[21].addr() | 0x67);
    assert!((2..512).all(|i| memory.u64_at(p2m[19], i) == 0));
    for pfn in 0..1024u64 {
        let expected_flags = if (17..22).contains(&pfn) { 0x21 } else { 0x23 };
        assert_eq!(
            memory.translate(cr3, pfn << 12),
            Some((p2m[pfn as usize].0, expected_flags)),
            "pfn {pfn}"
        );
    }
    // Nothing past v_end is mapped, nor anything in another slot.
    assert_eq!(memory.translate(cr3, 1024 << 12), None);
    assert_eq!(memory.translate(cr3, 0xffff_8000_0000_0000), None);
}

#[test]
fn image_p2m_hypercall_page_and_shared_info_are_written() {
    let (_, memory, p2m) = build_standard(4096);
    // Text: the file bytes at pfn 1, the hypercall page (pfn 2) replaced by the stubs.
    let text = memory.frame(p2m[1]);
    assert_eq!(&text[..4], &[1, 2, 3, 4]);
    assert_eq!(text[4095], (4095 % 251) as u8 + 1);
    assert_eq!(
        memory.frame(p2m[2]),
        super::hypercall_page::contents(),
        "the hypercall page"
    );
    // Data and its bss.
    let data = memory.frame(p2m[3]);
    assert!(data[..0x10].iter().all(|&b| b == 0xaa));
    assert!(data[0x10..].iter().all(|&b| b == 0));
    // p2m list: 4096 entries over pfns 6..14.
    for pfn in [0usize, 1, 511, 512, 4095] {
        assert_eq!(memory.u64_at(p2m[6 + pfn / 512], pfn % 512), p2m[pfn].0);
    }
    // shared_info: every vCPU masked.
    let shared = memory.frame(SHARED_INFO);
    assert!((0..32).all(|v| shared[v * 64 + 1] == 1));
    // Only frames of the region (and shared_info) were touched.
    let region: std::collections::HashSet<u64> = p2m[..1024].iter().map(|m| m.0).collect();
    for mfn in memory.frames.keys() {
        assert!(region.contains(mfn) || *mfn == SHARED_INFO.0, "{mfn:#x}");
    }
}

#[test]
fn build_refuses_short_frame_lists_and_long_command_lines_before_writing() {
    let bytes = standard_elf();
    let image = GuestImage::parse(&bytes).unwrap();
    let layout = Layout::plan(&image, 4096, 4096).unwrap();
    let short = p2m(4000);
    let mut memory = FakeMemory::default();
    let frames = domain_frames(&short);
    assert_eq!(
        build(&image, &layout, &frames, b"", &mut memory)
            .unwrap_err()
            .to_string(),
        "4000 frames given for a guest of 4096 pages"
    );
    let full = p2m(4096);
    let frames = domain_frames(&full);
    assert_eq!(
        build(&image, &layout, &frames, &[b'x'; 1024], &mut memory)
            .unwrap_err()
            .to_string(),
        "command line of 1024 bytes is longer than start_info's 1023"
    );
    assert!(memory.frames.is_empty());
}

#[test]
fn write_errors_are_reported() {
    struct Refusing;
    impl FrameWriter for Refusing {
        fn write(&mut self, _: Mfn, _: usize, _: &[u8]) -> Result<(), FrameWriteError> {
            Err(FrameWriteError("not this domain's frame"))
        }
    }
    let bytes = standard_elf();
    let image = GuestImage::parse(&bytes).unwrap();
    let layout = Layout::plan(&image, 4096, 4096).unwrap();
    let p2m = p2m(4096);
    let frames = domain_frames(&p2m);
    assert_eq!(
        build(&image, &layout, &frames, b"", &mut Refusing)
            .unwrap_err()
            .to_string(),
        format!(
            "cannot write guest frame {:#x}: not this domain's frame",
            p2m[1].0
        )
    );
}

#[test]
fn bigger_domains_need_more_tables() {
    // 1 GiB: p2m of 512 pages, region still 4 MiB.
    let (built, _, _) = build_standard(1 << 18);
    assert_eq!(built.layout.p2m, 6..518);
    assert_eq!(built.layout.v_end, 1024);
    assert_eq!(built.layout.tables.total(), 5);
    // An image of 3.5 MiB: with p2m, rings, tables, stack and 512 KiB of slack the region
    // passes 4 MiB, grows to 8 MiB and needs 4 L1s.
    let big = ElfSpec::new(
        0x1010,
        vec![
            load(0x1000, vec![1; 16], 0x38_0000 - 0x1000),
            note_seg(standard_notes()),
        ],
    );
    let bytes = big.bytes();
    let image = GuestImage::parse(&bytes).unwrap();
    let layout = Layout::plan(&image, 4096, 4096).unwrap();
    assert_eq!(layout.v_end, 2048);
    assert_eq!(layout.tables, tables(4));
    assert!(layout.boot_stack.0 + 1 + 128 <= layout.v_end);
}

// --- the nucleus' side --------------------------------------------------------------------

impl bsp_x86_64::guest_tables::TableMemory for FakeMemory {
    fn read(&self, table: Mfn, index: usize) -> u64 {
        self.u64_at(table, index)
    }
    fn write(&mut self, table: Mfn, index: usize, entry: u64) {
        FrameWriter::write(self, table, index * 8, &entry.to_le_bytes()).unwrap();
    }
    fn hypervisor_l4_entry(&self, slot: usize) -> u64 {
        0x8000_0000_0000_0063 | ((slot as u64) << 12)
    }
}

/// The bootstrap tables the builder writes pass the nucleus' validation as they are: every
/// entry accepted, the table frames typed as tables, every other page of the region typed
/// writable once, nothing past `v_end` touched, and releasing the L4 undoes it all.
#[test]
fn bootstrap_tables_pass_the_nucleus_checks() {
    use bsp_x86_64::frame_owner::{DomainId, FrameInfo, FrameTable, PageType, TableLevel};
    use bsp_x86_64::guest_pte::CpuLimits;
    use bsp_x86_64::guest_tables::GuestTables;

    let (built, mut memory, p2m) = build_standard(4096);
    let domain = DomainId(1);
    let base = p2m[0].0;
    let span = (p2m[4095].0 - base + 1) as usize;
    let mut frames = FrameTable::new(Mfn(base), vec![FrameInfo::FREE; span]);
    for &mfn in &p2m {
        frames.assign(mfn, domain).unwrap();
    }
    let before = frames.infos().to_vec();
    let l4 = Mfn::containing(built.registers.cr3);
    let mut tables = GuestTables {
        frames: &mut frames,
        memory: &mut memory,
        cpu: CpuLimits { phys_addr_bits: 46 },
        domain,
    };
    tables.get_table(l4, TableLevel::L4).unwrap();
    let layout = &built.layout;
    let level_of = |pfn: u64| {
        let first_l1 = layout.page_tables.end - layout.tables.l1;
        match pfn - layout.page_tables.start {
            0 => TableLevel::L4,
            1 => TableLevel::L3,
            2 => TableLevel::L2,
            _ if pfn >= first_l1 => TableLevel::L1,
            _ => unreachable!(),
        }
    };
    for pfn in 0..4096u64 {
        let info = tables.frames.info(p2m[pfn as usize]).unwrap();
        let expected = if layout.is_page_table(pfn) {
            (PageType::PageTable(level_of(pfn)), 1, 1)
        } else if pfn < layout.v_end {
            (PageType::Writable, 1, 0)
        } else {
            (PageType::None, 0, 0)
        };
        assert_eq!(
            (info.current_type(), info.type_count(), info.general_count()),
            expected,
            "pfn {pfn}"
        );
    }
    tables.put_table(l4).unwrap();
    assert_eq!(frames.infos(), &before[..]);
}

// --- a real guest ---------------------------------------------------------------------

/// The project's `guest-hello`, built for x86_64-unknown-none as the boot tests build it,
/// goes through the parser and the builder: its notes (emitted from its own source) are
/// found, entry and hypercall page are its `_start` and `hypercall_page` symbols, and the
/// frames hold its segments and the stubs.
#[test]
fn the_hello_guest_parses_and_builds() {
    let path = ::tests::build_fixture_server("guest-hello").expect("build guest-hello");
    let bytes = std::fs::read(&path).unwrap();
    let image = GuestImage::parse(&bytes).unwrap();

    let file = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(&bytes).unwrap();
    let (symbols, names) = file.symbol_table().unwrap().unwrap();
    let symbol = |wanted: &str| {
        symbols
            .iter()
            .find(|s| names.get(s.st_name as usize).ok() == Some(wanted))
            .map(|s| s.st_value)
            .unwrap_or_else(|| panic!("no symbol {wanted}"))
    };
    let notes = &image.notes;
    assert_eq!(notes.guest_os, Some(&b"fredvisor-hello"[..]));
    assert_eq!(notes.xen_version, Some(&b"xen-3.0"[..]));
    assert_eq!(notes.loader, Some(&b"generic"[..]));
    assert_eq!((notes.virt_base, notes.paddr_offset), (Some(0), Some(0)));
    assert_eq!(notes.hypercall_page, Some(symbol("hypercall_page")));
    assert_eq!(notes.count, 7);
    assert_eq!(image.virt_base, 0);
    assert_eq!(image.virt_kstart, 0x1000, "linked at 4 KiB");
    assert_eq!(image.entry, symbol("_start"));
    assert!((image.virt_kstart..image.virt_kend).contains(&image.entry));
    assert_eq!(symbol("hypercall_page") % 4096, 0);

    // A 16 MiB domain, as `--guest` gives by default.
    let layout = Layout::plan(&image, 4096, 4096).unwrap();
    let p2m = p2m(4096);
    let frames = domain_frames(&p2m);
    let mut memory = FakeMemory::default();
    let built = build(&image, &layout, &frames, b"", &mut memory).unwrap();
    assert_eq!(built.registers.rip, symbol("_start"));
    let page_pfn = symbol("hypercall_page") / 4096;
    assert_eq!(
        memory.frame(p2m[page_pfn as usize]),
        super::hypercall_page::contents()
    );
    // The first text page holds the file's bytes at `_start`.
    let text = image
        .segments
        .iter()
        .find(|s| s.pseudo_phys == 0x1000)
        .unwrap();
    assert_eq!(&memory.frame(p2m[1])[..64], &text.data[..64]);
    assert_eq!(
        memory.translate(built.registers.cr3, image.entry),
        Some((p2m[1].0, 0x23))
    );
}

// --- properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = GuestImage::parse(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.extend(tail);
        let _ = GuestImage::parse(&bytes);
    }

    #[test]
    fn mutated_images_never_panic_and_build_when_accepted(
        edits in prop::collection::vec((0usize..0x2000, any::<u8>()), 1..8),
        nr_pages in 1u64..4096,
    ) {
        let mut bytes = standard_elf();
        for (at, value) in edits {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Ok(image) = GuestImage::parse(&bytes) {
            prop_assert!(image.virt_kstart <= image.entry && image.entry < image.virt_kend);
            if let Ok(layout) = Layout::plan(&image, nr_pages, 4096) {
                let p2m = p2m(nr_pages);
                let frames = domain_frames(&p2m);
                let mut memory = FakeMemory::default();
                let _ = build(&image, &layout, &frames, b"", &mut memory);
            }
        }
    }

    #[test]
    fn layouts_are_packed_disjoint_and_fit(
        image_kib in 1u64..32768,
        nr_pages in 1u64..(1 << 20),
    ) {
        let memsz = image_kib * 1024;
        let spec = ElfSpec::new(0x1000, vec![
            load(0x1000, vec![1; 4], memsz),
            note_seg(standard_notes_without_hypercall_page()),
        ]);
        let bytes = spec.bytes();
        let image = GuestImage::parse(&bytes).unwrap();
        match Layout::plan(&image, nr_pages, 1 << 20) {
            Ok(layout) => {
                prop_assert_eq!(layout.image.end, layout.p2m.start);
                prop_assert_eq!(layout.p2m.end - layout.p2m.start, (nr_pages * 8).div_ceil(4096));
                prop_assert_eq!(layout.start_info.0, layout.p2m.end);
                prop_assert_eq!(layout.page_tables.start, layout.console.0 + 1);
                prop_assert_eq!(layout.boot_stack.0, layout.page_tables.end);
                prop_assert!(layout.boot_stack.0 + 1 + 128 <= layout.v_end);
                prop_assert_eq!(layout.v_end % 1024, 0);
                prop_assert!(layout.v_end <= nr_pages);
                prop_assert_eq!(layout.tables, TableCounts::for_range(0, layout.v_end * 4096));
            }
            Err(BuildError::ImageDoesNotFit { needed_pages, .. }) => prop_assert!(needed_pages > nr_pages),
            Err(BuildError::SegmentOutsideMemory { end, .. }) => prop_assert!(end > nr_pages * 4096),
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}
