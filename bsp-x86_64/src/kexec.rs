//! kexec (issue 21): what the nucleus checks in a boot module before it hands the machine to
//! it ([`ImagePlan`]), the multiboot2 information it hands over ([`MbiWriter`]) and the next
//! generation's command line ([`next_cmdline`]).
//!
//! All of it is pure and host-tested; the nucleus' `kexec` module feeds it module bytes and
//! its boot summary, and its trampoline carries out the plan. A module is an allegation of
//! whoever built the ISO: every offset and address is checked before any byte moves, and a
//! plan whose copies would overwrite what must survive the copy is refused.
use core::fmt;
use core::ops::Range;

use elf::ElfBytes;
use elf::endian::LittleEndian;
use heapless::Vec;

use crate::cmdline::KexecReason;

/// The multiboot2 header's magic (the image side; the loader passes [`LOADER_MAGIC`]).
pub const HEADER_MAGIC: u32 = 0xe852_50d6;
/// EAX at a multiboot2 image's entry.
pub const LOADER_MAGIC: u32 = 0x36d7_6289;
/// The header must lie, 8-byte aligned, in the first 32 KiB of the file (multiboot2 §3.1.1).
pub const HEADER_SEARCH: usize = 32 * 1024;
/// Loadable segments a plan carries (the nucleus has four).
pub const MAX_SEGMENTS: usize = 8;
/// The hand-off runs with paging off in 32-bit protected mode: everything below 4 GiB.
const FOUR_GIB: u64 = 1 << 32;

/// One copy the trampoline makes: `file_size` bytes from `src_offset` in the module to
/// physical `dest`, then zeros up to `mem_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub dest: u64,
    pub src_offset: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

impl Segment {
    pub fn dest_range(&self) -> Range<u64> {
        self.dest..self.dest + self.mem_size
    }
}

/// A checked multiboot2 ELF: its segments at their physical load addresses and the
/// physical entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePlan {
    pub entry: u64,
    pub segments: Vec<Segment, MAX_SEGMENTS>,
}

/// Why a module cannot be kexec'd into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    NotElf,
    NotExecutable,
    NoMultiboot2Header,
    NoSegments,
    TooManySegments,
    SegmentOutsideFile {
        index: usize,
    },
    SegmentAbove4GiB {
        index: usize,
    },
    EntryOutsideSegments {
        entry: u64,
    },
    /// Copying segment `index` to `dest` would overwrite `what` at `range`.
    Overwrites {
        index: usize,
        dest: (u64, u64),
        what: &'static str,
        range: (u64, u64),
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("not an ELF file"),
            Self::NotExecutable => f.write_str("not an x86-64 ELF64 executable"),
            Self::NoMultiboot2Header => {
                f.write_str("no multiboot2 header in its first 32 KiB: not a multiboot2 image")
            }
            Self::NoSegments => f.write_str("no loadable segment"),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
            Self::SegmentOutsideFile { index } => {
                write!(f, "segment {index} lies outside the file")
            }
            Self::SegmentAbove4GiB { index } => {
                write!(f, "segment {index} loads above 4 GiB")
            }
            Self::EntryOutsideSegments { entry } => {
                write!(f, "entry point {entry:#x} is in no segment below 4 GiB")
            }
            Self::Overwrites {
                index,
                dest,
                what,
                range,
            } => write!(
                f,
                "segment {index} ({:#x}-{:#x}) would overwrite {what} ({:#x}-{:#x})",
                dest.0, dest.1, range.0, range.1
            ),
        }
    }
}

/// True if `bytes` carries a valid multiboot2 header (magic, architecture 0 = i386, length,
/// checksum) 8-byte aligned in its first [`HEADER_SEARCH`] bytes.
pub fn has_multiboot2_header(bytes: &[u8]) -> bool {
    let window = &bytes[..bytes.len().min(HEADER_SEARCH)];
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(window.get(at..at + 4)?.try_into().ok()?))
    };
    (0..window.len()).step_by(8).any(|at| {
        let (Some(magic), Some(arch), Some(length), Some(checksum)) =
            (word(at), word(at + 4), word(at + 8), word(at + 12))
        else {
            return false;
        };
        magic == HEADER_MAGIC
            && arch == 0
            && length >= 16
            && (at + length as usize) <= window.len()
            && magic
                .wrapping_add(arch)
                .wrapping_add(length)
                .wrapping_add(checksum)
                == 0
    })
}

