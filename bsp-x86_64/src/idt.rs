//! IDT gates and exception vectors: the legacy delivery path and the early IDT.
//!
//! Owns the 16-byte interrupt-gate encoding, the 256-entry table, the `Vector` newtype with
//! the architectural exception names (`IstIndex`, the gate's stack field, is `tss`'s). The nucleus needs an IDT twice: as the
//! early IDT right after entering long mode (architecture.md §2 step 3), and as the delivery
//! path on CPUs without FRED. Under FRED the IDT is unused (fred-facts.md §11 point 4).
//! Does not own the stubs the gates point at (`entry::entry_stubs!`) nor `lidt` (`insn`).

use core::fmt;
use core::mem::size_of;

use crate::gdt::{DescriptorTablePointer, Selector};
pub use crate::tss::IstIndex;

/// An interrupt vector, 0..=255. Vectors 0..=31 are exceptions, the rest interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vector(u8);

impl Vector {
    pub const DE: Self = Self(0);
    pub const DB: Self = Self(1);
    pub const NMI: Self = Self(2);
    pub const BP: Self = Self(3);
    pub const OF: Self = Self(4);
    pub const BR: Self = Self(5);
    pub const UD: Self = Self(6);
    pub const NM: Self = Self(7);
    pub const DF: Self = Self(8);
    pub const TS: Self = Self(10);
    pub const NP: Self = Self(11);
    pub const SS: Self = Self(12);
    pub const GP: Self = Self(13);
    pub const PF: Self = Self(14);
    pub const MF: Self = Self(16);
    pub const AC: Self = Self(17);
    pub const MC: Self = Self(18);
    pub const XM: Self = Self(19);
    pub const VE: Self = Self(20);
    pub const CP: Self = Self(21);
    pub const HV: Self = Self(28);
    pub const VC: Self = Self(29);
    pub const SX: Self = Self(30);
    /// First vector that is not reserved for exceptions.
    pub const FIRST_INTERRUPT: Self = Self(32);

    pub const fn new(raw: u8) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u8 {
        self.0
    }

    /// Vectors 0..=31, reserved by the architecture for exceptions.
    pub const fn is_exception(self) -> bool {
        self.0 < 32
    }

    /// Whether IDT delivery pushes an error code for this exception (SDM vol. 3 §6.13 table
    /// 6-1). FRED always has an error-code slot; the IDT stubs push 0 where this is false.
    pub const fn has_error_code(self) -> bool {
        matches!(self.0, 8 | 10..=14 | 17 | 21 | 29 | 30)
    }

    /// The SDM mnemonic for exceptions (`"#PF"`), `"reserved"` for the reserved exception
    /// vectors and `"IRQ"` for vectors 32..=255 (the `Display` impl adds the number).
    pub const fn mnemonic(self) -> &'static str {
        match self.0 {
            0 => "#DE",
            1 => "#DB",
            2 => "NMI",
            3 => "#BP",
            4 => "#OF",
            5 => "#BR",
            6 => "#UD",
            7 => "#NM",
            8 => "#DF",
            10 => "#TS",
            11 => "#NP",
            12 => "#SS",
            13 => "#GP",
            14 => "#PF",
            16 => "#MF",
            17 => "#AC",
            18 => "#MC",
            19 => "#XM",
            20 => "#VE",
            21 => "#CP",
            28 => "#HV",
            29 => "#VC",
            30 => "#SX",
            9 | 15 | 22..=27 | 31 => "reserved",
            32..=255 => "IRQ",
        }
    }
}

impl From<u8> for Vector {
    fn from(raw: u8) -> Self {
        Self(raw)
    }
}

impl fmt::Display for Vector {
    /// `#PF (14)`, `reserved (15)`, `IRQ 37`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_exception() {
            write!(f, "{} ({})", self.mnemonic(), self.0)
        } else {
            write!(f, "IRQ {}", self.0)
        }
    }
}

/// System descriptor types a gate can have (SDM vol. 3 §3.5 table 3-2, IA-32e mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateKind {
    /// Type 0xE: clears IF on entry. The only kind the nucleus installs.
    Interrupt,
    /// Type 0xF: leaves IF alone.
    Trap,
    /// Any other type value: not a valid IDT gate in long mode.
    Invalid(u8),
}

/// A 16-byte IDT gate (SDM vol. 3 §6.14.1): offset 15:0 in bits 15:0, selector in 31:16,
/// IST in 34:32, type in 43:40, DPL in 46:45, P in 47, offset 31:16 in 63:48, and offset
/// 63:32 in the low half of the second qword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Gate([u64; 2]);

const _: () = assert!(size_of::<Gate>() == 16);

