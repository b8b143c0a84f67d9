//! Model-specific registers as types: `read::<T>()` is safe, `write(value)` is `unsafe`.
//!
//! Each MSR is a value type that carries its address as [`Msr::ADDR`] (style.md §2.4), so a
//! number can never be written to the wrong register, and values only come from checked
//! constructors (canonical, aligned, reserved bits clear) or from the CPU itself: the trait
//! that wraps a raw number is sealed. Addresses: fred-facts.md §2.1 for the FRED MSRs (whose
//! value types live in `fred`), SDM vol. 4 for the legacy ones here.
//!
//! Reading is safe because RDMSR only writes EDX:EAX; an MSR the CPU lacks raises #GP, which
//! the early IDT reports. Writing is `unsafe` because MSRs steer event delivery, segment
//! bases and paging.

use core::fmt;

use crate::gdt::Selector;
use crate::insn::{rdmsr, wrmsr};
use crate::regs::{Efer, Rflags};

/// Wrapping raw numbers is reserved to this crate (values the CPU returned, or values a
/// checked constructor built).
pub(crate) mod sealed {
    pub trait FromRaw: Sized {
        /// Wraps a raw MSR value without checks.
        fn from_raw(raw: u64) -> Self;
    }
}

/// A model-specific register, named by the type of its value.
pub trait Msr: sealed::FromRaw + Copy {
    /// The MSR address for RDMSR/WRMSR (ECX).
    const ADDR: u32;
    /// The value WRMSR writes (EDX:EAX).
    fn raw(self) -> u64;
}

/// Reads the MSR `T` names.
///
/// Only valid in ring 0 (in ring 3 RDMSR raises #GP); an MSR the CPU does not implement (a
/// FRED MSR without CPUID FRED) raises #GP as well. Neither touches memory.
pub fn read<T: Msr>() -> T {
    // SAFETY: RDMSR writes EDX:EAX only; `T::ADDR` is an architectural MSR address from the
    // tables cited in the module header. The worst case is a #GP (wrong CPL, MSR absent),
    // which is an event, not memory corruption.
    T::from_raw(unsafe { rdmsr(T::ADDR) })
}

/// Writes `value` to its MSR.
///
/// # Safety
/// Runs in ring 0. The caller owns the state the MSR controls on this CPU: event delivery
/// (STAR, the FRED MSRs), segment bases (FS/GS/KERNEL_GS_BASE, which the nucleus reads its
/// per-CPU data through) or EFER (paging, long mode). A wrong but well-formed value leads
/// to faults on the next event or memory access through the wrong base.
pub unsafe fn write<T: Msr>(value: T) {
    // SAFETY: the caller upholds this function's contract; `value` came from a checked
    // constructor or from `read`, so WRMSR's own checks (reserved bits, canonicality) pass.
    unsafe { wrmsr(T::ADDR, value.raw()) }
}

/// One planned WRMSR: an address and a value, built only from a typed MSR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrWrite {
    addr: u32,
    value: u64,
}

impl MsrWrite {
    /// The write that [`write()`] would perform for `value`.
    pub fn of<T: Msr>(value: T) -> Self {
        Self {
            addr: T::ADDR,
            value: value.raw(),
        }
    }
    /// The MSR address.
    pub const fn addr(&self) -> u32 {
        self.addr
    }
    /// The value.
    pub const fn value(&self) -> u64 {
        self.value
    }
}

/// Why a value was refused by a checked MSR constructor (the same checks WRMSR or event
/// delivery would make, fred-facts.md §2.3, done before the write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// The address is not canonical (48-bit: bits 63:47 all equal).
    NotCanonical { value: u64 },
    /// The address is not a multiple of `align` bytes.
    Misaligned { value: u64, align: u64 },
    /// A reserved bit (one of `mask`) is set.
    ReservedBits { value: u64, mask: u64 },
    /// The FRED red zone is 0..=7 cache lines of 64 bytes.
    RedZoneTooLarge { lines: u8 },
    /// Only exception vectors 0..=31 have a configurable stack level.
    NotAnExceptionVector { vector: u8 },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotCanonical { value } => write!(f, "{value:#x} is not a canonical address"),
            Self::Misaligned { value, align } => {
                write!(f, "{value:#x} is not {align}-byte aligned")
            }
            Self::ReservedBits { value, mask } => {
                write!(f, "{value:#x} sets reserved bits {:#x}", value & mask)
            }
            Self::RedZoneTooLarge { lines } => {
                write!(
                    f,
                    "red zone of {lines} cache lines exceeds the maximum of 7"
                )
            }
            Self::NotAnExceptionVector { vector } => {
                write!(f, "vector {vector} has no stack level (only 0..=31 do)")
            }
        }
    }
}

