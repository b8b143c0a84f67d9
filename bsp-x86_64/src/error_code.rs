//! Exception error codes: the `#PF` bits and the selector format of `#TS/#NP/#SS/#GP`.
//!
//! Owns decoding and one-line rendering of the error codes the CPU pushes (or FRED stores at
//! frame+0x00), so the nucleus's fault lines and fred-server's call-gate emulation on
//! `#GP[sel]` read the same fields. Facts: SDM vol. 3 §6.13 (selector format) and §4.7
//! (page-fault error code). Does not decide what a fault means: that is dispatch and policy.

use core::fmt;

use bitflags::bitflags;

use crate::idt::Vector;

bitflags! {
    /// The page-fault error code (SDM vol. 3 §4.7). Built with `from_bits_retain` from what
    /// the CPU delivered, so bits this type does not name survive into the dump.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PageFaultError: u64 {
        /// Protection violation on a present page (clear: the page was not present).
        const PRESENT = 1 << 0;
        /// The access was a write (clear: a read).
        const WRITE = 1 << 1;
        /// The access came from CPL 3 (clear: supervisor).
        const USER = 1 << 2;
        /// A reserved bit was set in some paging-structure entry.
        const RESERVED_WRITE = 1 << 3;
        /// The access was an instruction fetch (with NX or SMEP).
        const INSTRUCTION_FETCH = 1 << 4;
        /// Protection-key violation.
        const PROTECTION_KEY = 1 << 5;
        /// Shadow-stack access (CET).
        const SHADOW_STACK = 1 << 6;
        /// SGX-specific access-control violation.
        const SGX = 1 << 15;
    }
}

impl PageFaultError {
    /// Keeps every bit, named or not: this is hardware input to report, not to clean up.
    pub const fn from_raw(raw: u64) -> Self {
        Self::from_bits_retain(raw)
    }
}

impl fmt::Display for PageFaultError {
    /// `[P W U RSVD I PK SS SGX]`: the first three always appear as P/NP, W/R, U/S; the other
    /// flags only when set; unnamed bits follow as `+0x…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pick = |flag, set, clear| if self.contains(flag) { set } else { clear };
        write!(
            f,
            "[{} {} {}",
            pick(Self::PRESENT, "P", "NP"),
            pick(Self::WRITE, "W", "R"),
            pick(Self::USER, "U", "S"),
        )?;
        let optional = [
            (Self::RESERVED_WRITE, "RSVD"),
            (Self::INSTRUCTION_FETCH, "I"),
            (Self::PROTECTION_KEY, "PK"),
            (Self::SHADOW_STACK, "SS"),
            (Self::SGX, "SGX"),
        ];
        for (flag, name) in optional {
            if self.contains(flag) {
                write!(f, " {name}")?;
            }
        }
        let unknown = self.bits() & !Self::all().bits();
        if unknown != 0 {
            write!(f, " +{unknown:#x}")?;
        }
        f.write_str("]")
    }
}

/// The table a selector error code refers to (bits 2:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorTable {
    Gdt,
    /// The index is an interrupt vector.
    Idt,
    Ldt,
}

impl DescriptorTable {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gdt => "GDT",
            Self::Idt => "IDT",
            Self::Ldt => "LDT",
        }
    }
}

/// The error code of `#TS`, `#NP`, `#SS` and `#GP` when it names a descriptor: EXT (bit 0),
/// IDT (bit 1), TI (bit 2, only meaningful when IDT is clear), index (bits 15:3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectorErrorCode(u16);

/// The delivered error code had bits above 15 set, so it is not a selector error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBitsSet {
    pub raw: u64,
}

impl fmt::Display for ReservedBitsSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error code {:#x}: reserved bits 63:16 set", self.raw)
    }
}