const SELECTOR_SHIFT: u32 = 16;
const IST_SHIFT: u32 = 32;
const IST_MASK: u64 = 0b111 << IST_SHIFT;
const TYPE_SHIFT: u32 = 40;
const TYPE_INTERRUPT: u64 = 0xe;
const TYPE_TRAP: u64 = 0xf;
const DPL_SHIFT: u32 = 45;
const DPL_MASK: u64 = 0b11 << DPL_SHIFT;
const PRESENT: u64 = 1 << 47;

/// The fields of a gate, for tests and dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateFields {
    pub offset: u64,
    pub selector: Selector,
    pub ist: Option<IstIndex>,
    pub kind: GateKind,
    pub dpl: u8,
    pub present: bool,
}

impl Gate {
    /// Not present: delivery through it raises `#NP` (then `#DF` if that gate is missing too).
    pub const MISSING: Self = Self([0; 2]);

    /// A present interrupt gate to `handler` in code segment `cs`: DPL 0 (so `int n` from ring 3
    /// raises `#GP`), no IST.
    pub const fn interrupt(handler: u64, cs: Selector) -> Self {
        let low = (handler & 0xffff)
            | ((cs.raw() as u64) << SELECTOR_SHIFT)
            | (TYPE_INTERRUPT << TYPE_SHIFT)
            | PRESENT
            | (((handler >> 16) & 0xffff) << 48);
        Self([low, handler >> 32])
    }

    /// Switches to IST stack `ist` on delivery (for `#DF`, NMI, `#MC`, `#DB`: architecture.md §4).
    #[must_use]
    pub const fn with_ist(self, ist: IstIndex) -> Self {
        Self([
            (self.0[0] & !IST_MASK) | ((ist.get() as u64) << IST_SHIFT),
            self.0[1],
        ])
    }

    /// Sets the gate's DPL: 3 lets ring 3 reach it with `int n`/`int3`/`into`. Panics above 3.
    #[must_use]
    pub const fn with_dpl(self, dpl: u8) -> Self {
        assert!(dpl <= 3, "DPL is 0..=3");
        Self([
            (self.0[0] & !DPL_MASK) | ((dpl as u64) << DPL_SHIFT),
            self.0[1],
        ])
    }

    /// Takes a gate as it sits in memory (reading a live IDT, tests).
    pub const fn from_raw(raw: [u64; 2]) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> [u64; 2] {
        self.0
    }

    pub const fn offset(self) -> u64 {
        (self.0[0] & 0xffff)
            | (((self.0[0] >> 48) & 0xffff) << 16)
            | ((self.0[1] & 0xffff_ffff) << 32)
    }

    pub const fn selector(self) -> Selector {
        Selector::from_raw((self.0[0] >> SELECTOR_SHIFT) as u16)
    }

    pub const fn ist(self) -> Option<IstIndex> {
        IstIndex::new(((self.0[0] & IST_MASK) >> IST_SHIFT) as u8)
    }

    pub const fn dpl(self) -> u8 {
        ((self.0[0] & DPL_MASK) >> DPL_SHIFT) as u8
    }

    pub const fn is_present(self) -> bool {
        self.0[0] & PRESENT != 0
    }

    pub const fn kind(self) -> GateKind {
        match (self.0[0] >> TYPE_SHIFT) & 0xf {
            TYPE_INTERRUPT => GateKind::Interrupt,
            TYPE_TRAP => GateKind::Trap,
            other => GateKind::Invalid(other as u8),
        }
    }

    /// All fields at once.
    pub const fn decode(self) -> GateFields {
        GateFields {
            offset: self.offset(),
            selector: self.selector(),
            ist: self.ist(),
            kind: self.kind(),
            dpl: self.dpl(),
            present: self.is_present(),
        }
    }
}

/// The interrupt descriptor table: one gate per vector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Idt([Gate; 256]);

const _: () = assert!(size_of::<Idt>() == 4096);

impl Default for Idt {
    fn default() -> Self {
        Self::new()
    }
}

impl Idt {
    /// Every gate not present.
    pub const fn new() -> Self {
        Self([Gate::MISSING; 256])
    }

    /// Installs `gate` for `vector` (a [`Vector`] or a plain `u8`).
    pub fn set(&mut self, vector: impl Into<Vector>, gate: Gate) {
        self.0[usize::from(vector.into().raw())] = gate;
    }

    pub fn get(&self, vector: impl Into<Vector>) -> Gate {
        self.0[usize::from(vector.into().raw())]
    }