/// True if `addr` is canonical for 4-level paging (bits 63:47 are copies of bit 47).
pub const fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

/// Checks canonicality and an alignment (a power of two).
pub(crate) const fn check_address(value: u64, align: u64) -> Result<u64, ValueError> {
    if !is_canonical(value) {
        return Err(ValueError::NotCanonical { value });
    }
    if value & (align - 1) != 0 {
        return Err(ValueError::Misaligned { value, align });
    }
    Ok(value)
}

impl sealed::FromRaw for Efer {
    fn from_raw(raw: u64) -> Self {
        Self::from_bits_retain(raw)
    }
}
/// IA32_EFER.
impl Msr for Efer {
    const ADDR: u32 = 0xC000_0080;
    fn raw(self) -> u64 {
        self.bits()
    }
}

/// IA32_STAR: the selector bases of SYSCALL/SYSRET, and under FRED the CS/SS of every
/// ring-3 → ring-0 delivery (bits 47:32) and of ERETU's fast path (bits 63:48),
/// fred-facts.md §2.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Star(u64);

impl Star {
    /// `kernel_cs` must be followed by the kernel data selector (+8); `user_cs32` by the user
    /// data (+8) and 64-bit user code (+16) selectors, and must carry RPL 3 so that ERETU's
    /// fast path compares equal (fred-facts.md §4.3).
    pub const fn new(kernel_cs: Selector, user_cs32: Selector) -> Self {
        Self(((user_cs32.raw() as u64) << 48) | ((kernel_cs.raw() as u64) << 32))
    }
    /// The selector in bits 47:32 (kernel CS on delivery from ring 3).
    pub const fn kernel_cs(self) -> u16 {
        (self.0 >> 32) as u16
    }
    /// The selector in bits 63:48 (user compatibility-mode CS).
    pub const fn user_cs32(self) -> u16 {
        (self.0 >> 48) as u16
    }
}

