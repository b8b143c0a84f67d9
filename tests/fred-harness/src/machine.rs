//! The emulated ring-0 state and the record of every emulated instruction.
//!
//! Owns the MSR table, CR4, SS, CR2/DR6 and the GS bases that the trap handler reads and
//! writes, the CPU's WRMSR and ERETx checks as pure functions (fred-facts.md §2.3, §4.2,
//! §4.3), and the log. Everything the signal handler touches is an atomic in a `static`:
//! no allocation, no lock, so it is async-signal-safe. Harness sessions are serialised
//! (`trap::Session`), so the handler and the test thread never write concurrently; the
//! orderings only need to make the handler's writes visible to the same thread afterwards.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bsp_x86_64::msr::is_canonical;

/// MSR addresses the model knows (fred-facts.md §2.1). Any other address is `#GP(0)`.
pub mod addr {
    pub const FRED_RSP0: u32 = 0x1CC;
    pub const FRED_RSP1: u32 = 0x1CD;
    pub const FRED_RSP2: u32 = 0x1CE;
    pub const FRED_RSP3: u32 = 0x1CF;
    pub const FRED_STKLVLS: u32 = 0x1D0;
    pub const FRED_SSP1: u32 = 0x1D1;
    pub const FRED_SSP2: u32 = 0x1D2;
    pub const FRED_SSP3: u32 = 0x1D3;
    pub const FRED_CONFIG: u32 = 0x1D4;
    pub const PL0_SSP: u32 = 0x6A4;
    pub const EFER: u32 = 0xC000_0080;
    pub const STAR: u32 = 0xC000_0081;
    pub const FS_BASE: u32 = 0xC000_0100;
    pub const GS_BASE: u32 = 0xC000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
}

const MSRS: [u32; 15] = [
    addr::FRED_RSP0,
    addr::FRED_RSP1,
    addr::FRED_RSP2,
    addr::FRED_RSP3,
    addr::FRED_STKLVLS,
    addr::FRED_SSP1,
    addr::FRED_SSP2,
    addr::FRED_SSP3,
    addr::FRED_CONFIG,
    addr::PL0_SSP,
    addr::EFER,
    addr::STAR,
    addr::FS_BASE,
    addr::GS_BASE,
    addr::KERNEL_GS_BASE,
];

/// Human name of a modelled MSR.
pub fn msr_name(msr: u32) -> &'static str {
    match msr {
        addr::FRED_RSP0 => "IA32_FRED_RSP0",
        addr::FRED_RSP1 => "IA32_FRED_RSP1",
        addr::FRED_RSP2 => "IA32_FRED_RSP2",
        addr::FRED_RSP3 => "IA32_FRED_RSP3",
        addr::FRED_STKLVLS => "IA32_FRED_STKLVLS",
        addr::FRED_SSP1 => "IA32_FRED_SSP1",
        addr::FRED_SSP2 => "IA32_FRED_SSP2",
        addr::FRED_SSP3 => "IA32_FRED_SSP3",
        addr::FRED_CONFIG => "IA32_FRED_CONFIG",
        addr::PL0_SSP => "IA32_PL0_SSP",
        addr::EFER => "IA32_EFER",
        addr::STAR => "IA32_STAR",
        addr::FS_BASE => "IA32_FS_BASE",
        addr::GS_BASE => "IA32_GS_BASE",
        addr::KERNEL_GS_BASE => "IA32_KERNEL_GS_BASE",
        _ => "unknown MSR",
    }
}

/// CR4.FRED (fred-facts.md §1.2).
pub const CR4_FRED: u64 = 1 << 32;
/// The CR4 the model starts with: PAE, PGE, OSFXSR, OSXMMEXCPT, FSGSBASE, OSXSAVE.
pub const CR4_INITIAL: u64 = (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 16) | (1 << 18);
/// IA32_EFER the model reports: SCE, LME, LMA, NXE.
pub const EFER_INITIAL: u64 = 0xD01;
/// CS the model's ring 0 runs with (ERETS compares the frame's CS with it).
pub const RING0_CS: u64 = bsp_x86_64::gdt::KERNEL_CS.raw() as u64;
/// RFLAGS bits the emulated ERETx/IRETQ carry into the host context: CF, PF, AF, ZF, SF,
/// OF. A CPL-3 process cannot take IOPL, IF, RF etc. from a frame; those are checked and
/// recorded, not loaded.
pub const ARITHMETIC_FLAGS: u64 = 0x8D5;

