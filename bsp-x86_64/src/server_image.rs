//! Server ELF validation: is this boot module a loadable Ring3 server image? (issue 7 item 1)
//!
//! A server module is an allegation like any input: GRUB hands us bytes, and a missing,
//! truncated, non-ELF or hostile file must give one clear line and not a fault. [`validate`]
//! is a pure function over the module's bytes (host-tested, including a proptest over
//! arbitrary and mutated images); it reads only inside the slice, with checked arithmetic,
//! and returns the loadable segments the nucleus may then map.
//!
//! Accepted: ELF64, little-endian, x86-64, `ET_EXEC`; 1..=[`MAX_SEGMENTS`] `PT_LOAD`
//! segments, each inside `[layout::IMAGE_START, layout::IMAGE_END)`, with its file bytes
//! inside the module, `filesz <= memsz`, a file offset congruent to its address modulo 4 KiB,
//! not both writable and executable, and no two sharing a 4 KiB page; the entry point inside
//! an executable segment. Segment numbers in errors are program-header indices (as
//! `readelf -l` counts them).

use core::fmt;

use heapless::Vec;
use ipc::layout::{IMAGE_END, IMAGE_START};

/// Most `PT_LOAD` segments a server may have (text, rodata, data and some slack).
pub const MAX_SEGMENTS: usize = 8;

