//! Boot information that is not multiboot2: the nucleus says so in one line and halts,
//! instead of faulting on a structure it does not understand (issue 3, point 2).
//!
//! QEMU's `-kernel` is a multiboot (v1) loader: it starts the nucleus through the v1 header
//! with EAX = 0x2badb002 and a v1 structure, which is exactly "not multiboot2".
use anyhow::Result;
use tests::{Image, Qemu, QemuExit, Toolbox, boot_timeout, markers};

#[test]
fn a_multiboot1_loader_gets_a_clear_message_not_a_fault() -> Result<()> {
    let nucleus = image_builder::compile::nucleus_once(&Toolbox::from_env(), false)?;
    // Any ISO will do: with -kernel QEMU starts the kernel directly and ignores the disc.
    let iso = Image::new().cmdline("exit=qemu").build_shared()?;
    let halted = "nucleus: cannot continue without boot information; halting";
    let boot = Qemu::new(&iso)
        .arg("-kernel")
        .arg(&nucleus)
        .arg("-append")
        .arg("exit=qemu")
        .timeout(boot_timeout())
        .until(halted)
        .run()?;
    boot.expect_in_order(&[
        &tests::banner(),
        "boot: not started by a multiboot2 loader (magic 0x2badb002)",
        halted,
    ])?;
    boot.expect_absent(markers::READY)?;
    boot.expect_absent("cmdline:")?;
    boot.expect_absent("register dump")?;
    boot.expect_exit(QemuExit::Stopped)
}
