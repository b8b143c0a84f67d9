//! Where a boot scenario runs: QEMU/TCG (no FRED, so IDT delivery) or Bochs' Wildcat Lake
//! model (FRED + LKGS, issue 14). The scenarios in [`crate::scenarios`] take a [`Machine`]
//! and ask it for the command line, the boot and the lines that depend on the delivery, so
//! the QEMU tests and the FRED-CPU tests (`tests/fred_cpu.rs`) assert the same story.
use std::sync::Arc;

use anyhow::Result;
use image_builder::{Bochs, Boot, Firmware, Image, Iso, Qemu};

use crate::{bochs_boot_timeout, boot_timeout, expect_exact_line};

/// The emulator (and firmware) of a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// QEMU/TCG: no FRED, every boot on the IDT.
    Qemu(Firmware),
    /// Bochs with the FRED CPU model (`$FREDVISOR_BOCHS`), BIOS only, booted with `fred=on`.
    Bochs,
}

/// How a boot that does not end by itself is stopped.
#[derive(Clone, Copy)]
pub enum Stop<'a> {
    /// At the first occurrence of this text in the serial log.
    At(&'a str),
    /// Once this holds for the serial log up to its last complete line.
    When(fn(&str) -> bool),
    /// Once each of these is a whole serial line (in any order).
    Lines(&'a [&'a str]),
}

/// The decision line of a FRED CPU with `fred=on` or `fred=auto`.
pub const FRED_ENABLED: &str = "fred: enabled (cpu has FRED+LKGS)";
/// The decision line of QEMU/TCG with `fred=auto`.
pub const FRED_DISABLED_NO_CPU: &str = "fred: disabled (cpu lacks FRED)";

impl Machine {
    pub const QEMU_BIOS: Self = Self::Qemu(Firmware::Bios);
    pub const QEMU_UEFI: Self = Self::Qemu(Firmware::Uefi);

    /// Whether the CPU has FRED (and so `fred=on`/`auto` enable it).
    pub fn has_fred(self) -> bool {
        self == Self::Bochs
    }

    /// The option that ends the run once the nucleus is ready.
    pub fn exit_option(self) -> &'static str {
        match self {
            Self::Qemu(_) => "exit=qemu",
            Self::Bochs => "exit=bochs",
        }
    }

    /// `options` for a boot that runs until it is stopped: unchanged on QEMU, after
    /// `fred=on` on a FRED CPU (so the scenario runs on FRED delivery).
    pub fn options(self, options: &str) -> String {
        match self {
            Self::Qemu(_) => options.to_owned(),
            Self::Bochs if options.is_empty() => "fred=on".to_owned(),
            Self::Bochs => format!("fred=on {options}"),
        }
    }

    /// `options` plus the exit option, for a boot that ends by itself.
    pub fn cmdline(self, options: &str) -> String {
        let options = self.options(options);
        match options.is_empty() {
            true => self.exit_option().to_owned(),
            false => format!("{options} {}", self.exit_option()),
        }
    }

    /// The FRED decision line under `fred=auto` (or `fred=on` where FRED exists).
    pub fn decision(self) -> &'static str {
        match self.has_fred() {
            true => FRED_ENABLED,
            false => FRED_DISABLED_NO_CPU,
        }
    }

    /// The dump's delivery line for an event on the primary stack (ring-3 events).
    pub fn primary_delivery(self) -> &'static str {
        match self.has_fred() {
            true => "delivery: FRED, stack level 0 (primary)",
            false => "delivery: IDT, stack: primary",
        }
    }

    /// The dump's delivery line for a `#DF` (FRED stack level 3, or IST1).
    pub fn df_delivery(self) -> &'static str {
        match self.has_fred() {
            true => "delivery: FRED, stack level 3 (#DF)",
            false => "delivery: IDT, stack: #DF (IST1)",
        }
    }

    /// Boots `image` until it ends by itself (or the deadline).
    pub fn boot(self, image: &Image) -> Result<Boot> {
        let iso = image.build_shared()?;
        self.boot_iso(&iso, None)
    }

    /// Boots `image` until `stop`; also returns the ISO (to read what it shipped).
    pub fn boot_until(self, image: &Image, stop: Stop<'_>) -> Result<(Arc<Iso>, Boot)> {
        let iso = image.build_shared()?;
        let boot = self.boot_iso(&iso, Some(stop))?;
        Ok((iso, boot))
    }

    /// Boots a built ISO, until it ends or until `stop`.
    pub fn boot_iso(self, iso: &Iso, stop: Option<Stop<'_>>) -> Result<Boot> {
        let boot = match self {
            Self::Qemu(firmware) => {
                let qemu = Qemu::new(iso)
                    .uefi(firmware == Firmware::Uefi)
                    .timeout(boot_timeout());
                match stop {
                    None => qemu.run()?,
                    Some(Stop::At(marker)) => qemu.until(marker).run()?,
                    Some(Stop::When(done)) => qemu.until_serial(done).run()?,
                    Some(Stop::Lines(lines)) => qemu.until_lines(lines).run()?,
                }
            }
            Self::Bochs => {
                let bochs = Bochs::new(iso).timeout(bochs_boot_timeout());
                match stop {
                    None => bochs.run()?,
                    Some(Stop::At(marker)) => bochs.until(marker).run()?,
                    Some(Stop::When(done)) => bochs.until_serial(done).run()?,
                    Some(Stop::Lines(lines)) => bochs.until_lines(lines).run()?,
                }
            }
        };
        if self == Self::Bochs && boot.lines().any(|l| l.starts_with("cmdline: fred=on")) {
            // Every FRED-CPU scenario really ran on FRED.
            expect_exact_line(&boot, FRED_ENABLED)?;
        }
        Ok(boot)
    }
}