/// A canonical linear address MSR: LSTAR and the segment bases share the same check.
macro_rules! address_msr {
    ($(#[$doc:meta])* $name:ident = $addr:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(u64);

        impl $name {
            /// Refuses a non-canonical address (WRMSR would #GP).
            pub const fn new(address: u64) -> Result<Self, ValueError> {
                match check_address(address, 1) {
                    Ok(address) => Ok(Self(address)),
                    Err(error) => Err(error),
                }
            }
            /// The address.
            pub const fn address(self) -> u64 {
                self.0
            }
        }

        impl sealed::FromRaw for $name {
            fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
        }
        impl Msr for $name {
            const ADDR: u32 = $addr;
            fn raw(self) -> u64 {
                self.0
            }
        }
    };
}

address_msr!(
    /// IA32_LSTAR: 64-bit SYSCALL target under IDT delivery (ignored under FRED).
    Lstar = 0xC000_0082
);
address_msr!(
    /// IA32_CSTAR: the SYSCALL target from compatibility mode under IDT delivery (ignored
    /// under FRED). Never 0: with CSTAR unset a compat-mode SYSCALL enters ring 0 at RIP 0
    /// on the caller's stack (issue 13 finding 1).
    Cstar = 0xC000_0083
);
address_msr!(
    /// IA32_SYSENTER_ESP: the stack SYSENTER loads (unused: see [`SysenterCs`]).
    SysenterEsp = 0x0000_0175
);
address_msr!(
    /// IA32_SYSENTER_EIP: the entry SYSENTER jumps to (unused: see [`SysenterCs`]).
    SysenterEip = 0x0000_0176
);
address_msr!(
    /// IA32_FS_BASE.
    FsBase = 0xC000_0100
);
address_msr!(
    /// IA32_GS_BASE: the live GS base; in ring 0 always the nucleus' per-CPU block.
    GsBase = 0xC000_0101
);
address_msr!(
    /// IA32_KERNEL_GS_BASE: the inactive GS base; in ring 0 it holds the user's base, which
    /// ERETU (FRED) or SWAPGS (IDT) swaps in on the way to ring 3 (see `fred`).
    KernelGsBase = 0xC000_0102
);

/// IA32_SYSENTER_CS: the ring-0 CS of SYSENTER. fredvisor has no SYSENTER entry, so it is
/// [`SysenterCs::DISABLED`]: 0 makes every SYSENTER and SYSEXIT raise #GP(0) (SDM vol. 2B),
/// a fault of the server that tried (FRED ignores the MSR and delivers an event instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysenterCs(u64);

impl SysenterCs {
    pub const DISABLED: Self = Self(0);
}

impl sealed::FromRaw for SysenterCs {
    fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}
impl Msr for SysenterCs {
    const ADDR: u32 = 0x0000_0174;
    fn raw(self) -> u64 {
        self.0
    }
}

/// IA32_FMASK: RFLAGS bits SYSCALL clears under IDT delivery (FRED ignores it and always
/// delivers with RFLAGS = 0x2, fred-facts.md §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fmask(u64);

impl Fmask {
    /// Exactly these flags are cleared on SYSCALL.
    pub const fn new(cleared: Rflags) -> Self {
        Self(cleared.bits())
    }
    /// What the nucleus uses: entering ring 0 with interrupts off (IF), no single-step
    /// into the kernel (TF), the string direction the ABI expects (DF), SMAP enforced (AC),
    /// no stale nested-task bit (NT) and no user-chosen I/O privilege (IOPL).
    pub const fn nucleus() -> Self {
        Self::new(
            Rflags::IF
                .union(Rflags::TF)
                .union(Rflags::DF)
                .union(Rflags::AC)
                .union(Rflags::NT)
                .union(Rflags::IOPL),
        )
    }
    /// The cleared flags.
    pub const fn cleared(self) -> Rflags {
        Rflags::from_bits_retain(self.0)
    }
}

impl sealed::FromRaw for Star {
    fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}
impl Msr for Star {
    const ADDR: u32 = 0xC000_0081;
    fn raw(self) -> u64 {
        self.0
    }
}
impl sealed::FromRaw for Fmask {
    fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}
impl Msr for Fmask {
    const ADDR: u32 = 0xC000_0084;
    fn raw(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdt;

    #[test]
    fn legacy_addresses() {
        assert_eq!(Efer::ADDR, 0xC000_0080);
        assert_eq!(Star::ADDR, 0xC000_0081);
        assert_eq!(Lstar::ADDR, 0xC000_0082);
        assert_eq!(Cstar::ADDR, 0xC000_0083);
        assert_eq!(
            (SysenterCs::ADDR, SysenterEsp::ADDR, SysenterEip::ADDR),
            (0x174, 0x175, 0x176)
        );
        assert_eq!(SysenterCs::DISABLED.raw(), 0);
        assert_eq!(Fmask::ADDR, 0xC000_0084);
        assert_eq!(FsBase::ADDR, 0xC000_0100);
        assert_eq!(GsBase::ADDR, 0xC000_0101);
        assert_eq!(KernelGsBase::ADDR, 0xC000_0102);
    }

    #[test]
    fn star_layout_matches_gdt() {
        let star = Star::new(gdt::KERNEL_CS, gdt::USER_CS32);
        assert_eq!(star.raw(), 0xe023_e008_0000_0000);
        assert_eq!(star.kernel_cs() + 8, gdt::KERNEL_DS.raw());
        assert_eq!(star.user_cs32() + 8, gdt::USER_DS.raw());
        assert_eq!(star.user_cs32() + 16, gdt::USER_CS64.raw());
        assert_eq!(
            MsrWrite::of(star),
            MsrWrite {
                addr: 0xC000_0081,
                value: 0xe023_e008_0000_0000
            }
        );
    }

    #[test]
    fn fmask_clears_the_entry_flags() {
        // IF 0x200 | TF 0x100 | DF 0x400 | AC 0x4_0000 | NT 0x4000 | IOPL 0x3000
        assert_eq!(Fmask::nucleus().raw(), 0x4_7700);
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xffff_7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert_eq!(
            KernelGsBase::new(0x0000_8000_0000_0000),
            Err(ValueError::NotCanonical {
                value: 0x0000_8000_0000_0000
            })
        );
        assert_eq!(
            GsBase::new(0xffff_8000_0010_0000).map(GsBase::address),
            Ok(0xffff_8000_0010_0000)
        );
    }
}
