//! nucleus: the Ring0 mechanism of fredvisor (architecture.md §1–4).
//!
//! Owns boot, the early IDT, the per-CPU stack block, the FRED entry page and the IDT
//! fallback, physical memory and address spaces, the thread table and the one dispatcher
//! both deliveries feed. Policy (diagnostics rendering, PV guests, call gates, kexec
//! ordering) lives in Ring3 servers. Module map and who may call whom:
//! `docs/architecture-notes.md`, "The nucleus' modules".
//!
//! `unsafe` is denied crate-wide and allowed only in the modules below that say why. The
//! safe core (`thread`, `syscall`, `forward`, `lifecycle`, `bench`) also builds on the host,
//! against the stand-ins in `host.rs`, and is unit-tested there; the rest is bare metal
//! only and built by `cargo run -p image-builder`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
#[macro_use]
#[allow(unsafe_code)] // the UART's ports, breaking the console lock on fatal paths
mod console;
#[cfg(not(target_os = "none"))]
#[macro_use]
mod host;
#[cfg(not(target_os = "none"))]
use host::{cpu, handoff, loader, mm};

// The safe core: host-tested.
mod bench;
#[allow(unsafe_code)] // guest frames through the direct map, the frame table's storage
mod domains;
mod forward;
mod image;
mod kexec;
mod layout;
mod lifecycle;
#[allow(unsafe_code)] // the two cells' own `Sync` and borrow (each argued in racy.rs)
mod racy;
mod syscall;
mod text;
mod thread;
#[allow(unsafe_code)] // PIC and PIT ports (the nucleus' own, never a server's)
mod timer;
#[allow(unsafe_code)] // the defmt logger's `unsafe impl`, COM2's port, RDTSC, the level cell
mod trace;

// Bare metal only.
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // multiboot2 header, 32→64-bit trampoline, the stack switch
mod boot;
#[cfg(target_os = "none")]
mod boot_state;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // reads GRUB's structure through a raw pointer
mod bootinfo;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // descriptor tables, MSRs, CR4.FRED, the stack block, entering a frame
mod cpu;
#[cfg(target_os = "none")]
mod dispatch;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // port writes that end an emulator run
mod exit;
#[cfg(target_os = "none")]
mod fatal;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the hand-off's low pages, the NMI shootdown, CR4.FRED off, the trampoline
mod handoff;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // copies a module into fresh frames and initialises its ring pages
mod loader;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // page tables through the direct map, CR3, module memory
mod mm;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // the fault probes the self-tests execute, the FRED MSRs they set
mod selftest;
#[cfg(target_os = "none")]
mod startup;
#[cfg(target_os = "none")]
mod symbols;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "nucleus runs on bare metal: build and boot it with `cargo run -p image-builder -- run`"
    );
}
