//! ipc: everything that crosses the nucleus/server boundary (architecture.md §5).
//!
//! Owns the decoded event type every delivery produces, the messages exchanged with Ring3
//! servers and the shared-memory ring that carries them. Builds for the host and for
//! `x86_64-unknown-none`; nothing here touches hardware.
//!
//! `unsafe` lives in [`ring`] only: it is the one module that reads and writes a memory region
//! shared with another address space. The codec, the message types and the syscall table are
//! safe code. Under `--cfg loom` the crate links `std` (loom needs it) and the ring's atomics
//! come from loom (see `sync`).
#![cfg_attr(not(any(test, loom)), no_std)]
#![deny(unsafe_code)]

pub mod event;
pub mod layout;
pub mod markers;

pub use event::{Event, EventKind, EventWire};
pub mod domain;
pub mod dump;

pub mod answer;
pub mod codec;
pub mod console;
pub mod dump_parts;
mod hot_path;
pub mod message;
#[allow(unsafe_code)]
pub mod ring;
#[cfg(all(feature = "rt", target_os = "none"))]
#[allow(unsafe_code)] // the Ring3 runtime: `syscall`, `_start`, the StartInfo and ring pages
pub mod rt;
mod sync;
pub mod syscall;
pub mod trace;

pub use answer::Answer;
pub use codec::{DecodeError, EncodeError, PROTOCOL_VERSION, RecvError, SendError};
pub use message::{Hello, NucleusMessage, Reply, ServerMessage, Token};
pub use ring::{Consumer, Producer, RingCorrupt, RingStorage};
