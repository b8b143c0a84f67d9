//! The descriptors a call-gate transfer reads (SDM vol. 3 §3.4.5, §5.8.3.1): the 16-byte
//! 64-bit call gate and the code segment it leads to, as the nucleus stored them (issue 16:
//! a present gate has DPL 0 and its own DPL in the target selector's RPL), and where a
//! guest's GDT and LDT are (what pv-server saw the nucleus accept).

use heapless::Vec;
use xen_abi::layout::selector::{FIRST_RESERVED_GDT_ENTRY, FLAT_KERNEL_CS};

const PRESENT: u64 = 1 << 47;
const CODE_OR_DATA: u64 = 1 << 44;
const CODE: u64 = 1 << 43;
const CONFORMING: u64 = 1 << 42;
const LONG: u64 = 1 << 53;
const DEFAULT_32: u64 = 1 << 54;
const CALL_GATE_64: u64 = 0xc;

const fn dpl(raw: u64) -> u8 {
    ((raw >> 45) & 3) as u8
}

/// Which table a selector names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Gdt,
    Ldt,
}

/// A selector's table and index (RPL dropped): the form of a selector error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectorIndex(pub u16);

impl SelectorIndex {
    pub const fn of(selector: u16) -> Self {
        Self(selector & !3)
    }

    pub const fn table(self) -> Table {
        if self.0 & 4 != 0 {
            Table::Ldt
        } else {
            Table::Gdt
        }
    }

    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    /// The error code naming this selector (EXT and IDT clear).
    pub const fn error_code(self) -> u64 {
        self.0 as u64
    }
}

/// The first 8 bytes of a descriptor, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// S = 1: not a gate.
    Segment,
    CallGate64,
    /// Any other system type.
    OtherSystem,
}

pub const fn kind(low: u64) -> Kind {
    if low & CODE_OR_DATA != 0 {
        Kind::Segment
    } else if (low >> 40) & 0xf == CALL_GATE_64 {
        Kind::CallGate64
    } else {
        Kind::OtherSystem
    }
}

/// A 64-bit call gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub offset: u64,
    pub target: SelectorIndex,
    pub dpl: u8,
    pub present: bool,
    /// The upper half's type field is 0, as the SDM requires.
    pub upper_ok: bool,
}

impl Gate {
    /// The gate in `low` (a [`Kind::CallGate64`]) and `high`. A present gate's DPL is the
    /// stored target's RPL (the nucleus' fix-up); a non-present one was stored as written.
    pub const fn parse(low: u64, high: u64) -> Self {
        let selector = (low >> 16) as u16;
        let present = low & PRESENT != 0;
        Self {
            offset: (low & 0xffff) | ((low >> 48) << 16) | (high & 0xffff_ffff) << 32,
            target: SelectorIndex::of(selector),
            dpl: if present {
                (selector & 3) as u8
            } else {
                dpl(low)
            },
            present,
            upper_ok: (high >> 40) & 0x1f == 0,
        }
    }
}

/// A segment a gate may lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeSegment {
    pub code: bool,
    pub conforming: bool,
    pub dpl: u8,
    /// L = 1 and D = 0.
    pub long: bool,
    pub present: bool,
}

impl CodeSegment {
    /// Xen's `FLAT_KERNEL_CS` as the guest kernel sees it: its own code, DPL 0.
    pub const FLAT_KERNEL: Self = Self {
        code: true,
        conforming: false,
        dpl: 0,
        long: true,
        present: true,
    };

    pub const fn parse(raw: u64) -> Self {
        Self {
            code: raw & CODE_OR_DATA != 0 && raw & CODE != 0,
            conforming: raw & CONFORMING != 0,
            dpl: dpl(raw),
            long: raw & LONG != 0 && raw & DEFAULT_32 == 0,
            present: raw & PRESENT != 0,
        }
    }
}

/// True for `FLAT_KERNEL_CS` with any RPL (the one reserved selector a gate may name).
pub const fn is_flat_kernel_cs(target: SelectorIndex) -> bool {
    target.0 == FLAT_KERNEL_CS & !3
}

/// True for a GDT index of the hypervisor's (Xen's reserved page 14 on).
pub const fn reserved_gdt(target: SelectorIndex) -> bool {
    matches!(target.table(), Table::Gdt) && target.index() >= FIRST_RESERVED_GDT_ENTRY
}

/// Descriptors in one frame.
pub const PER_FRAME: usize = 512;

/// Most GDT frames (`set_gdt`: 14 frames below the reserved entries).
pub const MAX_GDT_FRAMES: usize = 14;

/// A guest's descriptor tables as the nucleus accepted them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DescriptorRecord {
    /// `set_gdt`'s frames (MFNs) and entry count.
    pub gdt_frames: Vec<u64, MAX_GDT_FRAMES>,
    pub gdt_entries: u64,
    /// `SET_LDT`'s linear address and entry count (0: no LDT).
    pub ldt_va: u64,
    pub ldt_entries: u64,
}

impl DescriptorRecord {
    /// Entries of `table`.
    pub fn entries(&self, table: Table) -> u64 {
        match table {
            Table::Gdt => self.gdt_entries,
            Table::Ldt => self.ldt_entries,
        }
    }

    /// `set_gdt` succeeded with these frames.
    pub fn set_gdt(&mut self, frames: &[u64], entries: u64) {
        self.gdt_frames.clear();
        for &frame in frames.iter().take(MAX_GDT_FRAMES) {
            let _ = self.gdt_frames.push(frame);
        }
        self.gdt_entries = entries;
    }

    /// `SET_LDT` succeeded.
    pub fn set_ldt(&mut self, va: u64, entries: u64) {
        (self.ldt_va, self.ldt_entries) = if entries == 0 { (0, 0) } else { (va, entries) };
    }
}

/// Reads descriptors of the guest's own tables.
pub trait DescriptorSource {
    /// Descriptor `index` of `table` (8 bytes); `None` when it cannot be read.
    fn read(&mut self, table: Table, index: u16) -> Option<u64>;
}
