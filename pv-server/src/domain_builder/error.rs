//! Why the domain builder refused an image: one variant per reason, and a `Display` that is
//! the one line after `rejected: `.

use core::fmt;

use heapless::Vec;

/// A short copy of a string from the image (a note's text), for an error that outlives the
/// image. Longer text is cut; `Display` escapes anything that is not printable ASCII.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageText(Vec<u8, 32>);

impl ImageText {
    pub fn new(bytes: &[u8]) -> Self {
        let mut text = Vec::new();
        for &byte in bytes.iter().take(text.capacity()) {
            let _ = text.push(byte);
        }
        Self(text)
    }
}

impl fmt::Display for ImageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// A Xen note that is present but cannot be read as its type says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteProblem {
    /// A note header or its name/descriptor runs past the end of the note area.
    Truncated { offset: usize },
    /// An integer note of a size other than 1, 2, 4 or 8 bytes.
    IntegerSize { note: u32, size: usize },
    /// A string note without a terminating NUL.
    Unterminated { note: u32 },
}

/// Why an image or a domain's memory was refused. Nothing was written to guest memory when
/// an image error is returned by parsing or planning; [`BuildError::Write`] can happen part-way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The bytes do not start with the ELF magic.
    NotElf,
    /// An ELF header or table that cannot be read (truncated, bad sizes).
    MalformedElf(&'static str),
    /// Not a 64-bit little-endian x86-64 image.
    NotX86_64 {
        class64: bool,
        little_endian: bool,
        machine: u16,
    },
    /// Not an executable (`e_type`), e.g. a relocatable object or a shared library.
    NotExecutable { e_type: u16 },
    /// No `"Xen"` note in any PT_NOTE segment or SHT_NOTE section.
    NoXenNotes,
    /// A Xen note that cannot be read.
    BadNote(NoteProblem),
    /// XEN_VERSION note missing.
    NoXenVersion,
    /// XEN_VERSION does not start with `xen-3.0`.
    WrongXenVersion(ImageText),
    /// LOADER is not `generic` and GUEST_OS is not `linux`.
    WrongLoader {
        loader: Option<ImageText>,
        guest_os: Option<ImageText>,
    },
    /// No loadable PT_LOAD segment.
    NoLoadSegments,
    /// More PT_LOAD segments than the builder keeps.
    TooManySegments { max: usize },
    /// A PT_LOAD whose file bytes lie outside the file, or with `p_filesz > p_memsz`.
    BadSegment { index: usize },
    /// Address arithmetic of the image overflows, or `virt_kstart > virt_kend`.
    BadAddresses,
    /// VIRT_BASE lies above the image's first byte.
    VirtBaseAboveImage { virt_base: u64, virt_kstart: u64 },
    /// The entry point is not inside the image.
    EntryOutsideImage { entry: u64, start: u64, end: u64 },
    /// HYPERCALL_PAGE is not inside the image.
    HypercallPageOutsideImage { va: u64 },
    /// INIT_P2M points inside the image.
    InitP2mInsideImage { va: u64 },
    /// The guest's region would leave the canonical lower half, cross the hole, or touch the
    /// hypervisor's window (L4 slots 256-271).
    RegionNotGuestVirtual { start: u64, end: u64 },
    /// A PT_LOAD lands outside the domain's memory.
    SegmentOutsideMemory {
        index: usize,
        start: u64,
        end: u64,
        mem: u64,
    },
    /// The start-of-day region (image, p2m, start_info, rings, tables, stack) needs more
    /// pages than the domain has.
    ImageDoesNotFit { needed_pages: u64, nr_pages: u64 },
    /// The domain asks for more memory than is free.
    NotEnoughMemory {
        requested_pages: u64,
        available_pages: u64,
    },
    /// The command line does not fit start_info.
    CmdlineTooLong { len: usize },
    /// The frame list handed to the builder does not cover the domain's pages.
    FrameListTooShort { pfns: u64, needed: u64 },
    /// Writing a guest frame failed (the frame writer said why).
    Write { mfn: u64, reason: &'static str },
}

const fn mib(pages: u64) -> u64 {
    pages / 256
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("not an ELF image (no \\x7fELF magic)"),
            Self::MalformedElf(what) => write!(f, "malformed ELF image ({what})"),
            Self::NotX86_64 {
                class64,
                little_endian,
                machine,
            } => write!(
                f,
                "not a 64-bit x86-64 image ({}, {}, e_machine {machine})",
                if *class64 { "ELF64" } else { "ELF32" },
                if *little_endian {
                    "little-endian"
                } else {
                    "big-endian"
                },
            ),
            Self::NotExecutable { e_type } => {
                write!(f, "not an executable ELF image (e_type {e_type})")
            }
            Self::NoXenNotes => f.write_str("no Xen ELF notes (not a Xen PV guest)"),
            Self::BadNote(NoteProblem::Truncated { offset }) => {
                write!(
                    f,
                    "malformed Xen ELF note at offset {offset:#x} (runs past its end)"
                )
            }
            Self::BadNote(NoteProblem::IntegerSize { note, size }) => {
                write!(
                    f,
                    "Xen ELF note {note} is a {size}-byte integer (1, 2, 4 or 8 expected)"
                )
            }
            Self::BadNote(NoteProblem::Unterminated { note }) => {
                write!(f, "Xen ELF note {note} is a string without its NUL")
            }
            Self::NoXenVersion => f.write_str("no XEN_VERSION note"),
            Self::WrongXenVersion(text) => {
                write!(f, "XEN_VERSION note is {text}, not xen-3.0")
            }
            Self::WrongLoader { loader, guest_os } => {
                f.write_str("LOADER note is ")?;
                match loader {
                    Some(text) => write!(f, "{text}")?,
                    None => f.write_str("missing")?,
                }
                f.write_str(", not \"generic\", and GUEST_OS is ")?;
                match guest_os {
                    Some(text) => write!(f, "{text}")?,
                    None => f.write_str("missing")?,
                }
                f.write_str(", not \"linux\"")
            }
            Self::NoLoadSegments => f.write_str("no loadable PT_LOAD segment"),
            Self::TooManySegments { max } => write!(f, "more than {max} PT_LOAD segments"),
            Self::BadSegment { index } => write!(
                f,
                "PT_LOAD segment {index} is malformed (outside the file, or filesz > memsz)"
            ),
            Self::BadAddresses => f.write_str("image addresses overflow or are reversed"),
            Self::VirtBaseAboveImage {
                virt_base,
                virt_kstart,
            } => write!(
                f,
                "VIRT_BASE {virt_base:#x} lies above the image start {virt_kstart:#x}"
            ),
            Self::EntryOutsideImage { entry, start, end } => write!(
                f,
                "entry {entry:#x} is outside the image [{start:#x}, {end:#x})"
            ),
            Self::HypercallPageOutsideImage { va } => {
                write!(f, "HYPERCALL_PAGE {va:#x} is outside the image")
            }
            Self::InitP2mInsideImage { va } => {
                write!(f, "INIT_P2M {va:#x} lies inside the image")
            }
            Self::RegionNotGuestVirtual { start, end } => write!(
                f,
                "start-of-day region [{start:#x}, {end:#x}) is not guest address space"
            ),
            Self::SegmentOutsideMemory {
                index,
                start,
                end,
                mem,
            } => write!(
                f,
                "PT_LOAD segment {index} at [{start:#x}, {end:#x}) is outside the guest's {} MiB",
                mib(mem / 4096)
            ),
            Self::ImageDoesNotFit {
                needed_pages,
                nr_pages,
            } => write!(
                f,
                "start-of-day layout needs {needed_pages} pages, the guest has {nr_pages} ({} MiB)",
                mib(*nr_pages)
            ),
            Self::NotEnoughMemory {
                requested_pages,
                available_pages,
            } => write!(
                f,
                "mem={} MiB is more than the {} MiB free",
                mib(*requested_pages),
                mib(*available_pages)
            ),
            Self::CmdlineTooLong { len } => write!(
                f,
                "command line of {len} bytes is longer than start_info's {}",
                xen_abi::start_info::MAX_GUEST_CMDLINE - 1
            ),
            Self::FrameListTooShort { pfns, needed } => {
                write!(f, "{pfns} frames given for a guest of {needed} pages")
            }
            Self::Write { mfn, reason } => {
                write!(f, "cannot write guest frame {mfn:#x}: {reason}")
            }
        }
    }
}
