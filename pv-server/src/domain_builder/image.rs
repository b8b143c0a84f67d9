//! A guest kernel image: the ELF file, its Xen notes and its address computation
//! (pv64-abi.md §1), checked the way Xen's loader checks it.
//!
//! [`GuestImage::parse`] reads only; it never panics on any input (a property test feeds it
//! arbitrary bytes) and borrows the segment bytes from the image, so nothing is copied until
//! the builder writes guest frames.

use elf::ElfBytes;
use elf::abi::{
    ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE, SHT_NOTE,
};
use elf::endian::LittleEndian;
use heapless::Vec;
use xen_abi::elfnote::{GUEST_OS_LINUX, LOADER_GENERIC, XEN_VERSION_PREFIX};

use super::error::{BuildError, ImageText};
use super::notes::XenNotes;

/// Most PT_LOAD segments an image may have (Linux has 5, the project's guests 3).
pub const MAX_SEGMENTS: usize = 16;

/// One PT_LOAD segment, placed in pseudo-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment<'a> {
    /// Pseudo-physical address of its first byte (`VA - virt_base`).
    pub pseudo_phys: u64,
    /// Bytes in memory (`p_memsz`): the file bytes, then zeros.
    pub memsz: u64,
    /// The file bytes (`p_filesz` of them).
    pub data: &'a [u8],
}

/// A parsed and checked guest image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImage<'a> {
    pub notes: XenNotes<'a>,
    pub segments: Vec<LoadSegment<'a>, MAX_SEGMENTS>,
    /// VA of pseudo-physical 0.
    pub virt_base: u64,
    /// VA of the image's first and one past its last byte.
    pub virt_kstart: u64,
    pub virt_kend: u64,
    /// VA of the first instruction.
    pub entry: u64,
}

fn elf_error(error: elf::ParseError) -> BuildError {
    match error {
        elf::ParseError::BadMagic(_) => BuildError::NotElf,
        elf::ParseError::UnsupportedElfClass(_) => BuildError::MalformedElf("unknown ELF class"),
        elf::ParseError::UnsupportedElfEndianness(_) => {
            BuildError::MalformedElf("unknown byte order")
        }
        elf::ParseError::UnsupportedVersion(_) => BuildError::MalformedElf("unknown ELF version"),
        elf::ParseError::SliceReadError(_) | elf::ParseError::BadOffset(_) => {
            BuildError::MalformedElf("a table lies outside the file")
        }
        elf::ParseError::BadEntsize(_) => BuildError::MalformedElf("wrong table entry size"),
        elf::ParseError::IntegerOverflow => BuildError::MalformedElf("offsets overflow"),
        _ => BuildError::MalformedElf("unreadable headers"),
    }
}

/// Xen loads a PT_LOAD only if it grants some access (`elf_phdr_is_loadable`).
const fn loadable(p_type: u32, p_flags: u32) -> bool {
    p_type == PT_LOAD && p_flags & (PF_R | PF_W | PF_X) != 0
}

impl<'a> GuestImage<'a> {
    /// Parses `bytes` as a PV64 guest kernel and applies the loader's checks (§1.1-§1.3).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BuildError> {
        if bytes.len() < 4 || bytes[..4] != *b"\x7fELF" {
            return Err(BuildError::NotElf);
        }
        // Class, byte order and machine first, from the identification bytes (the same
        // offsets in every ELF class): an ELF32 or big-endian file gets its own line, not a
        // parse error about header sizes.
        let class64 = bytes.get(4) == Some(&ELFCLASS64);
        let little_endian = bytes.get(5) == Some(&ELFDATA2LSB);
        let machine = match bytes.get(18..20) {
            Some(&[a, b]) if little_endian => u16::from_le_bytes([a, b]),
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => return Err(BuildError::MalformedElf("a table lies outside the file")),
        };
        if !class64 || !little_endian || machine != EM_X86_64 {
            return Err(BuildError::NotX86_64 {
                class64,
                little_endian,
                machine,
            });
        }
        let file = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(elf_error)?;
        let header = &file.ehdr;
        if header.e_type != ET_EXEC {
            return Err(BuildError::NotExecutable {
                e_type: header.e_type,
            });
        }
        let notes = Self::find_notes(&file)?;
        Self::check_notes(&notes)?;

