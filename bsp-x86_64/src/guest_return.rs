//! What a guest vCPU may be resumed with (issue 15 point 2): pv-server answers a guest event
//! with new register state, and the nucleus checks the part that decides privilege before
//! ERETU/IRETQ uses it. Pure, so the host tests cover every case.
//!
//! * `cs` and `ss` must be RPL 3 and either Xen's flat selectors (`0xe033`, `0xe023`,
//!   `0xe02b`) or a selector of the guest's own descriptor tables (GDT index below the
//!   hypervisor's reserved 7168, or any LDT selector) once the guest has installed some;
//!   `ss` is never null (IRET to CPL 3 with a null SS faults in the nucleus).
//! * `rip` must be canonical (a non-canonical return faults in the nucleus, not the guest).
//! * RFLAGS is corrected, not refused: IOPL, VM, NT, VIF and VIP are cleared, IF and the
//!   fixed bit 1 are set, reserved bits dropped, as Xen's `iret` does. The guest's "interrupt
//!   flag" is its event mask in vcpu_info; the real IF stays on so the timer preempts it.
//! * `rsp` is the guest's business: a bad stack faults at CPL 3, in the guest.

use crate::regs::Rflags;
use xen_abi::layout::selector::{
    FIRST_RESERVED_GDT_ENTRY, FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64,
};

/// The privileged part of a guest's resume state, as pv-server proposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestReturn {
    pub rip: u64,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
}

/// What the guest has installed that its selectors may name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDescriptors {
    /// Entries of the guest's GDT (`set_gdt`), 0 if none.
    pub gdt_entries: u16,
    /// Whether the guest has an LDT (`mmuext_op(SET_LDT)`).
    pub has_ldt: bool,
}

/// Why a proposed return was refused (the vCPU is crashed, not resumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnRefused {
    /// A code selector the guest may not run with.
    CodeSelector(u16),
    /// A stack selector the guest may not run with.
    StackSelector(u16),
    /// RIP outside canonical form.
    NonCanonicalRip(u64),
}

impl core::fmt::Display for ReturnRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::CodeSelector(sel) => write!(f, "code selector {sel:#x} is not the guest's"),
            Self::StackSelector(sel) => write!(f, "stack selector {sel:#x} is not the guest's"),
            Self::NonCanonicalRip(rip) => write!(f, "rip {rip:#x} is not canonical"),
        }
    }
}

/// RFLAGS bits a guest keeps from its proposal; everything else is cleared or forced.
const GUEST_RFLAGS: Rflags = Rflags::USER_CHANGEABLE.union(Rflags::RF).union(Rflags::ID);

/// The RFLAGS a guest is resumed with for `proposed`.
pub fn guest_rflags(proposed: u64) -> u64 {
    (Rflags::from_bits_retain(proposed) & GUEST_RFLAGS)
        .union(Rflags::IF)
        .union(Rflags::FIXED)
        .bits()
}

/// True if `selector` may be loaded into CS (`code`) or SS at CPL 3 for this guest.
fn guest_selector(selector: u16, code: bool, tables: GuestDescriptors) -> bool {
    if selector & 3 != 3 {
        return false;
    }
    let flat = if code {
        selector == FLAT_RING3_CS64 || selector == FLAT_RING3_CS32
    } else {
        selector == FLAT_RING3_SS64
    };
    let ldt = selector & 4 != 0;
    let index = selector >> 3;
    let own = if ldt {
        tables.has_ldt
    } else {
        index != 0 && index < FIRST_RESERVED_GDT_ENTRY && index < tables.gdt_entries
    };
    flat || own
}

