//! Console markers that tests wait for, spelled once for the nucleus, servers and tests.

/// Printed by the nucleus when boot is complete (and every loaded server said `Hello`).
pub const READY: &str = "nucleus: ready";
/// Banner prefix; the version follows.
pub const BANNER: &str = "fredvisor ";
/// Printed by the panic handler before the message and location.
pub const PANIC: &str = "nucleus: PANIC";
