//! FRED: the feature probe, the on/off policy, the MSR values and the enable sequence.
//!
//! Owns everything between "does this CPU have FRED" and "CR4.FRED is set": the CPUID bits
//! (fred-facts.md §1.1), the decision that combines them with `fred=` and `pv-shim`
//! (architecture.md §2 step 5), the checked values of the FRED MSRs (§2.1–§2.3), the plan
//! that derives them from a [`StackBlock`] (architecture.md §4) and the ordered enable
//! sequence (§1.3). Does not own the entry stubs (`entry::entry_stubs!`) nor the stack block's
//! mapping. Everything but [`enable`] and [`load_user_gs`] is pure and host-tested; those two
//! touch hardware only through `insn`, so the host trap-and-emulate harness runs them as is.
//!
//! # GS convention (design note "GS handling", fred-facts.md §5)
//!
//! In ring 0, IA32_GS_BASE holds the nucleus' per-CPU base under **both** deliveries. The
//! user's GS base waits in IA32_KERNEL_GS_BASE, and is swapped in on the way to ring 3: by
//! ERETU under FRED (which also swaps it back out on the next ring-3 event), by the IDT
//! exit path's SWAPGS otherwise (paired with a SWAPGS on IDT entry from ring 3). So the
//! user's base is always written to IA32_KERNEL_GS_BASE, never to IA32_GS_BASE, and the
//! "user" and "kernel" GS bases are logically swapped while the nucleus runs.
//! [`load_user_gs`] is the one place that loads a user GS selector and base.

use core::fmt;

use crate::gdt::{self, Selector};
use crate::insn;
use crate::msr::{self, GsBase, KernelGsBase, Msr, MsrWrite, Star, check_address, sealed::FromRaw};
use crate::regs::Cr4;
use crate::stack_block::StackBlock;

/// Errors of the checked FRED MSR constructors.
pub use crate::msr::ValueError as FredMsrError;

// ---------------------------------------------------------------------------------------
// Enumeration (fred-facts.md §1.1)
// ---------------------------------------------------------------------------------------

/// FRED-related CPUID.(7,1):EAX bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// Bit 17: FRED transitions, CR4.FRED, the FRED MSRs, ERETS/ERETU.
    pub fred: bool,
    /// Bit 18: the LKGS instruction.
    pub lkgs: bool,
    /// Bit 19: WRMSRNS.
    pub wrmsrns: bool,
    /// Bit 20: NMI-source reporting (only through FRED event data).
    pub nmi_source: bool,
}

impl CpuFeatures {
    /// A CPU with none of the features.
    pub const NONE: Self = Self {
        fred: false,
        lkgs: false,
        wrmsrns: false,
        nmi_source: false,
    };

    /// Decodes CPUID.(7,1):EAX.
    pub const fn from_leaf7_1_eax(eax: u32) -> Self {
        Self {
            fred: eax & (1 << 17) != 0,
            lkgs: eax & (1 << 18) != 0,
            wrmsrns: eax & (1 << 19) != 0,
            nmi_source: eax & (1 << 20) != 0,
        }
    }

    /// Executes CPUID on this CPU. Leaf 7 sub-leaf 1 only counts if leaf 0 reports a maximum
    /// leaf ≥ 7 and leaf 7 sub-leaf 0 a maximum sub-leaf ≥ 1; otherwise nothing is set.
    pub fn probe() -> Self {
        if insn::cpuid(0, 0).eax < 7 || insn::cpuid(7, 0).eax < 1 {
            return Self::NONE;
        }
        Self::from_leaf7_1_eax(insn::cpuid(7, 1).eax)
    }
}

// ---------------------------------------------------------------------------------------
// Policy (architecture.md §2 step 5)
// ---------------------------------------------------------------------------------------

/// The `fred=` command-line option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FredMode {
    /// `fred=on`: use FRED; warn and stay on the IDT where it cannot be used.
    On,
    /// `fred=off`: always IDT delivery.
    Off,
    /// `fred=auto` (default): FRED iff the CPU has FRED and LKGS and this is no PV shim.
    #[default]
    Auto,
}

