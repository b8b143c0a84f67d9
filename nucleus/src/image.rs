//! What a loader hands `lifecycle`: the start parameters it is given and the loaded image it
//! returns (`loader` on bare metal, the host stand-in in tests).
use crate::mm::AddressSpace;
use ipc::ring::{Consumer, Producer};

/// What the start page tells the new thread.
pub struct StartParams<'a> {
    pub name: &'static str,
    pub generation: u32,
    /// Its `server-args=` (cut to what the start page holds).
    pub args: &'a [u8],
}

/// A loaded module, ready to run from `entry`.
pub struct Image {
    pub space: AddressSpace,
    pub entry: u64,
    /// The nucleus' ends of the thread's rings.
    pub events: Producer<'static>,
    pub replies: Consumer<'static>,
    /// Size of the ELF file and its loaded segments, for the `loaded` line.
    pub bytes: usize,
    pub segments: usize,
}
