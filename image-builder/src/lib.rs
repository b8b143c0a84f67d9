//! image-builder: builds fredvisor's binaries, makes a hybrid BIOS+UEFI ISO, boots it in QEMU
//! (or in Bochs, whose Wildcat Lake model has FRED).
//!
//! The CLI (`main.rs`) only parses arguments; everything it does is here, so boot tests call
//! the same code (style.md §2.13):
//!
//! ```no_run
//! # use image_builder::{Image, Qemu, QemuExit};
//! # fn t() -> anyhow::Result<()> {
//! let iso = Image::new().cmdline("exit=qemu").build()?;
//! let boot = Qemu::new(&iso).timeout(std::time::Duration::from_secs(60)).run()?;
//! boot.expect_in_order(&[ipc::markers::READY])?.expect_exit(QemuExit::Success)
//! # }
//! ```
//!
//! Modules: `tools` finds host tools (one clear line when one is missing), `compile` runs
//! cargo for the target binaries, `grub` writes `grub.cfg`, `image` makes the ISO
//! (`reproducible`: byte-identical builds, the source revision; `symbols`: `nucleus.sym`;
//! `strip`: the shipped copies of the ELFs),
//! `qemu` boots it (`bochs` on Bochs' FRED CPU model, `console` filters the interactive
//! console), `boot` holds the outcome and the assertions, `commands` is the CLI's work
//! (`nucleus_options` checks `--cmdline` with the nucleus' own parser), `bench` the CLI's
//! measurements under `-icount`, `shutdown` ends every child and removes every temporary
//! folder, also on SIGINT/SIGTERM/SIGHUP.
//! Only host code lives here; the one `unsafe` module is `shutdown`'s signal handler.
#![deny(unsafe_code)]

pub mod bench;
pub mod bochs;
pub mod boot;
pub mod commands;
pub mod compile;
pub mod console;
pub mod gdb_remote;
pub mod grub;
pub mod guest;
pub mod image;
pub mod nucleus_options;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod reproducible;
pub mod shutdown;
pub mod stop;
pub mod strip;
pub mod symbols;
pub mod tools;
pub mod trace;

pub use bochs::Bochs;
pub use boot::{Boot, Firmware, QemuExit};
pub use image::{Image, Iso, KEXEC_MODULE, NamedFile};
pub use qemu::Qemu;
pub use tools::{MissingTool, Toolbox};