        // §1.3: the physical extent of the loadable segments.
        let phdrs = file.segments().ok_or(BuildError::NoLoadSegments)?;
        let mut raw: Vec<(u64, u64, &'a [u8]), MAX_SEGMENTS> = Vec::new();
        let (mut pstart, mut pend) = (u64::MAX, 0u64);
        for (index, phdr) in phdrs.iter().enumerate() {
            if !loadable(phdr.p_type, phdr.p_flags) {
                continue;
            }
            let data = file
                .segment_data(&phdr)
                .map_err(|_| BuildError::BadSegment { index })?;
            let end = phdr.p_paddr.checked_add(phdr.p_memsz);
            let Some(end) = end.filter(|_| phdr.p_filesz <= phdr.p_memsz) else {
                return Err(BuildError::BadSegment { index });
            };
            pstart = pstart.min(phdr.p_paddr);
            pend = pend.max(end);
            raw.push((phdr.p_paddr, phdr.p_memsz, data))
                .map_err(|_| BuildError::TooManySegments { max: MAX_SEGMENTS })?;
        }
        if raw.is_empty() {
            return Err(BuildError::NoLoadSegments);
        }

        let virt_base = notes.virt_base.unwrap_or(0);
        // Notes exist (checked above), so a missing PADDR_OFFSET means 0.
        let paddr_offset = notes.paddr_offset.unwrap_or(0);
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        // Xen's arithmetic is modulo 2^64 (VIRT_BASE below PADDR_OFFSET is legal); a range
        // that wraps shows up as start > end.
        let virt_kstart = pstart.wrapping_add(virt_offset);
        let virt_kend = pend.wrapping_add(virt_offset);
        if virt_kstart > virt_kend {
            return Err(BuildError::BadAddresses);
        }
        let entry = notes.entry.unwrap_or(header.e_entry);
        if !(virt_kstart..virt_kend).contains(&entry) {
            return Err(BuildError::EntryOutsideImage {
                entry,
                start: virt_kstart,
                end: virt_kend,
            });
        }
        if virt_base > virt_kstart {
            return Err(BuildError::VirtBaseAboveImage {
                virt_base,
                virt_kstart,
            });
        }
        if let Some(va) = notes.init_p2m
            && (virt_kstart..virt_kend).contains(&va)
        {
            return Err(BuildError::InitP2mInsideImage { va });
        }
        if let Some(va) = notes.hypercall_page
            && !(virt_kstart..virt_kend).contains(&va)
        {
            return Err(BuildError::HypercallPageOutsideImage { va });
        }

        let mut segments = Vec::new();
        for (paddr, memsz, data) in raw {
            // VA = paddr + virt_offset lies in [virt_kstart, virt_kend] (the range does not
            // wrap), and virt_kstart ≥ virt_base: no underflow.
            let pseudo_phys = paddr.wrapping_add(virt_offset).wrapping_sub(virt_base);
            let _ = segments.push(LoadSegment {
                pseudo_phys,
                memsz,
                data,
            });
        }
        Ok(Self {
            notes,
            segments,
            virt_base,
            virt_kstart,
            virt_kend,
            entry,
        })
    }

    /// §1.1: PT_NOTE segments first; the SHT_NOTE sections only if they had no Xen note.
    fn find_notes(file: &ElfBytes<'a, LittleEndian>) -> Result<XenNotes<'a>, BuildError> {
        let mut notes = XenNotes::default();
        if let Some(phdrs) = file.segments() {
            for phdr in phdrs.iter() {
                if phdr.p_type != PT_NOTE || phdr.p_offset == 0 {
                    continue;
                }
                let area = file
                    .segment_data(&phdr)
                    .map_err(|_| BuildError::MalformedElf("a PT_NOTE lies outside the file"))?;
                notes.add_area(area)?;
            }
        }
        if notes.count == 0
            && let Some(shdrs) = file.section_headers()
        {
            for shdr in shdrs.iter() {
                if shdr.sh_type != SHT_NOTE {
                    continue;
                }
                let (area, _) = file
                    .section_data(&shdr)
                    .map_err(|_| BuildError::MalformedElf("a SHT_NOTE lies outside the file"))?;
                notes.add_area(area)?;
            }
        }
        if notes.count == 0 {
            return Err(BuildError::NoXenNotes);
        }
        Ok(notes)
    }

    /// §1.2, as `elf_xen_note_check`.
    fn check_notes(notes: &XenNotes<'_>) -> Result<(), BuildError> {
        let linux = notes.guest_os == Some(GUEST_OS_LINUX);
        if notes.loader != Some(LOADER_GENERIC) && !linux {
            return Err(BuildError::WrongLoader {
                loader: notes.loader.map(ImageText::new),
                guest_os: notes.guest_os.map(ImageText::new),
            });
        }
        match notes.xen_version {
            None => Err(BuildError::NoXenVersion),
            Some(version) if !version.starts_with(XEN_VERSION_PREFIX) => {
                Err(BuildError::WrongXenVersion(ImageText::new(version)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Pages from `virt_base` to the end of the image: the padding is allocated and mapped
    /// too (§1.3).
    pub fn image_pages(&self) -> u64 {
        (self.virt_kend - self.virt_base).div_ceil(xen_abi::PAGE_SIZE)
    }
}