    /// The operand for `lidt`. Only meaningful while `self` stays where it is.
    pub fn pointer(&self) -> DescriptorTablePointer {
        DescriptorTablePointer {
            limit: (size_of::<Self>() - 1) as u16,
            base: core::ptr::from_ref(self) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdt::KERNEL_CS;

    #[test]
    fn gate_keeps_high_offset() {
        let gate = Gate::interrupt(0xffff_8000_1234_5678, KERNEL_CS);
        assert_eq!(gate.raw()[1], 0xffff_8000);
        // offset 31:16 | P, DPL 0, type E | IST 0 | selector 0xe008 | offset 15:0
        assert_eq!(gate.raw()[0], 0x1234_8e00_e008_5678);
        assert_eq!(gate.offset(), 0xffff_8000_1234_5678);
    }

    #[test]
    fn gate_fields_round_trip() {
        let gate = Gate::interrupt(0xffff_ffff_8000_0abc, KERNEL_CS)
            .with_ist(IstIndex::IST3)
            .with_dpl(3);
        assert_eq!(
            gate.decode(),
            GateFields {
                offset: 0xffff_ffff_8000_0abc,
                selector: KERNEL_CS,
                ist: Some(IstIndex::IST3),
                kind: GateKind::Interrupt,
                dpl: 3,
                present: true,
            }
        );
        assert_eq!(gate.raw()[0] >> 32 & 0xffff, 0xee03);
        // Replacing IST and DPL clears the old values.
        let gate = gate.with_ist(IstIndex::IST1).with_dpl(0);
        assert_eq!((gate.ist(), gate.dpl()), (Some(IstIndex::IST1), 0));
        assert_eq!(Gate::from_raw(gate.raw()), gate);
    }

    #[test]
    fn gate_kinds() {
        assert_eq!(Gate::interrupt(0, KERNEL_CS).kind(), GateKind::Interrupt);
        assert_eq!(Gate::from_raw([0xf << 40, 0]).kind(), GateKind::Trap);
        assert_eq!(
            Gate::from_raw([0xc << 40, 0]).kind(),
            GateKind::Invalid(0xc)
        );
        assert!(!Gate::MISSING.is_present());
        assert_eq!(Gate::MISSING.ist(), None);
    }

    #[test]
    fn idt_set_get_pointer() {
        let mut idt = Box::new(Idt::new());
        assert!((0..=255u8).all(|v| !idt.get(v).is_present()));
        let gate = Gate::interrupt(0x1000, KERNEL_CS).with_ist(IstIndex::IST1);
        idt.set(Vector::DF, gate);
        idt.set(200u8, gate);
        assert_eq!(idt.get(8u8), gate);
        assert_eq!(idt.get(Vector::new(200)), gate);
        assert!(!idt.get(Vector::GP).is_present());
        let ptr = idt.pointer();
        assert_eq!({ ptr.limit }, 4095);
        assert_eq!({ ptr.base }, core::ptr::from_ref(&*idt) as u64);
    }

    #[test]
    fn ist_index_range() {
        assert_eq!(IstIndex::new(0), None);
        assert_eq!(IstIndex::new(1), Some(IstIndex::IST1));
        assert_eq!(IstIndex::new(7).map(IstIndex::get), Some(7));
        assert_eq!(IstIndex::new(8), None);
    }

    #[test]
    fn error_code_vectors() {
        let with: Vec<u8> = (0..=255u8)
            .filter(|&v| Vector::new(v).has_error_code())
            .collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }

    #[test]
    fn mnemonics_and_display() {
        let named = [
            (Vector::DE, "#DE"),
            (Vector::DB, "#DB"),
            (Vector::NMI, "NMI"),
            (Vector::BP, "#BP"),
            (Vector::OF, "#OF"),
            (Vector::BR, "#BR"),
            (Vector::UD, "#UD"),
            (Vector::NM, "#NM"),
            (Vector::DF, "#DF"),
            (Vector::TS, "#TS"),
            (Vector::NP, "#NP"),
            (Vector::SS, "#SS"),
            (Vector::GP, "#GP"),
            (Vector::PF, "#PF"),
            (Vector::MF, "#MF"),
            (Vector::AC, "#AC"),
            (Vector::MC, "#MC"),
            (Vector::XM, "#XM"),
            (Vector::VE, "#VE"),
            (Vector::CP, "#CP"),
            (Vector::HV, "#HV"),
            (Vector::VC, "#VC"),
            (Vector::SX, "#SX"),
        ];
        for (vector, mnemonic) in named {
            assert_eq!(vector.mnemonic(), mnemonic, "vector {}", vector.raw());
        }
        for reserved in [9, 15, 22, 27, 31] {
            assert_eq!(Vector::new(reserved).mnemonic(), "reserved");
        }
        assert_eq!(Vector::new(37).mnemonic(), "IRQ");
        assert_eq!(Vector::PF.to_string(), "#PF (14)");
        assert_eq!(Vector::new(15).to_string(), "reserved (15)");
        assert_eq!(Vector::new(37).to_string(), "IRQ 37");
        assert!(Vector::SX.is_exception() && !Vector::FIRST_INTERRUPT.is_exception());
    }
}
