//! The CLI binary: one clear line and a non-zero status when a tool is missing.

use std::process::Command;

/// A directory with links to every tool the pipeline uses that is installed, except `hidden`.
fn path_without(hidden: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "grub-mkrescue",
        "xorriso",
        "mformat",
        "qemu-system-x86_64",
        "cargo",
        "rustc",
    ] {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        if let Some(found) = found.filter(|_| tool != hidden) {
            std::os::unix::fs::symlink(found, dir.path().join(tool)).unwrap();
        }
    }
    dir
}

#[test]
fn build_without_grub_mkrescue_prints_one_line_and_fails() {
    let path = path_without("grub-mkrescue");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .arg("build")
        .env("PATH", path.path())
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
    let path = path_without("qemu-system-x86_64");
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--timeout", "1"])
        .env("PATH", path.path())
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
        let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage: image-builder"),
            "{args:?}"
        );
    }
}