/// Why the model refused an instruction: what the CPU would raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// WRMSR/RDMSR of an MSR the model does not have (`#GP(0)`).
    UnknownMsr = 1,
    /// WRMSR of a non-canonical address (`#GP(0)`).
    NotCanonical,
    /// WRMSR of a misaligned stack or shadow-stack pointer (`#GP(0)`).
    Misaligned,
    /// WRMSR with reserved bits set (`#GP(0)`).
    ReservedBits,
    /// WRMSR of an MSR FRED code has no business writing (EFER, GS_BASE).
    UnexpectedWrite,
    /// MOV to CR4 changing a bit other than CR4.FRED.
    Cr4OtherBits,
    /// ERETS/ERETU while CR4.FRED = 0 (`#UD`).
    EretWithoutFred,
    /// ERETU with CSL > 0 (`#GP(0)`).
    EretuAtNonZeroCsl,
    /// ERETx to a non-canonical RIP (`#GP(0)`).
    RipNotCanonical,
    /// ERETx CS qword check (`#GP(0)`).
    BadCs,
    /// ERETx RFLAGS check (`#GP(0)`).
    BadRflags,
    /// ERETx SS qword check (`#GP(0)`).
    BadSs,
    /// SWAPGS, SYSRET, SYSEXIT or IRETQ while CR4.FRED = 1 (fred-facts.md §6: they `#UD`
    /// or are forbidden on the FRED path).
    ForbiddenUnderFred,
}

impl Fault {
    fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            1 => Self::UnknownMsr,
            2 => Self::NotCanonical,
            3 => Self::Misaligned,
            4 => Self::ReservedBits,
            5 => Self::UnexpectedWrite,
            6 => Self::Cr4OtherBits,
            7 => Self::EretWithoutFred,
            8 => Self::EretuAtNonZeroCsl,
            9 => Self::RipNotCanonical,
            10 => Self::BadCs,
            11 => Self::BadRflags,
            12 => Self::BadSs,
            13 => Self::ForbiddenUnderFred,
            _ => return None,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownMsr => "#GP(0): unknown MSR",
            Self::NotCanonical => "#GP(0): not canonical",
            Self::Misaligned => "#GP(0): misaligned",
            Self::ReservedBits => "#GP(0): reserved bits set",
            Self::UnexpectedWrite => "write to an MSR FRED code must not write",
            Self::Cr4OtherBits => "MOV CR4 changes bits other than FRED",
            Self::EretWithoutFred => "#UD: ERETx with CR4.FRED = 0",
            Self::EretuAtNonZeroCsl => "#GP(0): ERETU with CSL > 0",
            Self::RipNotCanonical => "#GP(0): return RIP not canonical",
            Self::BadCs => "#GP(0): CS qword check",
            Self::BadRflags => "#GP(0): RFLAGS check",
            Self::BadSs => "#GP(0): SS qword check",
            Self::ForbiddenUnderFred => "forbidden while CR4.FRED = 1",
        })
    }
}

/// The checks WRMSR applies before it writes (fred-facts.md §2.3); pure.
pub fn wrmsr_check(msr: u32, value: u64) -> Result<(), Fault> {
    let aligned = |align: u64| {
        if !is_canonical(value) {
            Err(Fault::NotCanonical)
        } else if value & (align - 1) != 0 {
            Err(Fault::Misaligned)
        } else {
            Ok(())
        }
    };
    match msr {
        addr::FRED_RSP0..=addr::FRED_RSP3 => aligned(64),
        addr::FRED_STKLVLS | addr::STAR => Ok(()),
        addr::FRED_SSP1..=addr::FRED_SSP3 => aligned(8),
        // The CET rule at WRMSR is bits 1:0; FRED delivery also needs bit 2 (not modelled).
        addr::PL0_SSP => aligned(4),
        addr::FRED_CONFIG => {
            if value & 0x834 != 0 {
                Err(Fault::ReservedBits)
            } else if !is_canonical(value & !0xfff) {
                // KVM's rule; Bochs only faults at delivery (fred-facts.md open question 1).
                Err(Fault::NotCanonical)
            } else {
                Ok(())
            }
        }
        addr::FS_BASE | addr::KERNEL_GS_BASE => aligned(1),
        addr::EFER | addr::GS_BASE => Err(Fault::UnexpectedWrite),
        _ => Err(Fault::UnknownMsr),
    }
}

