//! Boot scenarios shared by the QEMU tests (`tests/events.rs`, `fred_decision.rs`,
//! `servers.rs`, `hostile.rs`, `nesting.rs`) and the FRED-CPU tests (`tests/fred_cpu.rs`):
//! each takes the [`Machine`](crate::machine::Machine) and asserts the same lines on both,
//! with the delivery-dependent ones (decision, `delivery:` line) asked from the machine.
pub mod callgates;
pub mod events;
pub mod fred_decision;
pub mod fred_only;
pub mod guest_services;
pub mod guest_traps;
pub mod guests;
pub mod hostile;
pub mod nesting;
pub mod segments;
pub mod servers;
