//! The Bochs runner without Bochs: the missing-Bochs line of the CLI, and a full run against
//! a stand-in `bochs` script that reads the generated bochsrc and writes to its COM1 file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use image_builder::{Bochs, QemuExit};

/// A directory with links to the tools `run` needs before Bochs is looked for (none: Bochs
/// is checked first), so the only thing missing is `bochs` itself.
fn path_without_bochs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["cargo", "rustc", "grub-mkrescue", "xorriso", "mformat"] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, dir.path().join(tool)).unwrap();
        }
    }
    dir
}

#[test]
fn run_bochs_without_bochs_prints_one_line_and_fails() {
    let path = path_without_bochs();
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--bochs", "--timeout", "1"])
        .env("PATH", path.path())
        .env_remove("FREDVISOR_BOCHS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: bochs (Bochs 3.1 dev with FRED) not found on PATH and $FREDVISOR_BOCHS is \
             unset: install it with '{}'\n",
            image_builder::bochs::BUILD_HINT
        )
    );
    assert_eq!(stderr.lines().count(), 1);
    assert!(stderr.contains("--enable-fred"), "{stderr}");
}

#[test]
fn run_bochs_with_a_bad_override_names_it() {
    let path = path_without_bochs();
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--bochs", "--timeout", "1"])
        .env("PATH", path.path())
        .env("FREDVISOR_BOCHS", "/nonexistent/bochs")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: bochs (Bochs 3.1 dev with FRED) not found at /nonexistent/bochs (from $FREDVISOR_BOCHS)"
        ),
        "{stderr}"
    );
}

#[test]
fn bochs_and_uefi_do_not_mix() {
    let output = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--bochs", "--uefi"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}

/// Writes an executable stand-in for Bochs: checks `-q -f <bochsrc>`, the model and the
/// CD-ROM, writes `serial` to the bochsrc's COM1 file, then exits 1 as Bochs does after a
/// shutdown request (a fatal panic).
fn fake_bochs(dir: &Path, serial: &str) -> std::path::PathBuf {
    let script = dir.join("bochs");
    let body = format!(
        r#"#!/bin/sh
[ "$1" = -q ] && [ "$2" = -f ] || exit 64
rc="$3"
grep -qx 'cpu: model=wildcat_lake, count=1, reset_on_triple_fault=0, ignore_bad_msrs=0' "$rc" || exit 65
grep -q '^ata0-master: type=cdrom, path=".*\.iso", status=inserted$' "$rc" || exit 66
log=$(sed -n 's/^com1: enabled=1, mode=file, dev="\(.*\)"$/\1/p' "$rc")
[ -n "$log" ] || exit 67
printf '{serial}' >> "$log"
echo "Bochs is exiting with the following message:"
echo "[UNMP  ] Shutdown port: shutdown requested"
exit 1
"#
    );
    fs::write(&script, body).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn run_fake(serial: &str) -> anyhow::Result<image_builder::Boot> {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("fredvisor.iso");
    fs::write(&iso, "not really an ISO").unwrap();
    fake_bochs(dir.path(), serial);
    Bochs::from_path(&iso)
        .search(dir.path(), None)
        .timeout(Duration::from_secs(30))
        .run()
}

#[test]
fn a_bochs_run_reads_its_verdict_from_the_serial_log() {
    let boot = run_fake(
        "fred: enabled (cpu has FRED+LKGS)\\r\\nselftest: 5 passed, 0 failed\\r\\nnucleus: ready\\r\\n",
    )
    .unwrap();
    boot.expect_in_order(&["fred: enabled (cpu has FRED+LKGS)", "nucleus: ready"])
        .unwrap()
        .expect_exit(QemuExit::Success)
        .unwrap();
    assert!(boot.qemu_stderr.contains("shutdown requested"));

    let failed = run_fake("selftest: 4 passed, 1 failed\\r\\nnucleus: ready\\r\\n").unwrap();
    failed.expect_exit(QemuExit::Failure).unwrap();

    let early = run_fake("fredvisor 0.1.0\\r\\n").unwrap();
    assert_eq!(early.exit, QemuExit::Other(1), "{}", early.report("?"));
}

#[test]
fn bochs_that_writes_no_serial_output_did_not_boot() {
    let error = run_fake("").unwrap_err().to_string();
    assert!(error.contains("failed to start"), "{error}");
    assert!(error.contains("shutdown requested"), "{error}");
}

#[test]
fn a_bochs_run_can_stop_at_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("fredvisor.iso");
    fs::write(&iso, "not really an ISO").unwrap();
    // A Bochs that prints two lines and then runs on (as a nucleus without `exit=bochs`).
    let script = dir.path().join("bochs");
    fs::write(
        &script,
        "#!/bin/sh\nlog=$(sed -n 's/^com1: enabled=1, mode=file, dev=\"\\(.*\\)\"$/\\1/p' \"$3\")\n\
         printf 'nucleus: ready\\r\\nfred-server: done\\r\\n' >> \"$log\"\nexec sleep 60\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    let boot = Bochs::from_path(&iso)
        .search(dir.path(), None)
        .timeout(Duration::from_secs(30))
        .until("fred-server: done")
        .run()
        .unwrap();
    boot.expect_exit(QemuExit::Stopped).unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    boot.expect_in_order(&["nucleus: ready", "fred-server: done"])
        .unwrap();
    let lines = Bochs::from_path(&iso)
        .search(dir.path(), None)
        .timeout(Duration::from_secs(30))
        .until_serial(|log| log.ends_with("done\r\n"))
        .run()
        .unwrap();
    lines.expect_exit(QemuExit::Stopped).unwrap();
}