/// Which ERET ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eret {
    Erets,
    Eretu,
}

/// The checks ERETS/ERETU apply to the popped state that need no real privilege
/// (fred-facts.md §4.2, §4.3); pure. `cs`/`ss` are the current selectors (ERETS), `csl` the
/// current stack level (ERETU).
pub fn eret_check(
    which: Eret,
    fred_on: bool,
    popped: &Popped,
    cs: u64,
    ss: u64,
    csl: u64,
) -> Result<(), Fault> {
    if !fred_on {
        return Err(Fault::EretWithoutFred);
    }
    match which {
        Eret::Erets => {
            if !is_canonical(popped.rip) {
                Err(Fault::RipNotCanonical)
            } else if popped.cs & 0xFFFF_FFFF_FFF8_FFFF != cs {
                Err(Fault::BadCs)
            } else if popped.rflags & 0xFFFF_FFFF_FFC2_802A != 0x2 {
                Err(Fault::BadRflags)
            } else if popped.ss & 0xFFF8_FFFF != ss {
                Err(Fault::BadSs)
            } else {
                Ok(())
            }
        }
        Eret::Eretu => {
            if csl != 0 {
                Err(Fault::EretuAtNonZeroCsl)
            } else if popped.cs & 0xFFFF_FFFF_FFFF_0003 != 3 {
                Err(Fault::BadCs)
            } else if popped.rflags & 0xFFFF_FFFF_FFC2_B02A != 0x2 {
                Err(Fault::BadRflags)
            } else if popped.ss & 0xFFF8_0003 != 3 {
                Err(Fault::BadSs)
            } else if !is_canonical(popped.rip) {
                // 64-bit CS (the only kind fredvisor returns to).
                Err(Fault::RipNotCanonical)
            } else {
                Ok(())
            }
        }
    }
}

/// The five qwords ERETx and IRETQ pop (ERETx after skipping the error code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Popped {
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// ---------------------------------------------------------------------------------------
// The machine state
// ---------------------------------------------------------------------------------------

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static MSR_VALUES: [AtomicU64; MSRS.len()] = [ZERO; MSRS.len()];
static CR4: AtomicU64 = AtomicU64::new(CR4_INITIAL);
static SS: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);
static DR6: AtomicU64 = AtomicU64::new(0);
static GS_SELECTOR: AtomicU64 = AtomicU64::new(0);

fn slot(msr: u32) -> Option<&'static AtomicU64> {
    MSRS.iter()
        .position(|&known| known == msr)
        .map(|index| &MSR_VALUES[index])
}

/// The emulated machine: free functions over the statics above, safe to call from the
/// signal handler.
static GS_WINDOW_BASE: AtomicU64 = AtomicU64::new(0);
static GS_WINDOW_LEN: AtomicU64 = AtomicU64::new(0);

pub struct Machine;

impl Machine {
    /// Back to reset-like state: FRED MSRs 0, EFER long mode, CR4 without FRED, SS null.
    pub fn reset() {
        for value in &MSR_VALUES {
            value.store(0, Ordering::Relaxed);
        }
        Self::store_msr(addr::EFER, EFER_INITIAL);
        CR4.store(CR4_INITIAL, Ordering::Relaxed);
        SS.store(0, Ordering::Relaxed);
        CR2.store(0, Ordering::Relaxed);
        DR6.store(0, Ordering::Relaxed);
        GS_SELECTOR.store(0, Ordering::Relaxed);
        GS_WINDOW_BASE.store(0, Ordering::Relaxed);
        GS_WINDOW_LEN.store(0, Ordering::Relaxed);
    }

    /// Real memory that GS-relative accesses may touch (the test's `cpu_info` block); an
    /// access outside it is refused, so a wrong GS base still crashes the test.
    pub fn set_gs_window(base: u64, len: u64) {
        GS_WINDOW_BASE.store(base, Ordering::Relaxed);
        GS_WINDOW_LEN.store(len, Ordering::Relaxed);
    }

    /// True if the 8 bytes at `address` lie inside the GS window.
    pub fn in_gs_window(address: u64) -> bool {
        let base = GS_WINDOW_BASE.load(Ordering::Relaxed);
        let len = GS_WINDOW_LEN.load(Ordering::Relaxed);
        address >= base && address.checked_add(8).is_some_and(|end| end <= base + len)
    }

    /// The value of a modelled MSR, `None` for an unknown one.
    pub fn msr(msr: u32) -> Option<u64> {
        slot(msr).map(|value| value.load(Ordering::Relaxed))
    }

