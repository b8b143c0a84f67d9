//! Control registers, EFER and RFLAGS as typed bit sets (SDM vol. 3 §2.5, vol. 1 §3.4.3).
//!
//! Owns the bit names only: reading and writing the registers is `insn`'s job, and which
//! bits the nucleus sets is the bring-up code's. Names keep their SDM spelling so a grep
//! for `CR4.FSGSBASE` in the manual finds the flag. CR4.FRED is bit 32 (fred-facts.md §1.2),
//! which is why `Cr4` is 64 bits wide.

use bitflags::bitflags;

bitflags! {
    /// CR0 (SDM vol. 3 §2.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Protection enable.
        const PE = 1 << 0;
        /// Monitor coprocessor.
        const MP = 1 << 1;
        /// x87 emulation.
        const EM = 1 << 2;
        /// Task switched (lazy FPU).
        const TS = 1 << 3;
        /// Extension type (hard-wired 1).
        const ET = 1 << 4;
        /// Native x87 error reporting (#MF instead of IRQ13).
        const NE = 1 << 5;
        /// Supervisor writes honour read-only pages.
        const WP = 1 << 16;
        /// Alignment mask (RFLAGS.AC takes effect at CPL 3).
        const AM = 1 << 18;
        /// Not write-through.
        const NW = 1 << 29;
        /// Cache disable.
        const CD = 1 << 30;
        /// Paging.
        const PG = 1 << 31;
    }
}

bitflags! {
    /// CR4 (SDM vol. 3 §2.5; FRED: fred-facts.md §1.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// RDTSC only at CPL 0.
        const TSD = 1 << 2;
        /// Debugging extensions (DR4/DR5 fault, I/O breakpoints).
        const DE = 1 << 3;
        /// Page size extensions (4 MiB pages in 32-bit paging).
        const PSE = 1 << 4;
        /// Physical address extension (required for long mode).
        const PAE = 1 << 5;
        /// Machine-check enable.
        const MCE = 1 << 6;
        /// Global pages.
        const PGE = 1 << 7;
        /// RDPMC at any CPL.
        const PCE = 1 << 8;
        /// FXSAVE/FXRSTOR and SSE enabled by the OS.
        const OSFXSR = 1 << 9;
        /// Unmasked SIMD floating-point exceptions raise #XM.
        const OSXMMEXCPT = 1 << 10;
        /// User-mode instruction prevention (SGDT, SIDT, … at CPL 3 #GP).
        const UMIP = 1 << 11;
        /// 57-bit linear addresses (5-level paging).
        const LA57 = 1 << 12;
        /// VMX enable.
        const VMXE = 1 << 13;
        /// SMX enable.
        const SMXE = 1 << 14;
        /// RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE.
        const FSGSBASE = 1 << 16;
        /// Process-context identifiers.
        const PCIDE = 1 << 17;
        /// XSAVE and processor extended states.
        const OSXSAVE = 1 << 18;
        /// Key Locker.
        const KL = 1 << 19;
        /// Supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Supervisor-mode access prevention.
        const SMAP = 1 << 21;
        /// Protection keys for user pages.
        const PKE = 1 << 22;
        /// Control-flow enforcement technology.
        const CET = 1 << 23;
        /// Protection keys for supervisor pages.
        const PKS = 1 << 24;
        /// User interrupts.
        const UINTR = 1 << 25;
        /// Linear-address space separation.
        const LASS = 1 << 27;
        /// Linear-address masking for supervisor pointers.
        const LAM_SUP = 1 << 28;
        /// Flexible Return and Event Delivery (fred-facts.md §1.2): needs a 64-bit MOV to CR4
        /// and EFER.LMA = 1; reserved (#GP) unless CPUID.(7,1):EAX[17].
        const FRED = 1 << 32;
    }
}

bitflags! {
    /// IA32_EFER (MSR 0xC000_0080; SDM vol. 3 §2.2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// SYSCALL enable; still gates SYSCALL under FRED (fred-facts.md §1.3 step 7).
        const SCE = 1 << 0;
        /// Long mode enable.
        const LME = 1 << 8;
        /// Long mode active (read-only).
        const LMA = 1 << 10;
        /// No-execute enable (PTE bit 63).
        const NXE = 1 << 11;
    }
}

