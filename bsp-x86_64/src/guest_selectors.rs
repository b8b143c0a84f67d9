//! A PV64 vCPU's data-segment selectors (DS, ES, FS, GS) between runs (issue 16), and
//! whether one may be loaded again: the nucleus saves them when the vCPU stops and loads them
//! when it runs, in ring 0, where a selector whose descriptor the guest has since changed
//! (`update_descriptor`, `set_gdt`, `SET_LDT`) would fault in the nucleus. So every load is
//! checked first against the descriptor it names ([`loadable`]), as the CPU would check it
//! for a load at CPL 3; one that fails is loaded as null and reported, which is Xen's
//! failsafe-callback case (`load_segments`, pv64-abi.md §6.8). Pure, host-tested.

use crate::gdt::{self, FIRST_RESERVED_INDEX};

/// The four data-segment selectors, in the failsafe frame's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSelectors {
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
}

impl DataSelectors {
    pub const NULL: Self = Self {
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    };

    /// As the failsafe frame's words, ds first.
    pub const fn words(&self) -> [u16; 4] {
        [self.ds, self.es, self.fs, self.gs]
    }
}

const PRESENT: u64 = 1 << 47;
const CODE_OR_DATA: u64 = 1 << 44;
const EXECUTABLE: u64 = 1 << 43;
const CONFORMING: u64 = 1 << 42;
const READABLE: u64 = 1 << 41;
const DPL_SHIFT: u32 = 45;

/// Null selectors (index 0 of the GDT) load without a descriptor.
pub const fn is_null(selector: u16) -> bool {
    selector & !3 == 0
}

/// Whether `selector` may be loaded into a data-segment register at CPL 3, given the
/// descriptor it names (`None`: outside its table). The CPU's rules (SDM vol. 3 §5.5, the
/// `mov sreg` checks): present, a data segment or a readable code segment, and for all but
/// conforming code DPL ≥ max(CPL 3, RPL), i.e. DPL 3.
pub const fn loadable(selector: u16, descriptor: Option<u64>) -> bool {
    if is_null(selector) {
        return true;
    }
    let Some(d) = descriptor else {
        return false;
    };
    if d & PRESENT == 0 || d & CODE_OR_DATA == 0 {
        return false;
    }
    if d & EXECUTABLE != 0 && d & READABLE == 0 {
        return false;
    }
    let conforming_code = d & EXECUTABLE != 0 && d & CONFORMING != 0;
    conforming_code || (d >> DPL_SHIFT) & 3 == 3
}

/// Which table `selector` names and where in it, for a vCPU whose own GDT entries end at
/// [`FIRST_RESERVED_INDEX`] (above it, the hypervisor's page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Byte offset into the guest's part of the GDT.
    Gdt(u64),
    /// One of the hypervisor's reserved entries.
    Reserved(u16),
    /// Byte offset into the LDT.
    Ldt(u64),
}

pub const fn place(selector: u16) -> Place {
    let index = selector >> 3;
    if selector & 4 != 0 {
        Place::Ldt(index as u64 * 8)
    } else if index < FIRST_RESERVED_INDEX {
        Place::Gdt(index as u64 * 8)
    } else {
        Place::Reserved(selector & !3)
    }
}

/// The reserved entries a guest may name in a data register: Xen's flat ring-3 segments.
pub const fn reserved_loadable(selector_without_rpl: u16) -> bool {
    let flat = [gdt::USER_CS32, gdt::USER_DS, gdt::USER_CS64];
    let mut i = 0;
    while i < flat.len() {
        if flat[i].raw() & !3 == selector_without_rpl {
            return true;
        }
        i += 1;
    }
    false
}

/// Base and byte limit of the LDT an LDT descriptor (the 16 bytes at `gdt::LDT`) names;
/// `None` if it is not present.
pub const fn ldt_of(descriptor: [u64; 2]) -> Option<(u64, u64)> {
    let low = descriptor[0];
    if low & PRESENT == 0 {
        return None;
    }
    let base = ((low >> 16) & 0xff_ffff) | ((low >> 56) & 0xff) << 24 | descriptor[1] << 32;
    let limit = (low & 0xffff) | ((low >> 48) & 0xf) << 16;
    Some((base, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA3: u64 = 0x00cf_f200_0000_ffff;
    const DATA0: u64 = 0x00cf_9200_0000_ffff;
    const CODE3_READ: u64 = 0x00af_fa00_0000_ffff;
    const CODE3_EXEC_ONLY: u64 = 0x00af_f800_0000_ffff;
    const CONFORMING0: u64 = 0x00af_9e00_0000_ffff;

    #[test]
    fn null_always_loads() {
        assert!(loadable(0, None));
        assert!(loadable(3, None));
    }

    #[test]
    fn the_cpu_rules_for_a_data_register() {
        assert!(loadable(0x0b, Some(DATA3)));
        assert!(loadable(0x08, Some(DATA3)), "RPL 0 with DPL 3 loads");
        assert!(!loadable(0x0b, Some(DATA0)));
        assert!(!loadable(0x0b, Some(DATA3 & !PRESENT)), "not present");
        assert!(loadable(0x1b, Some(CODE3_READ)));
        assert!(!loadable(0x1b, Some(CODE3_EXEC_ONLY)));
        assert!(
            loadable(0x1b, Some(CONFORMING0)),
            "conforming code: no DPL check"
        );
        assert!(
            !loadable(0x0b, Some(0)),
            "a null descriptor (system type 0)"
        );
        assert!(!loadable(0x0b, None), "past the table");
    }

    #[test]
    fn places() {
        assert_eq!(place(0x0b), Place::Gdt(8));
        assert_eq!(place(0x0f), Place::Ldt(8));
        assert_eq!(place(0xe02b), Place::Reserved(0xe028));
        assert_eq!(place(0xdffb), Place::Gdt(0xdff8));
        assert!(reserved_loadable(0xe028) && reserved_loadable(0xe030));
        assert!(reserved_loadable(0xe020));
        assert!(!reserved_loadable(0xe010) && !reserved_loadable(0xe040));
    }

    #[test]
    fn ldt_descriptor_round_trip() {
        let base = 0xffff_8200_0001_0000;
        assert_eq!(ldt_of(gdt::ldt_descriptor(base, 2)), Some((base, 15)));
        assert_eq!(ldt_of([0, 0]), None);
    }
}