    /// Sets a modelled MSR without checks (test setup, hardware side effects). Returns false
    /// for an unknown MSR.
    pub fn store_msr(msr: u32, value: u64) -> bool {
        match slot(msr) {
            Some(stored) => {
                stored.store(value, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn cr4() -> u64 {
        CR4.load(Ordering::Relaxed)
    }
    pub fn set_cr4(value: u64) {
        CR4.store(value, Ordering::Relaxed);
    }
    pub fn fred_on() -> bool {
        Self::cr4() & CR4_FRED != 0
    }
    pub fn ss() -> u64 {
        SS.load(Ordering::Relaxed)
    }
    pub fn set_ss(selector: u64) {
        SS.store(selector, Ordering::Relaxed);
    }
    pub fn cr2() -> u64 {
        CR2.load(Ordering::Relaxed)
    }
    pub fn set_cr2(value: u64) {
        CR2.store(value, Ordering::Relaxed);
    }
    pub fn dr6() -> u64 {
        DR6.load(Ordering::Relaxed)
    }
    pub fn set_dr6(value: u64) {
        DR6.store(value, Ordering::Relaxed);
    }
    pub fn gs_selector() -> u64 {
        GS_SELECTOR.load(Ordering::Relaxed)
    }
    pub fn set_gs_selector(selector: u64) {
        GS_SELECTOR.store(selector, Ordering::Relaxed);
    }
    /// Current stack level, IA32_FRED_CONFIG\[1:0\].
    pub fn csl() -> u64 {
        Self::msr(addr::FRED_CONFIG).unwrap_or(0) & 3
    }
    /// Exchanges IA32_GS_BASE and IA32_KERNEL_GS_BASE (SWAPGS, and what FRED delivery from
    /// ring 3 and ERETU do to GS).
    pub fn swap_gs() {
        let gs = Self::msr(addr::GS_BASE).unwrap_or(0);
        let kernel = Self::msr(addr::KERNEL_GS_BASE).unwrap_or(0);
        Self::store_msr(addr::GS_BASE, kernel);
        Self::store_msr(addr::KERNEL_GS_BASE, gs);
    }
}

// ---------------------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------------------

/// Emulated instruction kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Insn {
    /// operands: msr, value
    Wrmsr = 1,
    /// operands: msr, value read
    Rdmsr,
    /// operands: selector
    MovSs,
    /// operands: value read
    ReadCr4,
    /// operands: new value, old value
    WriteCr4,
    /// operands: value read
    ReadCr2,
    /// operands: value read
    ReadDr6,
    /// operands: selector
    Lkgs,
    /// operands: RSP at the instruction (&error code), RIP, CS qword, RFLAGS, RSP, SS qword
    Erets,
    /// as Erets
    Eretu,
    /// operands: GS_BASE after, KERNEL_GS_BASE after
    Swapgs,
    /// operands: RSP at the instruction (&RIP), RIP, CS, RFLAGS, RSP, SS
    Iretq,
    /// no operands (never emulated: control goes to the landing pad)
    Sysret,
    /// as Sysret
    Sysexit,
    /// `mov gs:[disp], reg` (IDT `syscall_entry`): operands: linear address, value stored
    GsStore,
    /// `mov reg, gs:[disp]`: operands: linear address, value loaded
    GsLoad,
}

impl Insn {
    fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            1 => Self::Wrmsr,
            2 => Self::Rdmsr,
            3 => Self::MovSs,
            4 => Self::ReadCr4,
            5 => Self::WriteCr4,
            6 => Self::ReadCr2,
            7 => Self::ReadDr6,
            8 => Self::Lkgs,
            9 => Self::Erets,
            10 => Self::Eretu,
            11 => Self::Swapgs,
            12 => Self::Iretq,
            13 => Self::Sysret,
            14 => Self::Sysexit,
            15 => Self::GsStore,
            16 => Self::GsLoad,
            _ => return None,
        })
    }
}

