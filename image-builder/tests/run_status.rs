//! `run --guest` (issue 15 point 1): the binary ends when the last guest ends, with status 0
//! if every guest shut down with reason poweroff and 1 otherwise (crash, reboot, watchdog,
//! a rejected image). Each case is a real `image-builder run` of the project's test guests
//! in QEMU; a run that ends any other way (timeout 124, QEMU's own end 3) fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image_builder::compile::{self, SERVER_BUILD};
use image_builder::tools::Toolbox;

/// A test guest's ELF, built as the tests crate builds them (the servers' cargo invocation).
fn guest_elf(package: &str) -> PathBuf {
    let paths = compile::build_target(
        &Toolbox::from_env(),
        &compile::workspace_root(),
        SERVER_BUILD,
        &[package],
        false,
    )
    .unwrap_or_else(|e| panic!("cannot build {package}: {e:#}"));
    paths.into_iter().next().expect("cargo built no guest")
}

/// `image-builder run --guest G...` with its ISO and serial log in a folder of its own; the
/// exit status and the serial log.
fn run(guests: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_image-builder"));
    command
        .args(["run", "--timeout", "300", "--output"])
        .arg(dir.path().join("run.iso"))
        .arg("--serial-log")
        .arg(&log);
    for guest in guests {
        command.arg("--guest").arg(guest);
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.code(),
        format!("{serial}\n--- stderr:\n{stderr}"),
    )
}

fn guest(name: &str, path: &Path, cmdline: &str) -> String {
    let mut arg = format!("{name}={}", path.display());
    if !cmdline.is_empty() {
        arg.push_str(",cmdline=");
        arg.push_str(cmdline);
    }
    arg
}

/// The run ended at the summary line (not at a timeout or a crash of QEMU) with `status`,
/// and pv-server said how `name` ended with `ending`.
fn expect(guests: &[String], status: i32, endings: &[(&str, &str)]) {
    let (code, log) = run(guests);
    assert!(
        log.contains("pv-server: guests: all ended"),
        "no summary line:\n{log}"
    );
    for (name, ending) in endings {
        let line = format!("pv-server: guest {name}: {ending}");
        assert!(
            log.lines().any(|l| l.starts_with(&line)),
            "no {line:?}:\n{log}"
        );
    }
    assert_eq!(code, Some(status), "exit status of run:\n{log}");
}

#[test]
fn every_guest_powering_off_is_status_0() {
    let hello = guest_elf("guest-hello");
    expect(
        &[guest("one", &hello, ""), guest("two", &hello, "")],
        0,
        &[
            ("one", "shut down (poweroff)"),
            ("two", "shut down (poweroff)"),
        ],
    );
}

#[test]
fn a_reboot_or_a_crash_shutdown_is_status_1() {
    let hello = guest_elf("guest-hello");
    for reason in ["reboot", "crash"] {
        expect(
            &[
                guest("off", &hello, ""),
                guest(reason, &hello, &format!("shutdown={reason}")),
            ],
            1,
            &[
                ("off", "shut down (poweroff)"),
                (reason, &format!("shut down ({reason})")),
            ],
        );
    }
}

#[test]
fn a_crashed_or_hung_guest_is_status_1() {
    let hostile = guest_elf("guest-hostile");
    expect(
        &[guest("fault", &hostile, "fault")],
        1,
        &[("fault", "crashed: ")],
    );
    expect(
        &[guest("spin", &hostile, "spin")],
        1,
        &[("spin", "shut down (watchdog)")],
    );
}

#[test]
fn a_rejected_image_is_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let notelf = dir.path().join("notelf");
    std::fs::write(&notelf, b"this is not an ELF image").unwrap();
    let hello = guest_elf("guest-hello");
    expect(
        &[guest("notelf", &notelf, ""), guest("hello", &hello, "")],
        1,
        &[("notelf", "rejected: "), ("hello", "shut down (poweroff)")],
    );
}
