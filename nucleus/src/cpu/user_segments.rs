//! What ring 3 finds in FS and GS, as a CPU holds it (`PerCpu::user_segments`) and the
//! switch path compares it (`enter`): its own module, below both.

/// What ring 3 finds in FS and GS: the FS base, the GS selector and the user GS base.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct UserSegments {
    pub(super) fs: u64,
    pub(super) gs_sel: u16,
    pub(super) gs: u64,
}

impl UserSegments {
    /// What a CPU holds before its first switch: a selector no load produces, so the first
    /// switch loads everything.
    pub(super) const UNKNOWN: Self = Self {
        fs: 0,
        gs_sel: 0xffff,
        gs: 0,
    };

    /// Zero bits, for the `PerCpu` pool's `.bss` image; `PerCpu::init` replaces it with
    /// [`UserSegments::UNKNOWN`] before the CPU runs anything.
    pub(super) const ZERO: Self = Self {
        fs: 0,
        gs_sel: 0,
        gs: 0,
    };

    /// What servers run with (they cannot change a base: every descriptor they can load
    /// has base 0, and CR4.FSGSBASE is off).
    pub(super) const fn is_zero(&self) -> bool {
        self.fs | self.gs | self.gs_sel as u64 == 0
    }
}