/// Checks and corrects `proposed`; the result is what the exit path loads.
pub fn check(
    proposed: GuestReturn,
    tables: GuestDescriptors,
) -> Result<GuestReturn, ReturnRefused> {
    if !guest_selector(proposed.cs, true, tables) {
        return Err(ReturnRefused::CodeSelector(proposed.cs));
    }
    if !guest_selector(proposed.ss, false, tables) {
        return Err(ReturnRefused::StackSelector(proposed.ss));
    }
    if ((proposed.rip << 16) as i64 >> 16) as u64 != proposed.rip {
        return Err(ReturnRefused::NonCanonicalRip(proposed.rip));
    }
    Ok(GuestReturn {
        rflags: guest_rflags(proposed.rflags),
        ..proposed
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NONE: GuestDescriptors = GuestDescriptors {
        gdt_entries: 0,
        has_ldt: false,
    };

    fn ret(cs: u16, ss: u16, rip: u64, rflags: u64) -> GuestReturn {
        GuestReturn {
            rip,
            cs,
            rflags,
            rsp: 0xdead_beef,
            ss,
        }
    }

    #[test]
    fn xen_flat_selectors_pass_and_rflags_is_corrected() {
        let ok = check(
            ret(0xe033, 0xe02b, 0x1000, 0x3246 | (1 << 17) | (1 << 14)),
            NONE,
        )
        .unwrap();
        // IOPL 3, VM and NT cleared; IF, bit 1, ZF, PF kept or set.
        assert_eq!(ok.rflags, 0x0246);
        assert_eq!(ok.rsp, 0xdead_beef);
        assert_eq!(
            check(ret(0xe023, 0xe02b, 0xffff_ffff_8000_0000, 0), NONE)
                .unwrap()
                .rflags,
            0x202
        );
        // Everything set: only the arithmetic flags, TF, DF, RF, AC and ID survive, plus IF and bit 1.
        assert_eq!(guest_rflags(u64::MAX), 0x25_0fd7);
    }

    #[test]
    fn privileged_selectors_and_bad_rip_are_refused() {
        for cs in [
            0x0008, 0xe008, 0xe030, 0xe032, 0xe02b, 0x0033, 0x0000, 0xe03b, 0xffff,
        ] {
            assert_eq!(
                check(ret(cs, 0xe02b, 0x1000, 0x202), NONE),
                Err(ReturnRefused::CodeSelector(cs)),
                "{cs:#x}"
            );
        }
        for ss in [0x0000, 0x0003, 0xe010, 0xe028, 0xe033, 0x002b, 0x0007] {
            assert_eq!(
                check(ret(0xe033, ss, 0x1000, 0x202), NONE),
                Err(ReturnRefused::StackSelector(ss)),
                "{ss:#x}"
            );
        }
        assert_eq!(
            check(ret(0xe033, 0xe02b, 0x0000_8000_0000_0000, 0x202), NONE),
            Err(ReturnRefused::NonCanonicalRip(0x0000_8000_0000_0000))
        );
        assert_eq!(
            ReturnRefused::CodeSelector(0xe008).to_string(),
            "code selector 0xe008 is not the guest's"
        );
    }

    #[test]
    fn guest_descriptor_tables_widen_the_choice() {
        // Linux's __USER_CS 0x33 / __USER_DS 0x2b live in its own GDT (entries 6 and 5).
        let linux = GuestDescriptors {
            gdt_entries: 16,
            has_ldt: false,
        };
        assert!(check(ret(0x33, 0x2b, 0x40_0000, 0x202), linux).is_ok());
        assert!(check(ret(0x33, 0x2b, 0x40_0000, 0x202), NONE).is_err());
        // Past the guest's table, RPL below 3, or an LDT selector without an LDT.
        assert!(check(ret(0x83, 0x2b, 0x1000, 0), linux).is_err());
        assert!(check(ret(0x30, 0x2b, 0x1000, 0), linux).is_err());
        assert!(check(ret(0x0f, 0x2b, 0x1000, 0), linux).is_err());
        let with_ldt = GuestDescriptors {
            gdt_entries: 16,
            has_ldt: true,
        };
        assert!(check(ret(0x0f, 0x17, 0x1000, 0), with_ldt).is_ok());
        // Even a full-size guest GDT never reaches the hypervisor's entries.
        let huge = GuestDescriptors {
            gdt_entries: u16::MAX,
            has_ldt: false,
        };
        assert!(check(ret(0xe00b, 0xe02b, 0x1000, 0), huge).is_err());
        assert!(check(ret(0xdffb, 0xe02b, 0x1000, 0), huge).is_ok());
    }

    proptest! {
        #[test]
        fn nothing_privileged_survives(cs in any::<u16>(), ss in any::<u16>(), rip in any::<u64>(), rflags in any::<u64>(), gdt in any::<u16>(), ldt in any::<bool>()) {
            let tables = GuestDescriptors { gdt_entries: gdt, has_ldt: ldt };
            if let Ok(out) = check(ret(cs, ss, rip, rflags), tables) {
                prop_assert_eq!(out.cs & 3, 3);
                prop_assert_eq!(out.ss & 3, 3);
                prop_assert!(out.ss != 3);
                prop_assert!(out.cs >> 3 < FIRST_RESERVED_GDT_ENTRY || out.cs == FLAT_RING3_CS64 || out.cs == FLAT_RING3_CS32 || out.cs & 4 != 0);
                prop_assert_eq!(((out.rip << 16) as i64 >> 16) as u64, out.rip);
                let flags = Rflags::from_bits_retain(out.rflags);
                prop_assert!(!flags.intersects(Rflags::IOPL | Rflags::VM | Rflags::NT | Rflags::VIF | Rflags::VIP));
                prop_assert!(flags.contains(Rflags::IF | Rflags::FIXED));
                prop_assert_eq!(out.rflags >> 22, 0);
            }
        }
    }
}
