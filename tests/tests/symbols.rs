//! `show_registers` names the function RIP is in, from the `nucleus.sym` module that
//! image-builder derives from the nucleus ELF (issue 4: "RIP, with the symbol if cheap").
use anyhow::{Result, ensure};
use tests::{QemuExit, boot_bios};

#[test]
fn the_double_fault_dump_names_the_recursing_function() -> Result<()> {
    let boot = boot_bios("selftest=df-recursion exit=qemu")?;
    boot.expect_in_order(&[
        "module: nucleus.sym (",
        "nucleus: #DF (double fault) on the #DF stack",
    ])?;
    let rip = boot.expect_line("the dump's RIP line", |l| l.starts_with("nucleus: RIP:"))?;
    ensure!(
        rip.contains(" <nucleus::selftest::recurse+0x") && rip.ends_with('>'),
        "{}",
        boot.report(&format!(
            "RIP line {rip:?} does not name nucleus::selftest::recurse"
        ))
    );
    boot.expect_exit(QemuExit::Success)
}

/// Every name in the map of the real nucleus is demangled: no legacy (`_ZN`) or v0 (`_R`)
/// mangling, no `.llvm.` suffix, no hash, and the nucleus' own functions by their paths.
#[test]
fn every_name_in_the_real_nucleus_map_is_readable() -> Result<()> {
    let elf = image_builder::compile::nucleus_once(&tests::Toolbox::from_env(), false)?;
    let map = image_builder::symbols::symbol_map(&std::fs::read(&elf)?)?;
    let names: Vec<&str> = map
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, name)| name))
        .collect();
    ensure!(names.len() > 100, "only {} names:\n{map}", names.len());
    let unreadable: Vec<&&str> = names
        .iter()
        .filter(|name| {
            name.starts_with("_R")
                || name.starts_with("_ZN")
                || name.starts_with("_<")
                || name.contains(".llvm.")
                || name.contains("::h") && name.rsplit("::h").next().is_some_and(|h| h.len() == 16)
        })
        .collect();
    ensure!(
        unreadable.is_empty(),
        "{} of {} names are not demangled: {unreadable:?}",
        unreadable.len(),
        names.len()
    );
    ensure!(
        names.contains(&"nucleus::selftest::recurse"),
        "nucleus::selftest::recurse is not in the map"
    );
    Ok(())
}
