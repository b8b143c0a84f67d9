//! Frame numbers (pv64-abi.md, "Conventions"): a guest names memory by machine frame
//! number in its page tables and p2m list, and by pseudo-physical frame number in its own
//! layout. Two types, so that one is never passed where the other is meant.

use core::fmt;

use crate::PAGE_SHIFT;

/// A machine frame number: a real host frame (the guest page tables are the hardware's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mfn(pub u64);

/// A guest pseudo-physical frame number: an index into the guest's p2m list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

impl Mfn {
    /// The frame holding machine address `addr` (its low 12 bits are dropped).
    pub const fn containing(addr: u64) -> Self {
        Self(addr >> PAGE_SHIFT)
    }

    /// Its machine address (wrapping for numbers no real frame has).
    pub const fn addr(self) -> u64 {
        self.0.wrapping_shl(PAGE_SHIFT)
    }
}

impl fmt::Display for Mfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mfn {:#x}", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Mfn(0x1234).addr(), 0x123_4000);
        assert_eq!(Mfn::containing(0x123_4fff), Mfn(0x1234));
        assert_eq!(Mfn(5).to_string(), "mfn 0x5");
        assert_eq!(Pfn(16).to_string(), "pfn 0x10");
    }
}