impl SelectorErrorCode {
    /// Checks the error code as delivered (a full qword under FRED and in the IDT frame).
    pub const fn try_from_raw(raw: u64) -> Result<Self, ReservedBitsSet> {
        if raw > u16::MAX as u64 {
            Err(ReservedBitsSet { raw })
        } else {
            Ok(Self(raw as u16))
        }
    }

    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The event was external to the program (an interrupt or an earlier event's delivery).
    pub const fn external(self) -> bool {
        self.0 & 0b001 != 0
    }

    pub const fn table(self) -> DescriptorTable {
        if self.0 & 0b010 != 0 {
            DescriptorTable::Idt
        } else if self.0 & 0b100 != 0 {
            DescriptorTable::Ldt
        } else {
            DescriptorTable::Gdt
        }
    }

    /// Descriptor index in [`Self::table`]; for the IDT this is the vector.
    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    /// The vector, when the code refers to an IDT gate.
    pub const fn vector(self) -> Option<Vector> {
        match self.table() {
            // An IDT index is a vector, 0..=255, unless the CPU delivered garbage.
            DescriptorTable::Idt if self.index() <= u8::MAX as u16 => {
                Some(Vector::new(self.index() as u8))
            }
            _ => None,
        }
    }
}

impl fmt::Display for SelectorErrorCode {
    /// `sel 0x0030: GDT index 6 (EXT=0)`, `sel 0x006a: IDT vector 13 (EXT=0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.table() {
            DescriptorTable::Idt => "vector",
            DescriptorTable::Gdt | DescriptorTable::Ldt => "index",
        };
        write!(
            f,
            "sel {:#06x}: {} {what} {} (EXT={})",
            self.0,
            self.table().name(),
            self.index(),
            u8::from(self.external())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_bits() {
        let bits = [
            (PageFaultError::PRESENT, 1 << 0),
            (PageFaultError::WRITE, 1 << 1),
            (PageFaultError::USER, 1 << 2),
            (PageFaultError::RESERVED_WRITE, 1 << 3),
            (PageFaultError::INSTRUCTION_FETCH, 1 << 4),
            (PageFaultError::PROTECTION_KEY, 1 << 5),
            (PageFaultError::SHADOW_STACK, 1 << 6),
            (PageFaultError::SGX, 1 << 15),
        ];
        for (flag, raw) in bits {
            assert_eq!(flag.bits(), raw);
            assert_eq!(PageFaultError::from_raw(raw), flag);
        }
    }

    #[test]
    fn page_fault_display() {
        let show = |raw| PageFaultError::from_raw(raw).to_string();
        assert_eq!(show(0), "[NP R S]");
        assert_eq!(show(0b111), "[P W U]");
        assert_eq!(show(0b1_0101), "[P R U I]");
        assert_eq!(show(0b1000), "[NP R S RSVD]");
        assert_eq!(show(0x807f), "[P W U RSVD I PK SS SGX]");
        assert_eq!(show(0x8000_0002), "[NP W S +0x80000000]");
    }

    #[test]
    fn selector_error_code_fields() {
        let gdt = SelectorErrorCode::try_from_raw(0x31).unwrap();
        assert_eq!(
            (gdt.table(), gdt.index(), gdt.external()),
            (DescriptorTable::Gdt, 6, true)
        );
        // 0x33 looks like a ring-3 selector but, as an error code, bit 1 means IDT.
        let idt6 = SelectorErrorCode::try_from_raw(0x33).unwrap();
        assert_eq!(
            (idt6.table(), idt6.index(), idt6.external()),
            (DescriptorTable::Idt, 6, true)
        );
        let gdt = SelectorErrorCode::try_from_raw(0x30).unwrap();
        assert_eq!(
            (gdt.table(), gdt.index(), gdt.external()),
            (DescriptorTable::Gdt, 6, false)
        );
        assert_eq!(gdt.vector(), None);

        let ldt = SelectorErrorCode::try_from_raw(0x0c).unwrap();
        assert_eq!((ldt.table(), ldt.index()), (DescriptorTable::Ldt, 1));

        let idt = SelectorErrorCode::try_from_raw(13 << 3 | 0b010).unwrap();
        assert_eq!((idt.table(), idt.index()), (DescriptorTable::Idt, 13));
        assert_eq!(idt.vector(), Some(Vector::GP));
        // With IDT set, TI is ignored.
        let idt_ti = SelectorErrorCode::try_from_raw(0x80 << 3 | 0b111).unwrap();
        assert_eq!(
            (idt_ti.table(), idt_ti.vector(), idt_ti.external()),
            (DescriptorTable::Idt, Some(Vector::new(0x80)), true)
        );
        assert_eq!(
            SelectorErrorCode::try_from_raw(0xffff).unwrap().vector(),
            None
        );
    }

    #[test]
    fn selector_error_code_reserved_bits() {
        assert_eq!(
            SelectorErrorCode::try_from_raw(0x1_0000),
            Err(ReservedBitsSet { raw: 0x1_0000 })
        );
        assert_eq!(
            SelectorErrorCode::try_from_raw(u64::MAX),
            Err(ReservedBitsSet { raw: u64::MAX })
        );
        assert_eq!(
            SelectorErrorCode::try_from_raw(0xffff).map(SelectorErrorCode::raw),
            Ok(0xffff)
        );
        assert_eq!(
            ReservedBitsSet { raw: 0x1_0000 }.to_string(),
            "error code 0x10000: reserved bits 63:16 set"
        );
    }

    #[test]
    fn selector_error_code_display() {
        let show = |raw| SelectorErrorCode::try_from_raw(raw).unwrap().to_string();
        assert_eq!(show(0x30), "sel 0x0030: GDT index 6 (EXT=0)");
        assert_eq!(show(0x31), "sel 0x0031: GDT index 6 (EXT=1)");
        assert_eq!(show(0x33), "sel 0x0033: IDT vector 6 (EXT=1)");
        assert_eq!(show(0x6a), "sel 0x006a: IDT vector 13 (EXT=0)");
        assert_eq!(show(0x0c), "sel 0x000c: LDT index 1 (EXT=0)");
    }
}
