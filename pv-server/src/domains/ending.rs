//! How a guest ended: the lifecycle line after `guest NAME: `.

use core::fmt;

use xen_abi::sched::ShutdownReason;

use crate::guest_traps::Crash;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Shutdown(ShutdownReason),
    Crashed(Crash),
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shutdown(reason) => write!(f, "shut down ({reason})"),
            Self::Crashed(crash) => write!(f, "crashed: {crash}"),
        }
    }
}