impl FredMode {
    /// The option's value as written on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Auto => "auto",
        }
    }

    /// Parses `on`, `off` or `auto`.
    pub fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"on" => Some(Self::On),
            b"off" => Some(Self::Off),
            b"auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

impl fmt::Display for FredMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why FRED is on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Enabled: both CPUID bits are set.
    CpuHasFredAndLkgs,
    /// Disabled by `fred=off`.
    CommandLineOff,
    /// Disabled by `pv-shim` (PV32 guests need rings 1 and 2, which FRED removes).
    PvShim,
    /// Disabled: CPUID FRED is clear.
    CpuLacksFred,
    /// Disabled: CPUID LKGS is clear (the GS convention above needs it).
    CpuLacksLkgs,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CpuHasFredAndLkgs => "cpu has FRED+LKGS",
            Self::CommandLineOff => "fred=off",
            Self::PvShim => "pv-shim",
            Self::CpuLacksFred => "cpu lacks FRED",
            Self::CpuLacksLkgs => "cpu lacks LKGS",
        })
    }
}

/// `fred=on` was refused; printed as a warning before the decision line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnRefused {
    pub reason: Reason,
}

impl fmt::Display for OnRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fred: warning: fred=on refused ({}), staying on IDT delivery",
            self.reason
        )
    }
}

/// The outcome of [`decide`]; `Display` is the one-line boot message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub enabled: bool,
    pub reason: Reason,
    /// Set when `fred=on` could not be honoured.
    pub warning: Option<OnRefused>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.enabled { "enabled" } else { "disabled" };
        write!(f, "fred: {state} ({})", self.reason)
    }
}

/// Decides FRED vs IDT delivery; pure. `fred=off` wins over everything, then `pv-shim`
/// (also over `fred=on`), then the CPU must have FRED and LKGS. `fred=on` only differs from
/// `auto` in that a refusal carries a warning.
pub const fn decide(mode: FredMode, pv_shim: bool, cpu: CpuFeatures) -> Decision {
    let reason = match mode {
        FredMode::Off => Reason::CommandLineOff,
        FredMode::On | FredMode::Auto => {
            if pv_shim {
                Reason::PvShim
            } else if !cpu.fred {
                Reason::CpuLacksFred
            } else if !cpu.lkgs {
                Reason::CpuLacksLkgs
            } else {
                Reason::CpuHasFredAndLkgs
            }
        }
    };
    let enabled = matches!(reason, Reason::CpuHasFredAndLkgs);
    let warning = if matches!(mode, FredMode::On) && !enabled {
        Some(OnRefused { reason })
    } else {
        None
    };
    Decision {
        enabled,
        reason,
        warning,
    }
}

// ---------------------------------------------------------------------------------------
// MSR values (fred-facts.md §2)
// ---------------------------------------------------------------------------------------

/// A FRED stack level, 0..=3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StackLevel(u8);

impl StackLevel {
    pub const SL0: Self = Self(0);
    pub const SL1: Self = Self(1);
    pub const SL2: Self = Self(2);
    pub const SL3: Self = Self(3);

    /// `None` above 3.
    pub const fn new(level: u8) -> Option<Self> {
        if level <= 3 { Some(Self(level)) } else { None }
    }
    /// The level number.
    pub const fn get(self) -> u8 {
        self.0
    }
    /// The level held in the two lowest bits of `bits` (hardware fields are exactly 2 bits).
    pub(crate) const fn from_low_bits(bits: u64) -> Self {
        Self((bits & 0b11) as u8)
    }
}

impl fmt::Display for StackLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SL{}", self.0)
    }
}

/// IA32_FRED_CONFIG (0x1D4, fred-facts.md §2.2): ring-3 entry page, red zone, interrupt
/// stack level, CSL. Built only from checked parts, so reserved bits stay 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FredConfig(u64);

