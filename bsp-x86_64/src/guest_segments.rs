//! A PV64 vCPU's FS and GS bases (pv64-abi.md §4.14, `set_segment_base`), as the nucleus
//! keeps them between runs. Pure, so the host tests cover every case; the nucleus loads the
//! live ones when the vCPU runs (`cpu::load_user_segments`) and reads them back when it
//! stops, so a base the guest changed itself (a selector load) survives a preemption.
//!
//! A PV64 guest kernel and its user mode both run at CPL 3, so "kernel" and "user" GS are
//! both user GS bases to the CPU: the one live is chosen by the guest's mode, the other kept
//! here (Xen swaps them with SWAPGS on a mode change; under FRED there is no SWAPGS, and the
//! nucleus never needs it: it writes the live one on the way in).
//!
//! Where Xen reads the base a selector gives back from the CPU, `GS_USER_SEL` here knows the
//! only data descriptor a guest can name until it has descriptor tables of its own: Xen's flat
//! `0xe02b` (base 0). Any other selector loads null, which, as on Intel CPUs, keeps the base.

use crate::msr::is_canonical;
use xen_abi::Errno;
use xen_abi::layout::selector::FLAT_RING3_DS32;
use xen_abi::segment::SegmentBaseWhich;

/// The saved segment state of one guest vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentBases {
    pub fs: u64,
    /// The GS base the guest kernel sees (its per-CPU area, as Linux uses it).
    pub gs_kernel: u64,
    /// The GS base guest user mode sees.
    pub gs_user: u64,
    /// The GS selector (null, or Xen's flat data selector), shared by both modes.
    pub gs_sel: u16,
}

impl SegmentBases {
    /// What a server or a fresh vCPU runs with: null GS, every base 0.
    pub const ZERO: Self = Self {
        fs: 0,
        gs_kernel: 0,
        gs_user: 0,
        gs_sel: 0,
    };

    /// `set_segment_base(which, base)`: `which` is Xen's `unsigned int` (so only its low 32
    /// bits count), `base` must be canonical for the three bases. Refused → nothing changed.
    pub fn set(&mut self, which: u64, base: u64) -> Result<(), Errno> {
        let which = SegmentBaseWhich::from_raw(u64::from(which as u32)).ok_or(Errno::Einval)?;
        if which != SegmentBaseWhich::GsUserSel && !is_canonical(base) {
            return Err(Errno::Einval);
        }
        match which {
            SegmentBaseWhich::Fs => self.fs = base,
            SegmentBaseWhich::GsUser => self.gs_user = base,
            SegmentBaseWhich::GsKernel => self.gs_kernel = base,
            SegmentBaseWhich::GsUserSel => {
                let mut sel = base as u16;
                if sel > 3 {
                    sel |= 3;
                }
                if sel == FLAT_RING3_DS32 {
                    self.gs_sel = sel;
                    self.gs_user = 0;
                } else {
                    // A bad selector loads null rather than failing; null keeps the base.
                    self.gs_sel = 0;
                }
            }
        }
        Ok(())
    }

    /// The GS base live while the guest runs in kernel mode (`kernel`) or user mode.
    pub const fn live_gs(&self, kernel: bool) -> u64 {
        if kernel { self.gs_kernel } else { self.gs_user }
    }

    /// Takes back what the CPU held when the vCPU stopped (bases are canonical: the CPU
    /// holds nothing else).
    pub fn save_live(&mut self, kernel: bool, fs: u64, gs: u64) {
        self.fs = fs;
        if kernel {
            self.gs_kernel = gs;
        } else {
            self.gs_user = gs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

    #[test]
    fn each_base_is_set_alone() {
        let mut b = SegmentBases::ZERO;
        assert_eq!(b.set(0, 0x7fff_f000), Ok(()));
        assert_eq!(b.set(1, 0x1234_5000), Ok(()));
        assert_eq!(b.set(2, 0xffff_8880_0000_0000), Ok(()));
        assert_eq!(
            b,
            SegmentBases {
                fs: 0x7fff_f000,
                gs_user: 0x1234_5000,
                gs_kernel: 0xffff_8880_0000_0000,
                gs_sel: 0,
            }
        );
        assert_eq!(b.live_gs(true), 0xffff_8880_0000_0000);
        assert_eq!(b.live_gs(false), 0x1234_5000);
    }

    #[test]
    fn non_canonical_bases_and_unknown_which_are_einval_and_change_nothing() {
        let mut b = SegmentBases {
            fs: 1,
            gs_kernel: 2,
            gs_user: 3,
            gs_sel: 0,
        };
        let before = b;
        for which in 0..3 {
            for base in [
                NON_CANONICAL,
                0x0000_ffff_ffff_ffff + 1,
                0x7fff_0000_0000_0000,
            ] {
                assert_eq!(b.set(which, base), Err(Errno::Einval), "{which} {base:#x}");
            }
        }
        for which in [4, 5, 0xffff_ffff] {
            assert_eq!(b.set(which, 0), Err(Errno::Einval));
        }
        assert_eq!(b, before);
    }

    #[test]
    fn which_is_an_unsigned_int() {
        let mut b = SegmentBases::ZERO;
        assert_eq!(b.set(1 << 32, 0x5000), Ok(()));
        assert_eq!(b.fs, 0x5000);
        assert_eq!(b.set((1 << 32) | 2, 0x6000), Ok(()));
        assert_eq!(b.gs_kernel, 0x6000);
    }

    #[test]
    fn gs_user_sel_loads_the_flat_selector_or_null() {
        let mut b = SegmentBases {
            gs_user: 0x9000,
            ..SegmentBases::ZERO
        };
        // RPL forced to 3: 0xe028 is 0xe02b; the flat segment's base is 0.
        assert_eq!(b.set(3, 0xe028), Ok(()));
        assert_eq!((b.gs_sel, b.gs_user), (0xe02b, 0));
        // Only the low 16 bits are the selector; no canonical check on them.
        b.gs_user = 0x9000;
        assert_eq!(b.set(3, NON_CANONICAL | 0xe02b), Ok(()));
        assert_eq!((b.gs_sel, b.gs_user), (0xe02b, 0));
        // Anything else: null, the base kept.
        for sel in [0, 3, 0x10, 0xe033, 0xe023, 0x2b, 0xffff] {
            b.gs_user = 0x9000;
            b.gs_sel = 0xe02b;
            assert_eq!(b.set(3, sel), Ok(()));
            assert_eq!((b.gs_sel, b.gs_user), (0, 0x9000), "{sel:#x}");
        }
        assert_eq!(b.gs_kernel, 0);
    }

    #[test]
    fn save_live_takes_the_live_gs_of_the_mode() {
        let mut b = SegmentBases::ZERO;
        b.save_live(true, 0x10, 0x20);
        assert_eq!((b.fs, b.gs_kernel, b.gs_user), (0x10, 0x20, 0));
        b.save_live(false, 0x30, 0x40);
        assert_eq!((b.fs, b.gs_kernel, b.gs_user), (0x30, 0x20, 0x40));
    }

    proptest! {
        #[test]
        fn a_refused_call_changes_nothing(which: u64, base: u64, fs: u64) {
            let mut b = SegmentBases { fs: fs & 0x7fff_ffff_ffff, ..SegmentBases::ZERO };
            let before = b;
            if b.set(which, base).is_err() {
                prop_assert_eq!(b, before);
            } else {
                prop_assert!(is_canonical(b.fs) && is_canonical(b.gs_kernel));
                prop_assert!(is_canonical(b.gs_user));
            }
        }
    }
}
