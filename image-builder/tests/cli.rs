//! The CLI binary: one clear line and a non-zero status when a tool is missing or a
//! `--server` file is unusable.

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
    for args in [
        &["--help"][..],
        &["build", "--help"],
        &["run", "--help"],
        &["bench", "--help"],
    ] {
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

/// Runs `image-builder [<subcommand>] --server <arg> --output <dir>/x.iso`; returns the
/// status and stderr.
fn build_with_server(
    subcommand: &[&str],
    server: &str,
    dir: &std::path::Path,
) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(subcommand)
        .args(["--server", server, "--output"])
        .arg(dir.join("x.iso"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn server_swap_with_a_missing_file_is_one_line_and_fails_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = build_with_server(&[], "fred-server=/nonexistent", dir.path());
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: server fred-server: cannot read /nonexistent: \
         No such file or directory (os error 2)\n"
    );
    assert!(!dir.path().join("x.iso").exists());
}

#[test]
fn server_swap_with_a_non_elf_file_is_one_line_and_fails_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.sh");
    std::fs::write(&script, "#!/bin/sh\necho not a server\n").unwrap();
    let (status, stderr) = build_with_server(
        &["run", "--timeout", "5"],
        &format!("pv-server={}", script.display()),
        dir.path(),
    );
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: server pv-server: {} is not an ELF file (it does not start with \\x7fELF)\n",
            script.display()
        )
    );
    assert!(!dir.path().join("x.iso").exists());
}

#[test]
fn server_swap_with_an_unknown_name_lists_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = build_with_server(&["build"], "nosuch-server=/bin/true", dir.path());
    assert_eq!(status, Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "error: unknown server \"nosuch-server\": the servers are fred-server, pv-server\n"
    );
}

#[test]
fn bench_rejects_a_zero_timeout_before_building() {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["bench", "--timeout", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr, "error: --timeout must be a number of seconds > 0\n");
}