impl ImagePlan {
    /// Checks `bytes` (a whole module) is an x86-64 ELF executable with a multiboot2 header
    /// whose loadable segments lie inside the file and load below 4 GiB, entry included.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let file =
            ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| ImageError::NotElf)?;
        let header = &file.ehdr;
        if header.class != elf::file::Class::ELF64
            || header.e_machine != elf::abi::EM_X86_64
            || header.e_type != elf::abi::ET_EXEC
        {
            return Err(ImageError::NotExecutable);
        }
        if !has_multiboot2_header(bytes) {
            return Err(ImageError::NoMultiboot2Header);
        }
        let table = file.segments().ok_or(ImageError::NoSegments)?;
        let mut segments = Vec::new();
        let mut entry = None;
        for (index, ph) in table
            .iter()
            .filter(|ph| ph.p_type == elf::abi::PT_LOAD && ph.p_memsz > 0)
            .enumerate()
        {
            let in_file = ph
                .p_offset
                .checked_add(ph.p_filesz)
                .is_some_and(|end| end <= bytes.len() as u64);
            if !in_file || ph.p_filesz > ph.p_memsz {
                return Err(ImageError::SegmentOutsideFile { index });
            }
            if ph
                .p_paddr
                .checked_add(ph.p_memsz)
                .is_none_or(|end| end > FOUR_GIB)
            {
                return Err(ImageError::SegmentAbove4GiB { index });
            }
            let at = header.e_entry.wrapping_sub(ph.p_vaddr);
            if entry.is_none() && header.e_entry >= ph.p_vaddr && at < ph.p_memsz {
                entry = Some(ph.p_paddr + at);
            }
            segments
                .push(Segment {
                    dest: ph.p_paddr,
                    src_offset: ph.p_offset,
                    file_size: ph.p_filesz,
                    mem_size: ph.p_memsz,
                })
                .map_err(|_| ImageError::TooManySegments)?;
        }
        if segments.is_empty() {
            return Err(ImageError::NoSegments);
        }
        let entry = entry.ok_or(ImageError::EntryOutsideSegments {
            entry: header.e_entry,
        })?;
        Ok(Self { entry, segments })
    }

    /// Refuses a plan whose copies would overwrite one of `keep` (the module being copied,
    /// the modules passed on, the trampoline and the boot information it builds).
    pub fn check_clear_of(&self, keep: &[(&'static str, Range<u64>)]) -> Result<(), ImageError> {
        for (index, segment) in self.segments.iter().enumerate() {
            let dest = segment.dest_range();
            for (what, range) in keep {
                if dest.start < range.end && range.start < dest.end {
                    return Err(ImageError::Overwrites {
                        index,
                        dest: (dest.start, dest.end),
                        what,
                        range: (range.start, range.end),
                    });
                }
            }
        }
        Ok(())
    }
}

/// multiboot2 tag types the hand-off writes (multiboot2 §3.6).
pub mod tag {
    pub const END: u32 = 0;
    pub const CMDLINE: u32 = 1;
    pub const MODULE: u32 = 3;
    pub const MEMORY_MAP: u32 = 6;
}

/// Memory map entry types (multiboot2 §3.6.8).
pub mod memory_type {
    pub const AVAILABLE: u32 = 1;
    pub const RESERVED: u32 = 2;
    pub const ACPI_RECLAIMABLE: u32 = 3;
    pub const NVS: u32 = 4;
    pub const DEFECTIVE: u32 = 5;
}

/// The boot information did not fit its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbiFull;

impl fmt::Display for MbiFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the multiboot2 information does not fit its pages")
    }
}

/// Writes a multiboot2 information structure into a buffer (8-byte aligned in physical
/// memory): the fixed header, then tags, each padded to 8 bytes, then [`MbiWriter::finish`].
pub struct MbiWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    full: bool,
}