const PAGE: u64 = 4096;
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Access rights of a segment (`p_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

/// One `PT_LOAD` segment, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub file_offset: u64,
    pub filesz: u64,
    pub flags: SegmentFlags,
}

impl Segment {
    /// The 4 KiB pages the segment touches: `[first, end)` (no overflow: checked inside
    /// `IMAGE_END`).
    fn pages(&self) -> (u64, u64) {
        let start = self.vaddr & !(PAGE - 1);
        let end = (self.vaddr + self.memsz).div_ceil(PAGE) * PAGE;
        (start, end)
    }

    fn contains(&self, address: u64) -> bool {
        address >= self.vaddr && address - self.vaddr < self.memsz
    }
}

/// A validated server image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerImage {
    pub entry: u64,
    pub segments: Vec<Segment, MAX_SEGMENTS>,
}

/// Why a module is not a loadable server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    NotElf,
    Truncated,
    NotElf64,
    NotLittleEndian,
    NotX86_64,
    NotExec,
    ProgramHeaderSize { size: u16 },
    NoSegments,
    TooManySegments,
    OutsideUserSpace { segment: u16 },
    OutsideFile { segment: u16 },
    FileSizeAboveMemSize { segment: u16 },
    Misaligned { segment: u16 },
    WritableAndExecutable { segment: u16 },
    Overlap { first: u16, second: u16 },
    EntryOutside { entry: u64 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotElf => f.write_str("not an ELF file"),
            Self::Truncated => f.write_str("truncated"),
            Self::NotElf64 => f.write_str("not ELF64"),
            Self::NotLittleEndian => f.write_str("not little-endian"),
            Self::NotX86_64 => f.write_str("not x86-64"),
            Self::NotExec => f.write_str("not ET_EXEC"),
            Self::ProgramHeaderSize { size } => {
                write!(
                    f,
                    "program header size {size}, expected {PROGRAM_HEADER_SIZE}"
                )
            }
            Self::NoSegments => f.write_str("no loadable segment"),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
            Self::OutsideUserSpace { segment } => write!(f, "segment {segment} outside user space"),
            Self::OutsideFile { segment } => {
                write!(f, "segment {segment} extends past the end of the file")
            }
            Self::FileSizeAboveMemSize { segment } => {
                write!(f, "segment {segment} has a file size above its memory size")
            }
            Self::Misaligned { segment } => {
                write!(
                    f,
                    "segment {segment} address and file offset differ modulo 4 KiB"
                )
            }
            Self::WritableAndExecutable { segment } => {
                write!(f, "segment {segment} is writable and executable")
            }
            Self::Overlap { first, second } => write!(f, "segments {first} and {second} overlap"),
            Self::EntryOutside { entry } => {
                write!(f, "entry {entry:#x} outside any executable segment")
            }
        }
    }
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], ImageError> {
    let end = at.checked_add(N).ok_or(ImageError::Truncated)?;
    let slice = data.get(at..end).ok_or(ImageError::Truncated)?;
    <[u8; N]>::try_from(slice).map_err(|_| ImageError::Truncated)
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, ImageError> {
    bytes::<2>(data, at).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, ImageError> {
    bytes::<4>(data, at).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, ImageError> {
    bytes::<8>(data, at).map(u64::from_le_bytes)
}

/// Checks the ELF header; returns (entry, phoff, phnum).
fn header(data: &[u8]) -> Result<(u64, u64, u16), ImageError> {
    let seen = data.len().min(ELF_MAGIC.len());
    if data[..seen] != ELF_MAGIC[..seen] || data.is_empty() {
        return Err(ImageError::NotElf);
    }
    if data.len() < ELF_HEADER_SIZE {
        return Err(ImageError::Truncated);
    }
    if data[4] != ELFCLASS64 {
        return Err(ImageError::NotElf64);
    }
    if data[5] != ELFDATA2LSB {
        return Err(ImageError::NotLittleEndian);
    }
    if u16_at(data, 18)? != EM_X86_64 {
        return Err(ImageError::NotX86_64);
    }
    if u16_at(data, 16)? != ET_EXEC {
        return Err(ImageError::NotExec);
    }
    let entry = u64_at(data, 24)?;
    let phoff = u64_at(data, 32)?;
    let phentsize = u16_at(data, 54)?;
    let phnum = u16_at(data, 56)?;
    if phnum > 0 && usize::from(phentsize) != PROGRAM_HEADER_SIZE {
        return Err(ImageError::ProgramHeaderSize { size: phentsize });
    }
    Ok((entry, phoff, phnum))
}

/// Reads and checks program header `index` if it is a `PT_LOAD`.
fn load_segment(data: &[u8], at: usize, index: u16) -> Result<Option<Segment>, ImageError> {
    if u32_at(data, at)? != PT_LOAD {
        return Ok(None);
    }
    let flags = u32_at(data, at + 4)?;
    let segment = Segment {
        file_offset: u64_at(data, at + 8)?,
        vaddr: u64_at(data, at + 16)?,
        filesz: u64_at(data, at + 32)?,
        memsz: u64_at(data, at + 40)?,
        flags: SegmentFlags {
            read: flags & PF_R != 0,
            write: flags & PF_W != 0,
            execute: flags & PF_X != 0,
        },
    };
    let inside = segment.vaddr >= IMAGE_START
        && segment
            .vaddr
            .checked_add(segment.memsz)
            .is_some_and(|end| end <= IMAGE_END);
    if !inside {
        return Err(ImageError::OutsideUserSpace { segment: index });
    }
    if segment.filesz > segment.memsz {
        return Err(ImageError::FileSizeAboveMemSize { segment: index });
    }
    let in_file = segment
        .file_offset
        .checked_add(segment.filesz)
        .is_some_and(|end| end <= data.len() as u64);
    if !in_file {
        return Err(ImageError::OutsideFile { segment: index });
    }
    if segment.vaddr % PAGE != segment.file_offset % PAGE {
        return Err(ImageError::Misaligned { segment: index });
    }
    if segment.flags.write && segment.flags.execute {
        return Err(ImageError::WritableAndExecutable { segment: index });
    }
    Ok(Some(segment))
}

/// Checks that `bytes` is a loadable server image; returns its entry and segments.
pub fn validate(data: &[u8]) -> Result<ServerImage, ImageError> {
    let (entry, phoff, phnum) = header(data)?;
    let table_end = (phnum as u64)
        .checked_mul(PROGRAM_HEADER_SIZE as u64)
        .and_then(|size| size.checked_add(phoff))
        .ok_or(ImageError::Truncated)?;
    if table_end > data.len() as u64 {
        return Err(ImageError::Truncated);
    }
    // `phoff <= table_end <= data.len()`, so this fits a usize.
    let phoff = phoff as usize;
    let mut segments: Vec<Segment, MAX_SEGMENTS> = Vec::new();
    let mut indices: Vec<u16, MAX_SEGMENTS> = Vec::new();
    for index in 0..phnum {
        let at = phoff + usize::from(index) * PROGRAM_HEADER_SIZE;
        let Some(segment) = load_segment(data, at, index)? else {
            continue;
        };
        let (start, end) = segment.pages();
        for (other, &other_index) in segments.iter().zip(indices.iter()) {
            let (other_start, other_end) = other.pages();
            if start < other_end && other_start < end {
                return Err(ImageError::Overlap {
                    first: other_index,
                    second: index,
                });
            }
        }
        segments
            .push(segment)
            .map_err(|_| ImageError::TooManySegments)?;
        indices
            .push(index)
            .map_err(|_| ImageError::TooManySegments)?;
    }
    if segments.is_empty() {
        return Err(ImageError::NoSegments);
    }
    if !segments
        .iter()
        .any(|s| s.flags.execute && s.contains(entry))
    {
        return Err(ImageError::EntryOutside { entry });
    }
    Ok(ServerImage { entry, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One program header for the test builder.
    #[derive(Clone, Copy)]
    struct Ph {
        kind: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
    }

    const RX: u32 = PF_R | PF_X;
    const R: u32 = PF_R;
    const RW: u32 = PF_R | PF_W;

    fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
        Ph {
            kind: PT_LOAD,
            flags,
            offset,
            vaddr,
            filesz,
            memsz,
        }
    }

    /// A tiny ELF: header, program headers at 64, and zero bytes up to `file_len`.
    fn elf(entry: u64, phs: &[Ph], file_len: usize) -> std::vec::Vec<u8> {
        let mut out = std::vec![0u8; file_len.max(64 + phs.len() * 56)];
        out[..4].copy_from_slice(&ELF_MAGIC);
        out[4] = ELFCLASS64;
        out[5] = ELFDATA2LSB;
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        out[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
        for (i, ph) in phs.iter().enumerate() {
            let at = 64 + i * 56;
            out[at..at + 4].copy_from_slice(&ph.kind.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&ph.flags.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&ph.offset.to_le_bytes());
            out[at + 16..at + 24].copy_from_slice(&ph.vaddr.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&ph.vaddr.to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&ph.filesz.to_le_bytes());
            out[at + 40..at + 48].copy_from_slice(&ph.memsz.to_le_bytes());
            out[at + 48..at + 56].copy_from_slice(&PAGE.to_le_bytes());
        }
        out
    }

    /// What the server linker script produces: text RX, rodata R, data RW (+ bss).
    fn good_segments() -> std::vec::Vec<Ph> {
        std::vec![
            load(RX, 0x1000, 0x40_0000, 0x2345, 0x2345),
            load(R, 0x4000, 0x40_3000, 0x800, 0x800),
            load(RW, 0x5000, 0x40_4000, 0x40, 0x3000),
        ]
    }

    fn good() -> std::vec::Vec<u8> {
        elf(0x40_0000, &good_segments(), 0x6000)
    }

    fn error_with(segments: &[Ph]) -> ImageError {
        validate(&elf(0x40_0000, segments, 0x6000)).unwrap_err()
    }

    #[test]
    fn a_linker_script_image_is_accepted() {
        let image = validate(&good()).unwrap();
        assert_eq!(image.entry, 0x40_0000);
        assert_eq!(image.segments.len(), 3);
        assert_eq!(
            image.segments[2],
            Segment {
                vaddr: 0x40_4000,
                memsz: 0x3000,
                file_offset: 0x5000,
                filesz: 0x40,
                flags: SegmentFlags {
                    read: true,
                    write: true,
                    execute: false
                },
            }
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(validate(&[]), Err(ImageError::NotElf));
        assert_eq!(
            validate(b"MZ\x90\x00 not an elf at all"),
            Err(ImageError::NotElf)
        );
        assert_eq!(validate(b"\x7fEL"), Err(ImageError::Truncated));
        assert_eq!(validate(&good()[..40]), Err(ImageError::Truncated));
        let mut elf32 = good();
        elf32[4] = 1;
        assert_eq!(validate(&elf32), Err(ImageError::NotElf64));
        let mut big = good();
        big[5] = 2;
        assert_eq!(validate(&big), Err(ImageError::NotLittleEndian));
        let mut arm = good();
        arm[18] = 183;
        assert_eq!(validate(&arm), Err(ImageError::NotX86_64));
        let mut dynamic = good();
        dynamic[16] = 3; // ET_DYN
        assert_eq!(validate(&dynamic), Err(ImageError::NotExec));
        let mut phsize = good();
        phsize[54] = 32;
        assert_eq!(
            validate(&phsize),
            Err(ImageError::ProgramHeaderSize { size: 32 })
        );
        // Program headers past the end of the file.
        let mut phnum = good();
        phnum[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(validate(&phnum), Err(ImageError::Truncated));
        let mut phoff = good();
        phoff[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(validate(&phoff), Err(ImageError::Truncated));
    }

    #[test]
    fn segment_errors() {
        let mut s = good_segments();
        s[1].vaddr = 0xffff_ffff_8000_0000;
        assert_eq!(error_with(&s), ImageError::OutsideUserSpace { segment: 1 });
        assert_eq!(
            ImageError::OutsideUserSpace { segment: 1 }.to_string(),
            "segment 1 outside user space"
        );
        let mut s = good_segments();
        s[2].memsz = u64::MAX; // end overflows
        assert_eq!(error_with(&s), ImageError::OutsideUserSpace { segment: 2 });
        let mut s = good_segments();
        s[0].vaddr = 0; // null page
        s[0].offset = 0;
        assert_eq!(error_with(&s), ImageError::OutsideUserSpace { segment: 0 });
        let mut s = good_segments();
        s[1].filesz = 0x900;
        assert_eq!(
            error_with(&s),
            ImageError::FileSizeAboveMemSize { segment: 1 }
        );
        let mut s = good_segments();
        s[2].filesz = 0x2000; // runs past the 0x6000-byte file
        assert_eq!(error_with(&s), ImageError::OutsideFile { segment: 2 });
        let mut s = good_segments();
        s[2].offset = u64::MAX - 8;
        assert_eq!(error_with(&s), ImageError::OutsideFile { segment: 2 });
        let mut s = good_segments();
        s[1].offset = 0x4010;
        assert_eq!(error_with(&s), ImageError::Misaligned { segment: 1 });
        let mut s = good_segments();
        s[2].flags = PF_R | PF_W | PF_X;
        assert_eq!(
            error_with(&s),
            ImageError::WritableAndExecutable { segment: 2 }
        );
        assert_eq!(
            ImageError::WritableAndExecutable { segment: 2 }.to_string(),
            "segment 2 is writable and executable"
        );
        // rodata starting in the last (partial) page of text.
        let mut s = good_segments();
        s[1].vaddr = 0x40_2000;
        s[1].offset = 0x4000 - 0x1000;
        assert_eq!(
            error_with(&s),
            ImageError::Overlap {
                first: 0,
                second: 1
            }
        );
        assert_eq!(
            ImageError::Overlap {
                first: 0,
                second: 1
            }
            .to_string(),
            "segments 0 and 1 overlap"
        );
    }

    #[test]
    fn segment_count_and_entry() {
        assert_eq!(
            validate(&elf(0x40_0000, &[], 0x1000)),
            Err(ImageError::NoSegments)
        );
        // Non-LOAD headers are skipped, not counted.
        let mut s = good_segments();
        s.insert(
            0,
            Ph {
                kind: 0x6474_e551,
                flags: RW,
                offset: 0,
                vaddr: 0,
                filesz: 0,
                memsz: 0,
            },
        );
        assert_eq!(
            validate(&elf(0x40_0000, &s, 0x6000))
                .unwrap()
                .segments
                .len(),
            3
        );
        let many: std::vec::Vec<Ph> = (0..9)
            .map(|i| load(R, 0x1000, 0x40_0000 + i * 0x1000, 0, 0x10))
            .collect();
        assert_eq!(
            validate(&elf(0x40_0000, &many, 0x2000)),
            Err(ImageError::TooManySegments)
        );
        // Entry in rodata (not executable), and past the end of text.
        assert_eq!(
            validate(&elf(0x40_3000, &good_segments(), 0x6000)),
            Err(ImageError::EntryOutside { entry: 0x40_3000 })
        );
        assert_eq!(
            validate(&elf(0x40_2345, &good_segments(), 0x6000))
                .unwrap_err()
                .to_string(),
            "entry 0x402345 outside any executable segment"
        );
    }

    /// Checks an ELF the real build produced: `FREDVISOR_SERVER_ELFS=a.elf:b.elf cargo test`.
    /// Without the variable there is nothing to check (the boot tests load the real ones).
    #[test]
    fn built_servers_are_accepted_when_given() {
        let Some(paths) = std::env::var_os("FREDVISOR_SERVER_ELFS") else {
            return;
        };
        for path in std::env::split_paths(&paths) {
            let data = std::fs::read(&path).unwrap();
            let image = validate(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(image.entry >= ipc::layout::SERVER_LINK_BASE);
            std::println!(
                "{}: entry {:#x}, {} segments",
                path.display(),
                image.entry,
                image.segments.len()
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = validate(&data);
        }

        #[test]
        fn mutated_images_never_panic(
            edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..16),
            cut in 0usize..0x6001,
        ) {
            let mut data = good();
            for (at, byte) in edits {
                data[at] = byte;
            }
            data.truncate(cut);
            if let Ok(image) = validate(&data) {
                // Whatever is accepted really is inside the module and user space.
                for s in &image.segments {
                    prop_assert!(s.file_offset + s.filesz <= data.len() as u64);
                    prop_assert!(s.vaddr >= IMAGE_START && s.vaddr + s.memsz <= IMAGE_END);
                    prop_assert!(!(s.flags.write && s.flags.execute));
                }
            }
        }
    }
}
