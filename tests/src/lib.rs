//! tests: boot fredvisor in QEMU and assert on the serial console and the exit status.
//!
//! Helpers for `tests/*.rs`, on top of `image-builder`'s library (the code the CLI runs).
//! A boot test is three lines:
//!
//! ```no_run
//! # use tests::{QemuExit, markers};
//! # fn t() -> anyhow::Result<()> {
//! let boot = tests::boot_bios("selftest=int3 exit=qemu")?;
//! boot.expect_in_order(&["int3", markers::READY])?.expect_exit(QemuExit::Success)
//! # }
//! ```
//!
//! The nucleus is built once per process (and once at a time across processes: a file lock
//! in `target/kernel`); each command line gets its own ISO in its own temporary directory,
//! shared while tests with the same command line run; every boot writes COM1 to
//! `serial.log` in its own temporary directory and has a deadline, and QEMU is killed when
//! the boot ends, times out or is dropped. A failed expectation carries the whole log.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Result;
pub use image_builder::{Boot, Firmware, Image, Iso, MissingTool, Qemu, QemuExit, Toolbox};
pub use ipc::markers;

/// Deadline of one boot under TCG, generous for a slow two-core CI machine.
/// `FREDVISOR_BOOT_TIMEOUT=<seconds>` overrides it.
pub fn boot_timeout() -> Duration {
    std::env::var("FREDVISOR_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Builds (or reuses) the ISO for `image` and boots it with `firmware` and the deadline.
pub fn boot_image(image: &Image, firmware: Firmware) -> Result<Boot> {
    let iso = image.build_shared()?;
    Qemu::new(&iso)
        .uefi(firmware == Firmware::Uefi)
        .timeout(boot_timeout())
        .run()
}

/// Boots the nucleus with `cmdline` under BIOS (SeaBIOS).
pub fn boot_bios(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Bios)
}

/// Boots the nucleus with `cmdline` under UEFI (OVMF).
pub fn boot_uefi(cmdline: &str) -> Result<Boot> {
    boot_image(&Image::new().cmdline(cmdline), Firmware::Uefi)
}

/// The banner line the nucleus prints: `fredvisor <version>` (one version for the workspace).
pub fn banner() -> String {
    format!("{}{}", markers::BANNER, env!("CARGO_PKG_VERSION"))
}

/// The first `0x…` number in `text`, parsed as hexadecimal.
pub fn first_hex(text: &str) -> Option<u64> {
    let start = text.find("0x")? + 2;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The hexadecimal number (with or without `0x`) that follows `label` in `line`, e.g.
/// `hex_after("nucleus: #UD (6) at 0xffff…", " at ")` or `hex_after("cr2: fffffe…", "cr2: ")`.
pub fn hex_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    let rest = rest.strip_prefix("0x").unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&digits, 16).ok()
}

/// The lines of `boot` for which `matches` holds.
pub fn lines_matching(boot: &Boot, matches: impl Fn(&str) -> bool) -> Vec<String> {
    boot.lines().filter(|l| matches(l)).collect()
}

/// The one line for which `matches` holds; fails (with the log) on none or several.
pub fn expect_one_line(boot: &Boot, what: &str, matches: impl Fn(&str) -> bool) -> Result<String> {
    let mut found = lines_matching(boot, matches);
    match found.len() {
        1 => Ok(found.remove(0)),
        n => anyhow::bail!(
            "{}",
            boot.report(&format!(
                "expected exactly one line with {what}, found {n}: {found:?}"
            ))
        ),
    }
}

/// Fails unless `boot` has a line equal to `expected` (after `\r` and escapes are removed).
pub fn expect_exact_line(boot: &Boot, expected: &str) -> Result<()> {
    boot.expect_line(&format!("exactly {expected:?}"), |l| l == expected)
        .map(drop)
}

/// The self-test summary the nucleus prints: `selftest: <passed> passed, <failed> failed`.
pub fn selftest_summary(passed: u32, failed: u32) -> String {
    format!("selftest: {passed} passed, {failed} failed")
}

/// The resumable event self-tests `selftest=all` runs, in the order the nucleus runs them.
pub const EVENT_SELFTESTS: [&str; 5] = ["int3", "ud2", "pf-unmapped", "pf-nx", "gp-selector"];

/// Fails unless each of [`EVENT_SELFTESTS`] printed its `passed` verdict, in order, followed
/// by the summary `selftest: 5 passed, 0 failed`, and no test printed `FAILED`.
pub fn expect_event_selftests_passed(boot: &Boot) -> Result<()> {
    let verdicts: Vec<String> = EVENT_SELFTESTS
        .iter()
        .map(|name| format!("selftest: {name}: passed ("))
        .collect();
    let mut in_order: Vec<&str> = verdicts.iter().map(String::as_str).collect();
    let summary = selftest_summary(EVENT_SELFTESTS.len() as u32, 0);
    in_order.push(&summary);
    boot.expect_in_order(&in_order)?.expect_absent(": FAILED")?;
    expect_exact_line(boot, &summary)
}

/// A small deterministic generator (SplitMix64) for reproducible test input.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_numbers_are_found_after_labels() {
        let line = "nucleus: #PF (14) at 0xffffffff8020e45f: address (CR2) 0xdeadb000, error 0x0";
        assert_eq!(first_hex(line), Some(0xffff_ffff_8020_e45f));
        assert_eq!(hex_after(line, "(CR2) "), Some(0xdead_b000));
        assert_eq!(hex_after(line, "error "), Some(0));
        assert_eq!(
            hex_after("nucleus: cr2: fffffe000000df28   cr3: 0", "cr2: "),
            Some(0xffff_fe00_0000_df28)
        );
        assert_eq!(hex_after("no number here", "here"), None);
        assert_eq!(first_hex("none"), None);
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert!((0..100).all(|_| a.below(7) < 7));
    }
}
