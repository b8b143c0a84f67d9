//! Boots the nucleus under BIOS and UEFI: banner, command line, modules, ready, exit status.

use std::fs;

use anyhow::{Context, Result, ensure};
use tests::{
    Boot, Firmware, Image, Qemu, QemuExit, banner, boot_bios, boot_image, boot_timeout, markers,
};

/// Name and size of the extra module: an odd size, so a page-rounded size cannot pass.
const MODULE_NAME: &str = "hello-module";
const MODULE_SIZE: usize = 4242;

/// Boots with `exit=qemu` and a test module, and checks the whole boot report.
fn boot_with_module(firmware: Firmware) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let module = dir.path().join(MODULE_NAME);
    let contents: Vec<u8> = (0..MODULE_SIZE).map(|i| (i % 251) as u8).collect();
    fs::write(&module, contents).context("cannot write the test module")?;
    let cmdline = format!(
        "exit=qemu boot-test={}",
        firmware.to_string().to_lowercase()
    );
    let boot = boot_image(
        &Image::new().cmdline(&cmdline).module(MODULE_NAME, &module),
        firmware,
    )?;

    boot.expect_in_order(&[markers::BANNER, "cmdline: ", "module: ", markers::READY])?;
    expect_exact_line(&boot, &banner())?;
    expect_exact_line(&boot, &format!("cmdline: {cmdline}"))?;
    let module_line = boot.expect_line(&format!("module {MODULE_NAME}"), |l| {
        l.strip_prefix("module: ")
            .is_some_and(|rest| rest.split_whitespace().next() == Some(MODULE_NAME))
    })?;
    let size = MODULE_SIZE.to_string();
    ensure!(
        module_line
            .split(|c: char| !c.is_ascii_digit())
            .any(|number| number == size),
        "{}",
        boot.report(&format!(
            "module line {module_line:?} lacks the size {size}"
        ))
    );
    // Memory summary from the multiboot2 map: QEMU gets 256 MiB, of which firmware and the
    // legacy holes keep a little.
    let memory = boot.expect_line("the memory summary", |l| {
        l.starts_with("memory: ") && l.contains(" MiB usable in ") && l.ends_with(" regions")
    })?;
    let numbers: Vec<u64> = memory
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    ensure!(
        matches!(numbers.as_slice(), [mib, regions] if (200..=256).contains(mib) && *regions >= 2),
        "{}",
        boot.report(&format!("implausible memory summary {memory:?}"))
    );
    expect_layout(&boot)?;
    boot.expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

/// The nucleus' virtual layout (issue 15): everything in L4 slots 256-271, Xen's window;
/// the M2P at Xen's address covers every RAM frame (256 MiB: about 65536 frames); the image
/// (text first) just above its 2 MiB load address in slot 257.
fn expect_layout(boot: &Boot) -> Result<()> {
    let prefix = "memory: nucleus in L4 slots 256-271: m2p 0xffff800000000000 (";
    let suffix = ", stacks 0xffff810000000000, direct map 0xffff818000000000";
    let line = boot.expect_line("the layout line", |l| l.starts_with(prefix))?;
    let middle = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|rest| rest.split_once(" frames), image 0x"));
    let figures = middle.and_then(|(frames, image)| {
        Some((
            frames.parse::<u64>().ok()?,
            u64::from_str_radix(image, 16).ok()?,
        ))
    });
    ensure!(
        figures.is_some_and(|(frames, image)| (200 * 256..=(1 << 20)).contains(&frames)
            && (0xffff_8080_0020_0000..0xffff_8080_0040_0000).contains(&image)),
        "{}",
        boot.report(&format!(
            "layout line {line:?} is not {prefix}N frames), image 0x…{suffix}"
        ))
    );
    Ok(())
}

fn expect_exact_line(boot: &Boot, expected: &str) -> Result<()> {
    boot.expect_line(&format!("exactly {expected:?}"), |l| l == expected)
        .map(drop)
}

#[test]
fn bios_boot_reports_banner_cmdline_modules_and_ready() -> Result<()> {
    boot_with_module(Firmware::Bios)
}

#[test]
fn uefi_boot_reports_banner_cmdline_modules_and_ready() -> Result<()> {
    boot_with_module(Firmware::Uefi)
}

#[test]
fn forced_panic_reports_message_and_location_then_fails() -> Result<()> {
    let boot = boot_bios("selftest=panic exit=qemu")?;
    let panic = boot.expect_line("the panic report", |l| l.starts_with(markers::PANIC))?;
    ensure!(
        panic.contains("selftest: forced panic"),
        "{}",
        boot.report("panic message missing")
    );
    let location = panic
        .split_whitespace()
        .find(|w| w.starts_with("nucleus/src/"));
    let has_line_number = location.is_some_and(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|n| n.parse::<u32>().is_ok())
    });
    ensure!(
        has_line_number,
        "{}",
        boot.report("panic location nucleus/src/<file>:<line> missing")
    );
    boot.expect_absent(markers::READY)?
        .expect_exit(QemuExit::Failure)
}

#[test]
fn boot_without_exit_option_is_stopped_by_the_harness_at_ready() -> Result<()> {
    let iso = Image::new().build_shared()?;
    let boot = Qemu::new(&iso)
        .timeout(boot_timeout())
        .until(markers::READY)
        .run()?;
    boot.expect_in_order(&[markers::BANNER, markers::READY])?
        .expect_exit(QemuExit::Stopped)
}