impl FredConfig {
    /// Bits 1:0, current stack level (hardware-maintained).
    pub const CSL_MASK: u64 = 0x3;
    /// Bit 3, shadow-stack skip.
    pub const SS_SKIP: u64 = 0x8;
    /// Bits 8:6, red zone in 64-byte lines.
    pub const REDZONE_MASK: u64 = 0x1c0;
    /// Bits 10:9, stack level of external interrupts taken in ring 0.
    pub const INT_STKLVL_MASK: u64 = 0x600;
    /// Bits 2, 5:4 and 11.
    pub const RESERVED_MASK: u64 = 0x834;
    /// Bits 63:12, the ring-3 entry point.
    pub const ENTRY_MASK: u64 = !0xfff;

    /// `entry_page` must be 4 KiB aligned and canonical (ring-0 entry = +256),
    /// `redzone_lines` 0..=7 (× 64 bytes). CSL is written as 0.
    pub const fn new(
        entry_page: u64,
        redzone_lines: u8,
        int_stack_level: StackLevel,
    ) -> Result<Self, FredMsrError> {
        if let Err(error) = check_address(entry_page, 4096) {
            return Err(error);
        }
        if redzone_lines > 7 {
            return Err(FredMsrError::RedZoneTooLarge {
                lines: redzone_lines,
            });
        }
        Ok(Self(
            entry_page | (redzone_lines as u64) << 6 | (int_stack_level.get() as u64) << 9,
        ))
    }

    /// Accepts a raw value whose reserved bits are clear and entry point canonical.
    pub const fn try_from_raw(raw: u64) -> Result<Self, FredMsrError> {
        if raw & Self::RESERVED_MASK != 0 {
            return Err(FredMsrError::ReservedBits {
                value: raw,
                mask: Self::RESERVED_MASK,
            });
        }
        if !msr::is_canonical(raw & Self::ENTRY_MASK) {
            return Err(FredMsrError::NotCanonical {
                value: raw & Self::ENTRY_MASK,
            });
        }
        Ok(Self(raw))
    }

    /// Ring-3 entry point.
    pub const fn entry_ring3(self) -> u64 {
        self.0 & Self::ENTRY_MASK
    }
    /// Ring-0 entry point (ring-3 entry + 256, fred-facts.md §3.1).
    pub const fn entry_ring0(self) -> u64 {
        self.entry_ring3() + 256
    }
    /// Red zone in bytes (0..=448).
    pub const fn redzone_bytes(self) -> u64 {
        self.0 & Self::REDZONE_MASK
    }
    /// Stack level of ring-0 external interrupts.
    pub const fn int_stack_level(self) -> StackLevel {
        StackLevel::from_low_bits(self.0 >> 9)
    }
    /// Current stack level as last written or read back.
    pub const fn csl(self) -> StackLevel {
        StackLevel::from_low_bits(self.0)
    }
}

/// IA32_FRED_RSP0..3 (0x1CC + L): the stack top of level `L`, canonical and 64-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FredRsp<const L: u8>(u64);

impl<const L: u8> FredRsp<L> {
    /// Refuses what WRMSR would refuse (fred-facts.md §2.3).
    pub const fn new(top: u64) -> Result<Self, FredMsrError> {
        match check_address(top, 64) {
            Ok(top) => Ok(Self(top)),
            Err(error) => Err(error),
        }
    }
    /// The stack top.
    pub const fn top(self) -> u64 {
        self.0
    }
}

/// IA32_FRED_SSP1..3 (0x1D1 + L − 1): shadow-stack pointer of level `L` (1..=3), canonical
/// and 8-byte aligned. Level 0 is [`Pl0Ssp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FredSsp<const L: u8>(u64);

impl<const L: u8> FredSsp<L> {
    /// Refuses what WRMSR would refuse.
    pub const fn new(ssp: u64) -> Result<Self, FredMsrError> {
        match check_address(ssp, 8) {
            Ok(ssp) => Ok(Self(ssp)),
            Err(error) => Err(error),
        }
    }
}

