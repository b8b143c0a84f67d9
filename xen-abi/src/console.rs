//! `console_io` (hypercall 18, pv64-abi.md §4.8): `console_io(cmd, count, buf)`.

abi_enum! {
    /// The `cmd` argument of `console_io`.
    pub enum ConsoleIoCmd: u32 {
        /// Write `count` bytes from `buf`; returns 0.
        Write = 0,
        /// Read up to `count` pending bytes into `buf`; returns the number read.
        Read = 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(ConsoleIoCmd::Write.raw(), 0);
        assert_eq!(ConsoleIoCmd::Read.raw(), 1);
        assert_eq!(ConsoleIoCmd::from_raw(2), None);
    }
}