bitflags! {
    /// RFLAGS (SDM vol. 1 §3.4.3). IOPL is a two-bit field: use [`Rflags::iopl`] and
    /// [`Rflags::with_iopl`] rather than its two bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rflags: u64 {
        /// Carry.
        const CF = 1 << 0;
        /// Bit 1 is reserved and always reads 1; FRED delivery leaves RFLAGS = 0x2.
        const FIXED = 1 << 1;
        /// Parity.
        const PF = 1 << 2;
        /// Auxiliary carry.
        const AF = 1 << 4;
        /// Zero.
        const ZF = 1 << 6;
        /// Sign.
        const SF = 1 << 7;
        /// Trap (single-step).
        const TF = 1 << 8;
        /// Interrupt enable.
        const IF = 1 << 9;
        /// Direction.
        const DF = 1 << 10;
        /// Overflow.
        const OF = 1 << 11;
        /// Low bit of the I/O privilege level field.
        const IOPL0 = 1 << 12;
        /// High bit of the I/O privilege level field.
        const IOPL1 = 1 << 13;
        /// Both IOPL bits (the field mask).
        const IOPL = 0b11 << 12;
        /// Nested task.
        const NT = 1 << 14;
        /// Resume (suppresses instruction breakpoints for one instruction).
        const RF = 1 << 16;
        /// Virtual-8086 mode.
        const VM = 1 << 17;
        /// Alignment check / access control (SMAP override).
        const AC = 1 << 18;
        /// Virtual interrupt flag.
        const VIF = 1 << 19;
        /// Virtual interrupt pending.
        const VIP = 1 << 20;
        /// CPUID available.
        const ID = 1 << 21;
    }
}

impl Rflags {
    /// IF and the always-set bit 1, nothing else (IOPL 0): what a context the nucleus
    /// enters from scratch starts with.
    pub const INTERRUPTS_ON: Self = Self::IF.union(Self::FIXED);

    /// The flags unprivileged code may set for itself and a reply may propose for it: the
    /// arithmetic flags, TF, DF and AC (never IF, IOPL, NT, VM or the virtual-interrupt bits).
    pub const USER_CHANGEABLE: Self = Self::CF
        .union(Self::PF)
        .union(Self::AF)
        .union(Self::ZF)
        .union(Self::SF)
        .union(Self::TF)
        .union(Self::DF)
        .union(Self::OF)
        .union(Self::AC);

    /// The I/O privilege level, 0..=3.
    pub const fn iopl(self) -> u8 {
        ((self.bits() >> 12) & 0b11) as u8
    }

    /// The same flags with IOPL replaced; `None` if `level > 3`.
    pub const fn with_iopl(self, level: u8) -> Option<Self> {
        if level > 3 {
            return None;
        }
        let cleared = self.bits() & !Self::IOPL.bits();
        Some(Self::from_bits_retain(cleared | ((level as u64) << 12)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr4_fred_is_bit_32() {
        assert_eq!(Cr4::FRED.bits(), 0x1_0000_0000);
        assert_eq!(Cr4::FSGSBASE.bits(), 0x1_0000);
        assert_eq!(Cr4::PCIDE.bits(), 0x2_0000);
        assert_eq!(Cr4::OSXSAVE.bits(), 0x4_0000);
        assert_eq!(Cr4::SMEP.bits(), 0x10_0000);
        assert_eq!(Cr4::SMAP.bits(), 0x20_0000);
        assert_eq!(Cr4::CET.bits(), 0x80_0000);
        assert_eq!(
            Cr4::PAE.bits() | Cr4::PGE.bits() | Cr4::OSFXSR.bits(),
            0x2a0
        );
    }

    #[test]
    fn cr0_and_efer_bits() {
        assert_eq!((Cr0::PE | Cr0::WP | Cr0::PG).bits(), 0x8001_0001);
        assert_eq!(
            (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits(),
            0xd01
        );
    }

    #[test]
    fn rflags_bits_and_iopl_field() {
        assert_eq!((Rflags::IF | Rflags::FIXED).bits(), 0x202);
        assert_eq!(Rflags::ID.bits(), 1 << 21);
        assert_eq!(Rflags::IOPL.bits(), 0x3000);
        let flags = Rflags::from_bits_retain(0x3202);
        assert_eq!(flags.iopl(), 3);
        assert_eq!(flags.with_iopl(1), Some(Rflags::from_bits_retain(0x1202)));
        assert_eq!(flags.with_iopl(0).map(Rflags::iopl), Some(0));
        assert_eq!(flags.with_iopl(4), None);
    }
}