/// IA32_PL0_SSP (0x6A4), FRED's level-0 shadow-stack pointer: canonical and 8-byte aligned
/// (CET needs bits 1:0 clear at WRMSR, FRED delivery bit 2 too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pl0Ssp(u64);

impl Pl0Ssp {
    /// Refuses what WRMSR or FRED delivery would refuse.
    pub const fn new(ssp: u64) -> Result<Self, FredMsrError> {
        match check_address(ssp, 8) {
            Ok(ssp) => Ok(Self(ssp)),
            Err(error) => Err(error),
        }
    }
}

/// IA32_FRED_STKLVLS (0x1D0): two bits per exception vector 0..=31.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FredStackLevels(u64);

impl FredStackLevels {
    /// `#DF`.
    pub const DOUBLE_FAULT: u8 = 8;

    /// Every vector on SL0.
    pub const fn all_sl0() -> Self {
        Self(0)
    }

    /// The nucleus' levels: `#DF` on SL3, every other vector on SL0 (no syscall gap, so
    /// NMI, `#DB` and `#MC` need no stack of their own; design note "Stack layout").
    pub const fn nucleus() -> Self {
        Self(0).set(Self::DOUBLE_FAULT, StackLevel::SL3)
    }

    const fn set(self, vector: u8, level: StackLevel) -> Self {
        let shift = 2 * vector as u32;
        Self((self.0 & !(0b11 << shift)) | (level.get() as u64) << shift)
    }

    /// The same levels with `vector` (0..=31) on `level`.
    pub const fn with(self, vector: u8, level: StackLevel) -> Result<Self, FredMsrError> {
        if vector >= 32 {
            return Err(FredMsrError::NotAnExceptionVector { vector });
        }
        Ok(self.set(vector, level))
    }

    /// The level of `vector`, `None` above 31.
    pub const fn level(self, vector: u8) -> Option<StackLevel> {
        if vector >= 32 {
            return None;
        }
        Some(StackLevel::from_low_bits(self.0 >> (2 * vector as u32)))
    }
}

macro_rules! fred_msr {
    ($type:ty, $addr:expr) => {
        impl FromRaw for $type {
            fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
        }
        impl Msr for $type {
            const ADDR: u32 = $addr;
            fn raw(self) -> u64 {
                self.0
            }
        }
    };
}

fred_msr!(FredConfig, 0x1D4);
fred_msr!(FredStackLevels, 0x1D0);
fred_msr!(Pl0Ssp, 0x6A4);

impl<const L: u8> FromRaw for FredRsp<L> {
    fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}
impl<const L: u8> Msr for FredRsp<L> {
    const ADDR: u32 = {
        assert!(L <= 3, "FRED_RSP0..3 only");
        0x1CC + L as u32
    };
    fn raw(self) -> u64 {
        self.0
    }
}
impl<const L: u8> FromRaw for FredSsp<L> {
    fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}
impl<const L: u8> Msr for FredSsp<L> {
    const ADDR: u32 = {
        assert!(
            L >= 1 && L <= 3,
            "FRED_SSP1..3 only; level 0 is IA32_PL0_SSP"
        );
        0x1D1 + (L as u32 - 1)
    };
    fn raw(self) -> u64 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------
// The MSR plan and the enable sequence (fred-facts.md §1.3)
// ---------------------------------------------------------------------------------------

/// Red zone the nucleus configures: none. Red zones protect data a leaf function keeps below
/// RSP from a same-level event; `x86_64-unknown-none` code is compiled without a red zone,
/// the entry stubs keep nothing below RSP, and the nucleus does no INT3-based call emulation
/// (Linux's reason for one 64-byte line, fred-facts.md §8.2). Nested events then cost no
/// extra stack on the 8 KiB primary stack.
pub const NUCLEUS_REDZONE_LINES: u8 = 0;

const MAX_WRITES: usize = 11;

/// The ordered WRMSRs that switch one CPU to FRED, computed purely from its stack block and
/// the FRED entry page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FredMsrPlan {
    writes: [MsrWrite; MAX_WRITES],
    len: usize,
}