/// One emulated (or refused) instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub insn: Insn,
    /// Address of the instruction.
    pub rip: u64,
    /// Meaning per [`Insn`] variant.
    pub operands: [u64; 6],
    /// `Some` if the CPU would have faulted (or the instruction is forbidden).
    pub fault: Option<Fault>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.operands;
        write!(f, "{:#x}: ", self.rip)?;
        match self.insn {
            Insn::Wrmsr => write!(
                f,
                "wrmsr  {} ({:#x}) <- {:#018x}",
                msr_name(o[0] as u32),
                o[0],
                o[1]
            )?,
            Insn::Rdmsr => write!(
                f,
                "rdmsr  {} ({:#x}) -> {:#018x}",
                msr_name(o[0] as u32),
                o[0],
                o[1]
            )?,
            Insn::MovSs => write!(f, "mov ss, {:#x}", o[0])?,
            Insn::ReadCr4 => write!(f, "mov reg, cr4 -> {:#x}", o[0])?,
            Insn::WriteCr4 => write!(f, "mov cr4, {:#x} (was {:#x})", o[0], o[1])?,
            Insn::ReadCr2 => write!(f, "mov reg, cr2 -> {:#x}", o[0])?,
            Insn::ReadDr6 => write!(f, "mov reg, dr6 -> {:#x}", o[0])?,
            Insn::Lkgs => write!(f, "lkgs {:#x}", o[0])?,
            Insn::Erets | Insn::Eretu => write!(
                f,
                "{} from {:#x}: rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} ss {:#x}",
                if self.insn == Insn::Erets {
                    "erets"
                } else {
                    "eretu"
                },
                o[0],
                o[1],
                o[2],
                o[3],
                o[4],
                o[5]
            )?,
            Insn::Swapgs => write!(
                f,
                "swapgs (gs base {:#x}, kernel gs base {:#x})",
                o[0], o[1]
            )?,
            Insn::Iretq => write!(
                f,
                "iretq from {:#x}: rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} ss {:#x}",
                o[0], o[1], o[2], o[3], o[4], o[5]
            )?,
            Insn::Sysret => f.write_str("sysret")?,
            Insn::Sysexit => f.write_str("sysexit")?,
            Insn::GsStore => write!(f, "mov gs:[..] ({:#x}), {:#x}", o[0], o[1])?,
            Insn::GsLoad => write!(f, "mov reg, gs:[..] ({:#x}) -> {:#x}", o[0], o[1])?,
        }
        if let Some(fault) = self.fault {
            write!(f, "  !! {fault}")?;
        }
        Ok(())
    }
}

/// Capacity of the log; further records are counted as dropped.
pub const LOG_CAPACITY: usize = 512;
const WORDS: usize = 9;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_ENTRY: [AtomicU64; WORDS] = [ZERO; WORDS];
static ENTRIES: [[AtomicU64; WORDS]; LOG_CAPACITY] = [EMPTY_ENTRY; LOG_CAPACITY];
static LEN: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// The append-only record of emulated instructions.
pub struct Log;

impl Log {
    /// Empties the log.
    pub fn clear() {
        LEN.store(0, Ordering::Release);
        DROPPED.store(0, Ordering::Relaxed);
    }

    /// Appends a record; async-signal-safe (atomics only).
    pub fn push(insn: Insn, rip: u64, operands: [u64; 6], fault: Option<Fault>) {
        let index = LEN.load(Ordering::Acquire);
        let Some(entry) = ENTRIES.get(index) else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        };
        entry[0].store(insn as u64, Ordering::Relaxed);
        entry[1].store(rip, Ordering::Relaxed);
        for (word, value) in entry[2..8].iter().zip(operands) {
            word.store(value, Ordering::Relaxed);
        }
        entry[8].store(fault.map_or(0, |fault| fault as u64), Ordering::Relaxed);
        // Publishes the entry written above.
        LEN.store(index + 1, Ordering::Release);
    }

    /// Number of records so far.
    pub fn len() -> usize {
        LEN.load(Ordering::Acquire)
    }

    /// Records that did not fit.
    pub fn dropped() -> usize {
        DROPPED.load(Ordering::Relaxed)
    }

    /// Records `from..` (indices as returned by [`Log::len`]).
    pub fn since(from: usize) -> Vec<Record> {
        let len = Self::len();
        ENTRIES[from.min(len)..len]
            .iter()
            .filter_map(|entry| {
                let word = |i: usize| entry[i].load(Ordering::Relaxed);
                Some(Record {
                    insn: Insn::from_raw(word(0))?,
                    rip: word(1),
                    operands: [word(2), word(3), word(4), word(5), word(6), word(7)],
                    fault: Fault::from_raw(word(8)),
                })
            })
            .collect()
    }

    /// Every record.
    pub fn all() -> Vec<Record> {
        Self::since(0)
    }
}
