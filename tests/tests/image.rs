//! The ISO itself, without booting: hybrid BIOS + UEFI, and `--server` swapping.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use tests::{Image, Toolbox};

#[test]
fn iso_has_bios_and_uefi_boot_images() -> Result<()> {
    let iso = Image::new().build_shared()?;
    let report = Command::new("xorriso")
        .arg("-indev")
        .arg(iso.path())
        .args(["-report_el_torito", "plain"])
        .output()
        .context("cannot run xorriso")?;
    let report = String::from_utf8_lossy(&report.stdout);
    let platforms: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .filter_map(|columns| columns.split_whitespace().nth(1)) // N, then Pltf
        .collect();
    ensure!(
        platforms == ["BIOS", "UEFI"],
        "El Torito boot images {platforms:?}:\n{report}"
    );
    Ok(())
}

#[test]
fn swapped_server_is_shipped_as_its_module() -> Result<()> {
    // Any ELF passes the check; the nucleus is the one at hand.
    let elf = image_builder::compile::nucleus_once(&Toolbox::from_env(), false)?;
    let iso = Image::new().server("fred-server", &elf).build()?;
    ensure!(
        iso.modules() == ["nucleus.sym", "fred-server", "pv-server"],
        "modules: {:?}",
        iso.modules()
    );
    let entries = iso
        .grub_cfg()
        .matches("    module2 /boot/fred-server fred-server\n")
        .count();
    ensure!(
        entries == 3,
        "every menu entry loads the server:\n{}",
        iso.grub_cfg()
    );
    Ok(())
}