impl FredMsrPlan {
    /// The plan (architecture.md §4):
    ///
    /// 1. STAR: kernel CS for ring-3 deliveries, user compat CS for ERETU's fast path;
    /// 2. FRED_CONFIG: `entry_page`, [`NUCLEUS_REDZONE_LINES`], interrupts on SL0, CSL 0;
    /// 3. RSP0 = primary stack top, just below `cpu_info`;
    /// 4. RSP1 = top of the primary shadow-stack page (5) and RSP2 = top of the IST
    ///    shadow-stack page (0): unmapped while CET is off (read-only shadow stacks once it
    ///    is on), so the first push of an SL1/SL2 delivery faults and escalates to `#DF`;
    /// 5. RSP3 = top of the `#DF` page (4);
    /// 6. STKLVLS: `#DF` on SL3, everything else SL0;
    /// 7. with `shadow_stacks` only: SSP1 = SSP2 = the block base (top of the unmapped page
    ///    below the block, the regular-stack guard, so the pairs point at each other's kind
    ///    of guard), SSP3 = top of page 0 (IST shadow stacks), PL0_SSP = top of page 5.
    pub fn new(
        block: &StackBlock,
        entry_page: u64,
        shadow_stacks: bool,
    ) -> Result<Self, FredMsrError> {
        let base = [
            MsrWrite::of(Star::new(gdt::KERNEL_CS, gdt::USER_CS32)),
            MsrWrite::of(FredConfig::new(
                entry_page,
                NUCLEUS_REDZONE_LINES,
                StackLevel::SL0,
            )?),
            MsrWrite::of(FredRsp::<0>::new(block.primary_top())?),
            MsrWrite::of(FredRsp::<1>::new(block.primary_shadow_top())?),
            MsrWrite::of(FredRsp::<2>::new(block.ist_shadow_top())?),
            MsrWrite::of(FredRsp::<3>::new(block.df_top())?),
            MsrWrite::of(FredStackLevels::nucleus()),
        ];
        let mut writes = [base[0]; MAX_WRITES];
        writes[..base.len()].copy_from_slice(&base);
        let mut len = base.len();
        if shadow_stacks {
            let ssp = [
                MsrWrite::of(FredSsp::<1>::new(block.base())?),
                MsrWrite::of(FredSsp::<2>::new(block.base())?),
                MsrWrite::of(FredSsp::<3>::new(block.ist_shadow_top())?),
                MsrWrite::of(Pl0Ssp::new(block.primary_shadow_top())?),
            ];
            writes[len..len + ssp.len()].copy_from_slice(&ssp);
            len += ssp.len();
        }
        Ok(Self { writes, len })
    }

    /// The writes, in the order [`enable`] performs them.
    pub fn writes(&self) -> &[MsrWrite] {
        &self.writes[..self.len]
    }

    /// The planned value of MSR `addr`, if the plan writes it.
    pub fn value_of(&self, addr: u32) -> Option<u64> {
        self.writes()
            .iter()
            .find(|write| write.addr() == addr)
            .map(|write| write.value())
    }
}

