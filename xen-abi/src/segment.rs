//! `set_segment_base` (hypercall 25, pv64-abi.md §4.14): `set_segment_base(which, base)`.

abi_enum! {
    /// Which base the call sets.
    pub enum SegmentBaseWhich: u32 {
        /// FS base.
        Fs = 0,
        /// The GS base user mode will see.
        GsUser = 1,
        /// The GS base kernel mode sees.
        GsKernel = 2,
        /// Load `base[15:0]` as the user-mode %gs selector.
        GsUserSel = 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (index, which) in SegmentBaseWhich::ALL.iter().enumerate() {
            assert_eq!(which.raw() as usize, index);
        }
        assert_eq!(SegmentBaseWhich::from_raw(4), None);
    }
}
