//! Multiboot2 boot information, read once and copied out (architecture.md §2).
//!
//! GRUB's structure lives in memory the frame allocator will later hand out, so everything
//! the nucleus needs (command line, memory map, modules) is copied into a fixed-size
//! [`BootSummary`] while the boot identity map is still in place. Every field is an
//! allegation of the boot loader: lengths are clamped, names are kept as bytes.
use core::fmt;
use core::ops::Range;
use heapless::Vec;
use multiboot2::{BootInformation, BootInformationHeader, MaybeDynSized, MemoryAreaType};

/// EAX value a multiboot2 loader passes.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// Longest command line kept; the rest is cut with a warning.
pub const CMDLINE_MAX: usize = 8192;
const REGIONS_MAX: usize = 128;
const MODULES_MAX: usize = 16;
const NAME_MAX: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Defective,
}

impl RegionKind {
    /// Memory, whatever its use: no device page may be mapped over it.
    pub fn is_memory(self) -> bool {
        self != Self::Reserved
    }
}

#[derive(Clone, Debug)]
pub struct Region {
    pub range: Range<u64>,
    pub kind: RegionKind,
}

#[derive(Clone, Debug)]
pub struct Module {
    /// The module string: the server name for server modules.
    pub name: Vec<u8, NAME_MAX>,
    /// Physical bytes of the module.
    pub range: Range<u64>,
}

impl Module {
    pub fn size(&self) -> u64 {
        self.range.end - self.range.start
    }
}

pub struct BootSummary {
    pub cmdline: Vec<u8, CMDLINE_MAX>,
    pub cmdline_truncated: bool,
    pub regions: Vec<Region, REGIONS_MAX>,
    pub regions_dropped: usize,
    pub modules: Vec<Module, MODULES_MAX>,
    pub modules_dropped: usize,
    /// Physical range of GRUB's structure itself (excluded from the allocator).
    pub info: Range<u64>,
    /// Physical address of the RSDP copy in GRUB's structure (the ACPI 2.0 tag if present,
    /// else the 1.0 one); `None` if the loader passed neither.
    pub rsdp: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX did not hold the multiboot2 magic: not started by a multiboot2 loader.
    BadMagic(u32),
    /// The structure pointer is null or not 8-byte aligned.
    BadPointer(u32),
    /// The structure failed the multiboot2 crate's checks (size, end tag).
    Malformed,
    /// No memory map tag: the nucleus cannot know which memory is free.
    NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => {
                write!(f, "boot: not started by a multiboot2 loader (magic {m:#x})")
            }
            Self::BadPointer(p) => {
                write!(f, "boot: multiboot2 information pointer {p:#x} is invalid")
            }
            Self::Malformed => write!(f, "boot: multiboot2 information is malformed"),
            Self::NoMemoryMap => write!(f, "boot: multiboot2 information has no memory map"),
        }
    }
}

fn region_kind(typ: MemoryAreaType) -> RegionKind {
    match typ {
        MemoryAreaType::Available => RegionKind::Usable,
        MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
        MemoryAreaType::ReservedHibernate => RegionKind::AcpiNvs,
        MemoryAreaType::Defective => RegionKind::Defective,
        _ => RegionKind::Reserved,
    }
}

/// What the boot loader handed over: EAX = multiboot2 magic, EBX = its structure
/// (physical). Made once, by the trampoline's Rust entry; read at most once.
pub struct LoaderHandoff {
    magic: u32,
    info: u32,
}

impl LoaderHandoff {
    /// # Safety
    /// `magic` and `info` must be the loader's registers, and the boot tables that
    /// identity-map its structure must stay live until [`LoaderHandoff::read`].
    pub unsafe fn new(magic: u32, info: u32) -> Self {
        Self { magic, info }
    }

    /// Reads GRUB's structure. Must run before `memory::init` replaces the boot tables
    /// (startup does it first thing).
    pub fn read(self) -> Result<BootSummary, BootInfoError> {
        // SAFETY: `new`'s contract: the boot tables map the structure, and `self` is
        // consumed here, so it is read once.
        unsafe { read(self.magic, self.info) }
    }
}

/// Reads GRUB's structure at physical `info_phys` (identity-mapped during boot).
///
/// # Safety
/// The boot identity map must cover the structure, and nothing may have reused its memory.
pub unsafe fn read(magic: u32, info_phys: u32) -> Result<BootSummary, BootInfoError> {
    if magic != MULTIBOOT2_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    if info_phys == 0 || !info_phys.is_multiple_of(8) {
        return Err(BootInfoError::BadPointer(info_phys));
    }
    // SAFETY: the magic says a multiboot2 loader passed this pointer; the caller guarantees
    // it is mapped. `load` checks the size field and the end tag before handing out tags.
    let info = unsafe { BootInformation::load(info_phys as usize as *const BootInformationHeader) }
        .map_err(|_| BootInfoError::Malformed)?;

    let mut summary = BootSummary {
        cmdline: Vec::new(),
        cmdline_truncated: false,
        regions: Vec::new(),
        regions_dropped: 0,
        modules: Vec::new(),
        modules_dropped: 0,
        info: info.start_address() as u64..info.end_address() as u64,
        rsdp: None,
    };
    // The RSDP copy follows the tag's 8-byte header; the structure stays reserved, so the
    // copy is still there when the MADT is read.
    const TAG_HEADER: u64 = 8;
    summary.rsdp = info
        .rsdp_v2_tag()
        .map(|tag| core::ptr::from_ref(tag).cast::<u8>() as u64 + TAG_HEADER)
        .or_else(|| {
            info.rsdp_v1_tag()
                .map(|tag| core::ptr::from_ref(tag).cast::<u8>() as u64 + TAG_HEADER)
        });

    if let Some(tag) = info.command_line_tag() {
        let raw = tag.payload();
        let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
        let keep = raw.len().min(CMDLINE_MAX);
        summary.cmdline_truncated = keep < raw.len();
        // Cannot fail: `keep` fits the capacity.
        let _ = summary.cmdline.extend_from_slice(&raw[..keep]);
    }

    let map = info.memory_map_tag().ok_or(BootInfoError::NoMemoryMap)?;
    for area in map.memory_areas() {
        let start = area.start_address();
        let end = start.saturating_add(area.size());
        let region = Region {
            range: start..end,
            kind: region_kind(area.typ()),
        };
        if summary.regions.push(region).is_err() {
            summary.regions_dropped += 1;
        }
    }

    for module in info.module_tags() {
        let start = u64::from(module.start_address());
        let end = u64::from(module.end_address()).max(start);
        let mut name = Vec::new();
        let raw = module.payload().get(8..).unwrap_or(&[]);
        for &b in raw.iter().take_while(|&&b| b != 0).take(NAME_MAX) {
            let _ = name.push(b);
        }
        if summary
            .modules
            .push(Module {
                name,
                range: start..end,
            })
            .is_err()
        {
            summary.modules_dropped += 1;
        }
    }
    Ok(summary)
}

impl BootSummary {
    /// Usable bytes and number of regions, for the boot log.
    pub fn usable_bytes(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .map(|r| r.range.end - r.range.start)
            .sum()
    }
}
