//! tests: boot fredvisor in QEMU and assert on the serial console and the exit status.
//!
//! Helpers for `tests/*.rs`, on top of `image-builder`'s library (the code the CLI runs).
//! A boot test is three lines:
//!
//! ```no_run
//! # use tests::{QemuExit, markers};
//! # fn t() -> anyhow::Result<()> {
//! let boot = tests::boot_bios("selftest=int3 exit=qemu")?;
//! boot.expect_in_order(&["int3", markers::READY])?.expect_exit(QemuExit::Success)
//! # }
//! ```
//!
//! The nucleus is built once per process (and once at a time across processes: a file lock
//! in `target/kernel`); each command line gets its own ISO in its own temporary directory,
//! shared while tests with the same command line run; every boot writes COM1 to
//! `serial.log` in its own temporary directory and has a deadline, and QEMU is killed when
//! the boot ends, times out or is dropped. A failed expectation carries the whole log.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Result;
pub use image_builder::{Boot, Firmware, Image, Iso, MissingTool, Qemu, QemuExit, Toolbox};
pub use ipc::markers;

/// Deadline of one boot under TCG, generous for a slow two-core CI machine.
/// `FREDVISOR_BOOT_TIMEOUT=<seconds>` overrides it.
pub fn boot_timeout() -> Duration {
    std::env::var("FREDVISOR_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Builds (or reuses) the ISO for `image` and boots it with `firmware` and the deadline.
pub fn boot_image(image: &Image, firmware: Firmware) -> Result<Boot> {
    let iso = image.build_shared()?;
    Qemu::new(&iso)
        .uefi(firmware == Firmware::Uefi)
        .timeout(boot_timeout())
        .run()
}

/// Boots the nucleus with `cmdline` under BIOS (SeaBIOS).
pub fn boot_bios(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Bios)
}

/// Boots the nucleus with `cmdline` under UEFI (OVMF).
pub fn boot_uefi(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Uefi)
}

/// The banner line the nucleus prints: `fredvisor <version>` (one version for the workspace).
pub fn banner() -> String {
    format!("{}{}", markers::BANNER, env!("CARGO_PKG_VERSION"))
}
