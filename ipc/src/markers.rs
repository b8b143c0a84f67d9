//! Console markers that tests wait for, spelled once for the nucleus, servers and tests.

/// Printed by the nucleus when boot is complete (and every loaded server said `Hello`).
pub const READY: &str = "nucleus: ready";
/// Banner prefix; the version follows.
pub const BANNER: &str = "fredvisor ";
/// Printed by the panic handler before the message and location.
pub const PANIC: &str = "nucleus: PANIC";

/// Value written to QEMU's `isa-debug-exit` (port 0xf4) for success; QEMU exits with
/// `(value << 1) | 1` = 33.
pub const QEMU_EXIT_SUCCESS: u8 = 0x10;
/// Value written to `isa-debug-exit` for failure; QEMU exits with 35.
pub const QEMU_EXIT_FAILURE: u8 = 0x11;
/// I/O port of QEMU's `isa-debug-exit` device as the boot tests configure it.
pub const QEMU_EXIT_PORT: u16 = 0xf4;
/// Bochs' shutdown port: writing the bytes `Shutdown` there ends the simulation.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
