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
