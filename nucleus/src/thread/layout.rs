//! Which slot is which thread: the boot threads, the guest slots, and a slot's id.

/// The threads started at boot: module string, and whose fault handler each is.
pub const BOOT_THREADS: [BootThread; 2] = [
    BootThread {
        name: "fred-server",
        fault_handler: None,
    },
    BootThread {
        name: "pv-server",
        fault_handler: Some(ThreadId(0)),
    },
];

/// The thread that manages guests (pv-server): the fault handler of every guest vCPU and
/// the only caller of the guest-manager syscalls.
pub const GUEST_MANAGER: ThreadId = ThreadId(1);

/// Guest vCPU slots after the servers: one vCPU per domain (issue 15), domain `d` (from 1)
/// in slot `BOOT_THREADS.len() + d - 1`.
pub const GUEST_SLOTS: usize = ipc::domain::MAX_DOMAINS;

/// How many threads the table holds.
pub const MAX_THREADS: usize = BOOT_THREADS.len() + GUEST_SLOTS;

/// One entry of [`BOOT_THREADS`].
#[derive(Clone, Copy, Debug)]
pub struct BootThread {
    pub name: &'static str,
    pub fault_handler: Option<ThreadId>,
}

/// A slot of the thread table; also the owner number servers see in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ThreadId(pub(super) usize);

impl ThreadId {
    pub const fn index(self) -> usize {
        self.0
    }

    /// The owner number in `Event`s and `ServerStarted`.
    pub const fn owner(self) -> u32 {
        self.0 as u32
    }
}
