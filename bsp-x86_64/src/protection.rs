//! The CPU's own protections against Ring3 code: SMEP, SMAP, UMIP, PGE, and no FPU for
//! servers (issue 13, findings 5 and 9).
//!
//! Owns which CR4 and CR0 bits the nucleus sets, decided from CPUID, and the boot line that
//! says which were found. Does not write the registers (the nucleus does, once, at boot).
//!
//! * SMEP: ring 0 never executes a user page (a jump to a server's address faults).
//! * SMAP: ring 0 never reads or writes a user page unless RFLAGS.AC is set. The nucleus
//!   reaches server memory only through its direct map, so it never needs `stac`; the IDT
//!   stubs clear AC on entry, because an interrupt gate keeps the AC a server set with `popf`.
//! * UMIP: SGDT, SIDT, SLDT, SMSW and STR raise #GP at CPL 3 (no descriptor-table addresses
//!   for servers).
//! * PGE: the nucleus' mappings are global, so switching servers keeps them in the TLB.
//! * CR0.EM|MP|TS: every x87, MMX and SSE instruction faults (#NM or #UD), so no FPU state
//!   can pass between servers; nothing in fredvisor uses the FPU (soft-float targets).

use core::fmt;

use crate::insn;
use crate::regs::{Cr0, Cr4};

/// What the CPU offers, from CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protections {
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    pub pge: bool,
}

const LEAF1_EDX_PGE: u32 = 1 << 13;
const LEAF7_EBX_SMEP: u32 = 1 << 7;
const LEAF7_EBX_SMAP: u32 = 1 << 20;
const LEAF7_ECX_UMIP: u32 = 1 << 2;

impl Protections {
    /// From CPUID.1:EDX and CPUID.(7,0):EBX/ECX.
    pub const fn from_cpuid(leaf1_edx: u32, leaf7_ebx: u32, leaf7_ecx: u32) -> Self {
        Self {
            smep: leaf7_ebx & LEAF7_EBX_SMEP != 0,
            smap: leaf7_ebx & LEAF7_EBX_SMAP != 0,
            umip: leaf7_ecx & LEAF7_ECX_UMIP != 0,
            pge: leaf1_edx & LEAF1_EDX_PGE != 0,
        }
    }

    /// Asks this CPU.
    pub fn probe() -> Self {
        let max = insn::cpuid(0, 0).eax;
        let leaf1 = insn::cpuid(1, 0);
        let (ebx, ecx) = if max >= 7 {
            let leaf7 = insn::cpuid(7, 0);
            (leaf7.ebx, leaf7.ecx)
        } else {
            (0, 0)
        };
        Self::from_cpuid(leaf1.edx, ebx, ecx)
    }

    /// The CR4 bits to set.
    pub fn cr4(self) -> Cr4 {
        let mut cr4 = Cr4::empty();
        for (present, bit) in [
            (self.smep, Cr4::SMEP),
            (self.smap, Cr4::SMAP),
            (self.umip, Cr4::UMIP),
            (self.pge, Cr4::PGE),
        ] {
            if present {
                cr4 |= bit;
            }
        }
        cr4
    }
}

/// CR0 bits that make every FPU instruction fault: EM (x87 → #NM, MMX and SSE → #UD), TS and
/// MP (WAIT/FWAIT → #NM too).
pub const NO_FPU: Cr0 = Cr0::EM.union(Cr0::TS).union(Cr0::MP);

/// The boot line's body: `SMEP on, SMAP off (cpu lacks it), UMIP on, PGE on`.
impl fmt::Display for Protections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, on) in [
            ("SMEP", self.smep),
            ("SMAP", self.smap),
            ("UMIP", self.umip),
            ("PGE", self.pge),
        ] {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match on {
                true => write!(f, "{name} on")?,
                false => write!(f, "{name} off (cpu lacks it)")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_bits_select_cr4_bits() {
        let all = Protections::from_cpuid(1 << 13, (1 << 7) | (1 << 20), 1 << 2);
        assert_eq!(all.cr4(), Cr4::SMEP | Cr4::SMAP | Cr4::UMIP | Cr4::PGE);
        assert_eq!(all.to_string(), "SMEP on, SMAP on, UMIP on, PGE on");
        let old = Protections::from_cpuid(1 << 13, 0, 0);
        assert_eq!(old.cr4(), Cr4::PGE);
        assert_eq!(
            old.to_string(),
            "SMEP off (cpu lacks it), SMAP off (cpu lacks it), UMIP off (cpu lacks it), PGE on"
        );
        assert_eq!(Protections::default().cr4(), Cr4::empty());
    }

    #[test]
    fn no_fpu_sets_em_ts_mp() {
        assert_eq!(NO_FPU.bits(), 0b1110);
    }

    #[test]
    fn this_host_reports_something_consistent() {
        let p = Protections::probe();
        // Every x86-64 CPU has PGE.
        assert!(p.pge);
    }
}
