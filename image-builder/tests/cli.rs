//! The CLI binary: one clear line and a non-zero status when a tool is missing.

use std::process::Command;

#[test]
fn build_without_grub_mkrescue_prints_one_line_and_fails() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .arg("build")
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: grub-mkrescue not found on PATH: install it with \
         'apt-get install grub-pc-bin grub-efi-amd64-bin'\n"
    );
}

#[test]
fn run_checks_qemu_before_building() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--timeout", "1"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: qemu-system-x86_64 not found on PATH: install it with 'apt-get install qemu-system-x86'\n"
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [&["--help"][..], &["build", "--help"], &["run", "--help"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_image-builder")).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: image-builder"), "{args:?}");
    }
}