impl<'a> MbiWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        let mut this = Self {
            buf,
            len: 0,
            full: false,
        };
        this.bytes(&[0; 8]); // total_size, reserved: written by `finish`
        this
    }

    fn bytes(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(to) => {
                to.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.full = true,
        }
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    fn pad(&mut self) {
        while !self.full && !self.len.is_multiple_of(8) {
            self.bytes(&[0]);
        }
    }

    /// Tag 1: the command line (NUL added).
    pub fn cmdline(&mut self, line: &[u8]) -> &mut Self {
        self.u32(tag::CMDLINE);
        self.u32((8 + line.len() + 1) as u32);
        self.bytes(line);
        self.bytes(&[0]);
        self.pad();
        self
    }

    /// Tag 3: module `[start, end)` with its string (NUL added).
    pub fn module(&mut self, start: u32, end: u32, name: &[u8]) -> &mut Self {
        self.u32(tag::MODULE);
        self.u32((16 + name.len() + 1) as u32);
        self.u32(start);
        self.u32(end);
        self.bytes(name);
        self.bytes(&[0]);
        self.pad();
        self
    }

    /// Tag 6: the memory map, `(base, length, type)` per entry.
    pub fn memory_map(
        &mut self,
        areas: impl ExactSizeIterator<Item = (u64, u64, u32)>,
    ) -> &mut Self {
        const ENTRY: u32 = 24;
        self.u32(tag::MEMORY_MAP);
        self.u32(16 + ENTRY * areas.len() as u32);
        self.u32(ENTRY);
        self.u32(0); // entry version
        for (base, length, typ) in areas {
            self.u64(base);
            self.u64(length);
            self.u32(typ);
            self.u32(0);
        }
        self.pad();
        self
    }

    /// A tag copied as it is (type and size included), e.g. the loader's RSDP copy.
    pub fn raw_tag(&mut self, tag: &[u8]) -> &mut Self {
        self.bytes(tag);
        self.pad();
        self
    }

    /// The end tag and the total size; the length written, or [`MbiFull`].
    pub fn finish(mut self) -> Result<usize, MbiFull> {
        self.u32(tag::END);
        self.u32(8);
        if self.full || self.len > u32::MAX as usize {
            return Err(MbiFull);
        }
        self.buf[..4].copy_from_slice(&(self.len as u32).to_le_bytes());
        Ok(self.len)
    }
}

/// Options the hand-off sets and so drops from the old command line (with `selftest=panic`,
/// which would only crash the next generation again).
fn set_by_handoff(word: &[u8]) -> bool {
    word.starts_with(b"kexec=")
        || word.starts_with(b"kexec-generation=")
        || word.starts_with(b"kexec-reason=")
        || word == b"selftest=panic"
}

/// The next generation's command line, written to `line` (in place: the nucleus keeps it in
/// a static, not on its small stacks): `old` without the words the hand-off sets, then
/// `kexec-generation=G kexec-reason=R`. Words that do not fit are left out whole; the two
/// hand-off words always fit (the capacity is at least 64 bytes).
pub fn next_cmdline<const N: usize>(
    old: &[u8],
    generation: u32,
    reason: KexecReason,
    line: &mut Vec<u8, N>,
) {
    let mut tail: Vec<u8, 64> = Vec::new();
    let _ = fmt::Write::write_fmt(
        &mut Writer(&mut tail),
        format_args!(
            "kexec-generation={generation} kexec-reason={}",
            reason.as_str()
        ),
    );
    let room = N.saturating_sub(tail.len() + 1);
    line.clear();
    for word in old
        .split(|b| b.is_ascii_whitespace() || *b == 0)
        .filter(|w| !w.is_empty() && !set_by_handoff(w))
    {
        if line.len() + word.len() + 1 > room {
            continue;
        }
        let _ = line.extend_from_slice(word);
        let _ = line.push(b' ');
    }
    let _ = line.extend_from_slice(&tail);
}

struct Writer<'a, const N: usize>(&'a mut Vec<u8, N>);

impl<const N: usize> fmt::Write for Writer<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

#[cfg(test)]
mod tests;
