//! Atomics for the ring: `core`'s in every real build, loom's when the crate is model-checked.
//!
//! `tests/loom.rs` builds the crate with `RUSTFLAGS="--cfg loom"`; loom then replaces the
//! atomics with its own, explores the interleavings of the producer and the consumer, and
//! checks every access to the data area through a shadow cell per 8-byte granule (a read
//! that is not ordered after the write it sees is reported as a causality violation).
//! Nothing else in the crate knows which implementation it got.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering};

/// One loom-tracked cell per 8-byte granule of the data area (loom builds only).
#[cfg(loom)]
pub(crate) type ShadowCell = loom::cell::UnsafeCell<()>;
