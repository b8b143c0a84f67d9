//! `sched_op` (hypercall 29, pv64-abi.md §4.16): `sched_op(cmd, arg)`.

use core::fmt;

use crate::wire;

abi_enum! {
    /// The `cmd` argument of `sched_op`.
    pub enum SchedOpCmd: u32 {
        /// Give up the CPU; returns 0.
        Yield = 0,
        /// Unmask events and sleep until one is pending.
        Block = 1,
        /// Stop the domain; `arg` points at a [`SchedShutdown`]. Does not return.
        Shutdown = 2,
        /// Sleep until a listed port is pending or a timeout; `arg` points at a [`SchedPoll`].
        Poll = 3,
        /// Latch a shutdown reason without stopping; `arg` points at a [`SchedShutdown`].
        ShutdownCode = 5,
    }
}

abi_enum! {
    /// Why a domain shut down (`struct sched_shutdown.reason`).
    pub enum ShutdownReason: u32 {
        Poweroff = 0,
        Reboot = 1,
        Suspend = 2,
        Crash = 3,
        Watchdog = 4,
        SoftReset = 5,
    }
}

impl ShutdownReason {
    /// The word the lifecycle line uses (`shut down (poweroff)`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `struct sched_shutdown`: the argument of `SCHEDOP_shutdown`/`shutdown_code`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    /// A [`ShutdownReason`] number (unchecked: a guest may pass anything).
    pub reason: u32,
}

/// `struct sched_poll` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPoll {
    /// Guest pointer to `nr_ports` u32 event-channel ports.
    pub ports: u64,
    pub nr_ports: u32,
    pub _pad: u32,
    /// Absolute system time in ns; 0 = no timeout.
    pub timeout: u64,
}

// pv64-abi.md §4.16.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SchedShutdown>() == 4);
    assert!(size_of::<SchedPoll>() == 24);
    assert!(offset_of!(SchedPoll, ports) == 0);
    assert!(offset_of!(SchedPoll, nr_ports) == 8);
    assert!(offset_of!(SchedPoll, timeout) == 16);
};

impl SchedShutdown {
    pub const SIZE: usize = 4;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            reason: u32::from_le_bytes(*bytes),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.reason.to_le_bytes()
    }
}

impl SchedPoll {
    pub const SIZE: usize = 24;

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        use core::mem::offset_of;
        Self {
            ports: wire::get_u64(bytes, offset_of!(Self, ports)),
            nr_ports: wire::get_u32(bytes, offset_of!(Self, nr_ports)),
            _pad: 0,
            timeout: wire::get_u64(bytes, offset_of!(Self, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            SchedOpCmd::ALL.iter().map(|c| c.raw()).collect::<Vec<_>>(),
            [0, 1, 2, 3, 5]
        );
        assert_eq!(SchedOpCmd::from_raw(4), None);
        for (reason, number, name) in [
            (ShutdownReason::Poweroff, 0, "poweroff"),
            (ShutdownReason::Reboot, 1, "reboot"),
            (ShutdownReason::Suspend, 2, "suspend"),
            (ShutdownReason::Crash, 3, "crash"),
            (ShutdownReason::Watchdog, 4, "watchdog"),
            (ShutdownReason::SoftReset, 5, "soft_reset"),
        ] {
            assert_eq!(reason.raw(), number);
            assert_eq!(reason.to_string(), name);
        }
        assert_eq!(ShutdownReason::from_raw(6), None);
    }

    #[test]
    fn codecs() {
        assert_eq!(SchedShutdown::from_bytes(&[3, 0, 0, 0]).reason, 3);
        assert_eq!(SchedShutdown { reason: 4 }.to_bytes(), [4, 0, 0, 0]);
        let mut bytes = [0u8; 24];
        bytes[0] = 0x10;
        bytes[8] = 2;
        bytes[16] = 0x77;
        assert_eq!(
            SchedPoll::from_bytes(&bytes),
            SchedPoll {
                ports: 0x10,
                nr_ports: 2,
                _pad: 0,
                timeout: 0x77
            }
        );
    }
}