/// Switches this CPU to FRED delivery: SS = kernel data selector, every write of `plan` in
/// order, then CR4.FRED. `log(msr, value)` is called before each write (so a faulting write
/// is the last one printed). Only `insn` functions touch hardware, and nothing else
/// privileged runs, so the host harness can emulate every step.
///
/// # Safety
/// Ring 0 on a CPU whose [`decide`] said enabled, in long mode, with the GDT of `gdt` loaded
/// and interrupts off. `plan` must describe this CPU's stack block, mapped as
/// [`StackBlock::mapped_pages`] says, and an entry page holding the FRED entry stubs. From the
/// next event on the IDT and TSS stacks are no longer used; a wrong plan turns the next
/// event into a `#DF` or a triple fault.
pub unsafe fn enable(plan: &FredMsrPlan, mut log: impl FnMut(u32, u64)) {
    // SAFETY: KERNEL_DS is the flat ring-0 data segment of the loaded GDT (caller contract).
    // ERETS insists that the saved SS equals the current one, so SS must be the selector
    // ring-3 deliveries will load (STAR[47:32] + 8), not the null selector we booted with.
    unsafe { insn::load_ss(gdt::KERNEL_DS) };
    for write in plan.writes() {
        log(write.addr(), write.value());
        // SAFETY: every value was built by a checked constructor, so WRMSR's reserved-bit,
        // alignment and canonical checks pass; the caller guarantees CPL 0, FRED support and
        // that the stacks and entry page behind the values are live. The FRED MSRs take
        // effect only once CR4.FRED is set below.
        unsafe { insn::wrmsr(write.addr(), write.value()) };
    }
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    let cr4 = unsafe { insn::read_cr4() };
    // SAFETY: CPUID FRED is set (caller) and EFER.LMA = 1, so CR4 bit 32 is settable; all
    // FRED state was programmed above, so the next event is delivered to our entry page on
    // a valid stack.
    unsafe { insn::write_cr4(cr4 | Cr4::FRED.bits()) };
}

/// Loads a user GS selector and base for the next return to ring 3, following the module's
/// GS convention: the live GS base (the nucleus' per-CPU block) is left as it is and `base`
/// goes to IA32_KERNEL_GS_BASE, from where ERETU (FRED) or the IDT exit's SWAPGS swaps it in.
///
/// * FRED: LKGS loads the selector (its descriptor base lands in IA32_KERNEL_GS_BASE), then
///   IA32_KERNEL_GS_BASE is overwritten with the full 64-bit `base`.
/// * IDT: `mov gs` would replace the live base with the descriptor's, so the nucleus' base is
///   read first and written back after the selector load.
///
/// # Safety
/// Ring 0, interrupts off (an event between the steps of the IDT variant would find GS_BASE
/// wrong; NMI handlers must read IA32_GS_BASE rather than trust it), `fred_on` true only if
/// FRED was enabled (LKGS present). `selector` must be null or a readable data segment with
/// RPL 3 in the loaded GDT/LDT (`#GP(sel)` otherwise).
pub unsafe fn load_user_gs(fred_on: bool, selector: Selector, base: KernelGsBase) {
    if fred_on {
        // SAFETY: FRED on implies LKGS (decide); the caller guarantees CPL 0 and a loadable
        // selector. Only GS's selector and IA32_KERNEL_GS_BASE change.
        unsafe { insn::lkgs(selector) };
    } else {
        let nucleus = msr::read::<GsBase>();
        // SAFETY: the caller guarantees a loadable selector and interrupts off; the live GS
        // base this clobbers is restored by the next statement.
        unsafe { load_gs(selector) };
        // SAFETY: writes back the value read above: the nucleus' own per-CPU base.
        unsafe { msr::write(nucleus) };
    }
    // SAFETY: `base` is canonical (checked constructor); IA32_KERNEL_GS_BASE is not used by
    // ring 0 under this module's convention, only swapped in on the way to ring 3.
    unsafe { msr::write(base) };
}

/// `mov gs, selector`.
///
/// FIXME(insn): belongs in `insn` as `load_gs` next to `load_ss`/`load_ds_es`; kept private
/// here until it exists there.
///
/// # Safety
/// `selector` must be null or name a readable data segment accessible at the current CPL
/// (`#GP(sel)`/`#NP(sel)` otherwise). Replaces the live GS base with the descriptor's.
#[inline]
unsafe fn load_gs(selector: Selector) {
    // SAFETY: the caller guarantees a loadable selector; only GS (selector and base) changes.
    unsafe {
        core::arch::asm!("mov gs, {:x}", in(reg) selector.raw(), options(nostack, preserves_flags))
    };
}

#[cfg(test)]
mod tests;
