//! ipc: everything that crosses the nucleus/server boundary (architecture.md §5).
//!
//! Owns the decoded event type every delivery produces, the messages exchanged with Ring3
//! servers and the shared-memory ring that carries them. Builds for the host and for
//! `x86_64-unknown-none`; nothing here touches hardware.
#![cfg_attr(not(test), no_std)]

pub mod event;
pub mod markers;

pub use event::{Event, EventKind};
pub mod dump;
