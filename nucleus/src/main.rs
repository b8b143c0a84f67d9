//! nucleus: the Ring0 mechanism of fredvisor (architecture.md §1–4).
//!
//! Owns boot, the early IDT, the per-CPU stack block, the FRED entry page and the IDT
//! fallback, physical memory and address spaces, and the one dispatcher both deliveries feed.
//! Policy (diagnostics rendering, PV guests, call gates, kexec ordering) lives in Ring3
//! servers. `unsafe` is denied crate-wide and allowed only in the modules named below,
//! each of which says in its header why it needs it.
//!
//! On the host this crate is only a stub `main`: the nucleus runs on bare metal and is
//! built by `cargo run -p image-builder`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
#[macro_use]
#[allow(unsafe_code)] // the UART's ports, breaking the console lock on fatal paths
mod console;

#[cfg(target_os = "none")]
#[allow(unsafe_code)] // multiboot2 header, 32→64-bit trampoline
mod boot;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // reads GRUB's structure through a raw pointer
mod bootinfo;
#[cfg(target_os = "none")]
#[allow(unsafe_code)] // port writes that end an emulator run
mod exit;
#[cfg(target_os = "none")]
mod panic;

#[cfg(target_os = "none")]
pub use kernel::kernel_entry;

#[cfg(target_os = "none")]
mod kernel {
    use crate::bootinfo::{self, Escaped};
    use crate::exit;

    /// Rust entry from `boot.rs`: EDI = multiboot2 magic, ESI = boot information (physical).
    pub extern "C" fn kernel_entry(magic: u32, info: u32) -> ! {
        crate::console::init();
        println!("{}{}", ipc::markers::BANNER, env!("CARGO_PKG_VERSION"));

        // SAFETY: called once on the boot page tables, which identity-map the first 4 GiB
        // where GRUB placed its structure.
        #[allow(unsafe_code)]
        let summary = match unsafe { bootinfo::read(magic, info) } {
            Ok(summary) => summary,
            Err(e) => {
                println!("{e}");
                println!("nucleus: cannot continue without boot information; halting");
                exit::halt_forever();
            }
        };
        early_arm_exit(&summary.cmdline);

        println!("cmdline: {}", Escaped(&summary.cmdline));
        if summary.cmdline_truncated {
            println!("cmdline: longer than {} bytes, cut", bootinfo::CMDLINE_MAX);
        }
        println!(
            "memory: {} MiB usable in {} regions",
            summary.usable_bytes() >> 20,
            summary.regions.len()
        );
        for module in &summary.modules {
            println!(
                "module: {} ({} bytes at {:#x})",
                Escaped(&module.name),
                module.size(),
                module.range.start
            );
        }
        if summary.modules.is_empty() {
            println!("module: none");
        }
        if words(&summary.cmdline).any(|w| w == b"selftest=panic") {
            panic!("selftest: forced panic");
        }
        println!("{}", ipc::markers::READY);
        exit::exit(exit::Status::Success);
    }

    fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
        cmdline.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty())
    }

    /// Arms the test exit before anything else can fail, so even a fault reported by the
    /// early IDT ends an emulator run.
    fn early_arm_exit(cmdline: &[u8]) {
        for word in words(cmdline) {
            match word {
                b"exit=qemu" => exit::arm_qemu(),
                b"exit=bochs" => exit::arm_bochs(),
                _ => {}
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("nucleus runs on bare metal: build and boot it with `cargo run -p image-builder -- run`");
}
