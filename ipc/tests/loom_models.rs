//! Runs the loom models (`tests/loom.rs`) from an ordinary `cargo test`, so CI runs them.
//!
//! The models need the whole crate rebuilt with `--cfg loom`, which cannot happen inside this
//! build, so this test spawns `cargo test -p ipc --test loom --release` with that flag and its
//! own target directory (`<target>/loom`, so the normal build is not invalidated), then checks
//! that it passed *and* ran every model: a filter or a `cfg` mistake that runs none must fail.
//! `LOOM_MAX_PREEMPTIONS=2` bounds the search (every bug we know of in SPSC rings needs at most
//! one preemption) and keeps the run to a minute or two on two cores.
#![cfg(not(loom))]

use std::path::PathBuf;
use std::process::Command;

/// Number of `#[test]`s in `tests/loom.rs`.
const MODELS: usize = 9;

fn loom_target_dir(manifest_dir: &str) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("loom"),
        None => PathBuf::from(manifest_dir)
            .join("..")
            .join("target")
            .join("loom"),
    }
}

/// `N` from the "test result: ok. N passed; ..." line.
fn passed(stdout: &str) -> Option<usize> {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
}

#[test]
fn loom_models_pass() {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    rustflags.push_str(" --cfg loom");
    let output = Command::new(cargo)
        .current_dir(manifest_dir)
        .args([
            "test",
            "-p",
            "ipc",
            "--test",
            "loom",
            "--release",
            "--target-dir",
        ])
        .arg(loom_target_dir(manifest_dir))
        // The encoded form would win over RUSTFLAGS and drop `--cfg loom`.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", rustflags.trim())
        .env("LOOM_MAX_PREEMPTIONS", "2")
        .output()
        .expect("could not run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "loom models failed ({})",
        output.status
    );
    assert_eq!(
        passed(&stdout),
        Some(MODELS),
        "expected {MODELS} loom models to pass"
    );
}

#[test]
fn result_line_is_parsed() {
    assert_eq!(
        passed("running 5 tests\ntest result: ok. 5 passed; 0 failed; 0 ignored"),
        Some(5)
    );
    assert_eq!(passed("test result: FAILED. 4 passed; 1 failed"), None);
    assert_eq!(passed("no tests here"), None);
}
