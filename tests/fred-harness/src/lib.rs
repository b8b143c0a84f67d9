//! fred-harness: runs the nucleus' real FRED entry stubs and enable sequence in a host
//! process, with privileged instructions trapped and emulated (issue 8 point 6).
//!
//! The stubs are the text of `bsp_x86_64::entry_stubs!`, assembled here around recording
//! handlers ([`stubs`]); the enable sequence is `bsp_x86_64::fred::enable` itself. At CPL 3
//! every privileged instruction they execute raises `#GP` or `#UD`, which Linux turns into
//! `SIGSEGV`/`SIGILL`. [`trap`] catches those on an alternate signal stack, decodes the
//! instruction with iced-x86, emulates exactly the instructions FRED code uses against a
//! small machine model ([`machine`]), records each one and resumes after it. [`delivery`]
//! plays the CPU's part of event delivery: it writes the FRED return state (or the IDT
//! frame) on a test stack and jumps to the entry with every GPR loaded with a known value.
//!
//! What is and is not modelled is in README.md. Linux x86-64 only: elsewhere the crate is
//! empty.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

pub mod delivery;
pub mod machine;
pub mod stubs;
pub mod trap;
