//! The outcome of one boot: how the emulator ended and what the serial console said.
//!
//! Owns the mapping from the emulator's exit status to [`QemuExit`] and the assertions
//! boot tests make. Every failed assertion carries the whole serial log, so a red test
//! shows what the nucleus printed. Independent of QEMU's command line (`qemu` owns that),
//! so a later Bochs runner can return the same `Boot`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use ipc::markers::{QEMU_EXIT_FAILURE, QEMU_EXIT_SUCCESS};

use crate::progress::format_duration;

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuExit {
    /// The nucleus wrote `QEMU_EXIT_SUCCESS` to `isa-debug-exit` (QEMU status 33).
    Success,
    /// The nucleus wrote `QEMU_EXIT_FAILURE` (QEMU status 35): panic or failed self-test.
    Failure,
    /// Still running at the deadline; QEMU was killed.
    Timeout,
    /// Stopped by us once the serial console showed the awaited marker.
    Stopped,
    /// Any other status: QEMU's own exit code (0 after a triple fault with `-no-reboot`,
    /// 1 for QEMU errors), or 128 + signal number if QEMU was killed by a signal.
    Other(i32),
}

/// QEMU's status for a byte `value` written to `isa-debug-exit`: `(value << 1) | 1`.
pub const fn debug_exit_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

impl QemuExit {
    /// Maps QEMU's exit code (or the signal that killed it) back to what the nucleus meant.
    pub fn from_status(code: Option<i32>, signal: Option<i32>) -> Self {
        match (code, signal) {
            (Some(c), _) if c == debug_exit_status(QEMU_EXIT_SUCCESS) => Self::Success,
            (Some(c), _) if c == debug_exit_status(QEMU_EXIT_FAILURE) => Self::Failure,
            (Some(c), _) => Self::Other(c),
            (None, Some(s)) => Self::Other(128 + s),
            (None, None) => Self::Other(-1),
        }
    }

    /// Exit code of `image-builder run` for this outcome (documented in its `--help`).
    pub const fn cli_exit_code(self) -> u8 {
        match self {
            Self::Success | Self::Stopped => 0,
            Self::Failure => 1,
            Self::Other(_) => 3,
            Self::Timeout => 124,
        }
    }
}

impl fmt::Display for QemuExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => write!(f, "success (isa-debug-exit {QEMU_EXIT_SUCCESS:#x})"),
            Self::Failure => write!(f, "failure (isa-debug-exit {QEMU_EXIT_FAILURE:#x})"),
            Self::Timeout => write!(f, "timeout (QEMU killed)"),
            Self::Stopped => write!(f, "stopped after the awaited marker"),
            Self::Other(code) => write!(f, "QEMU exited with status {code}"),
        }
    }
}

/// Firmware a boot used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bios => "BIOS",
            Self::Uefi => "UEFI",
        })
    }
}

/// One finished boot. Dropped during a panic, it prints its serial log to stderr, so even a
/// plain `assert!` on [`Boot::serial`] shows what the nucleus said.
#[derive(Debug)]
pub struct Boot {
    pub exit: QemuExit,
    /// Everything the nucleus wrote to COM1 (empty when the console went to the terminal).
    pub serial: String,
    /// QEMU's own stderr (warnings, errors).
    pub qemu_stderr: String,
    pub firmware: Firmware,
    /// From starting QEMU to its end.
    pub elapsed: Duration,
    /// From starting QEMU to the first look at the serial log that found `nucleus: ready`
    /// (polled every few milliseconds; `None` if it never came or nobody looked).
    pub ready_after: Option<Duration>,
    /// The CPU time QEMU's threads had used when [`Boot::ready_after`] was taken (Linux
    /// only): steadier than the wall clock on a loaded host.
    pub ready_cpu: Option<Duration>,
    /// The serial log file QEMU wrote, while the `Boot` lives (if captured to a file).
    pub serial_path: Option<PathBuf>,
    /// Keeps the run's temporary directory (serial log, OVMF's ROM) alive.
    pub(crate) _dir: Option<crate::shutdown::OwnedDir>,
}

impl Boot {
    /// Fails unless every marker appears in the serial log, each after the previous one.
    pub fn expect_in_order(&self, markers: &[&str]) -> Result<&Self> {
        let mut from = 0;
        for (i, marker) in markers.iter().enumerate() {
            match self.serial[from..].find(marker) {
                Some(at) => from += at + marker.len(),
                None => {
                    let after = match i {
                        0 => String::new(),
                        _ => format!(" after {:?}", markers[i - 1]),
                    };
                    bail!(
                        "{}",
                        self.report(&format!("expected {marker:?}{after} in the serial output"))
                    );
                }
            }
        }
        Ok(self)
    }

    /// Fails unless the boot ended with `expected`.
    pub fn expect_exit(&self, expected: QemuExit) -> Result<()> {
        if self.exit != expected {
            bail!(
                "{}",
                self.report(&format!("expected the boot to end with {expected}"))
            );
        }
        Ok(())
    }

    /// Fails if `text` appears anywhere in the serial log.
    pub fn expect_absent(&self, text: &str) -> Result<&Self> {
        if self.serial.contains(text) {
            bail!(
                "{}",
                self.report(&format!("did not expect {text:?} in the serial output"))
            );
        }
        Ok(self)
    }

    /// The first serial line that starts with `prefix` (after trimming `\r`).
    pub fn line_starting_with(&self, prefix: &str) -> Option<String> {
        self.lines().find(|line| line.starts_with(prefix))
    }

    /// Serial lines without `\r` and terminal escape sequences (OVMF's console, which
    /// shares COM1 under UEFI, leaves colour codes in front of the nucleus's first line).
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.serial.lines().map(clean_line)
    }

    /// The first serial line for which `matches` holds, or an error (with the log) that
    /// says `what` was expected.
    pub fn expect_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> Result<String> {
        match self.lines().find(|l| matches(l)) {
            Some(line) => Ok(line),
            None => bail!(
                "{}",
                self.report(&format!("expected a serial line with {what}"))
            ),
        }
    }

    /// `problem`, then the outcome, QEMU's stderr and the whole serial log. The log is kept
    /// under `target/test-logs/` (the run's own file goes with its temporary folder), and
    /// the report names that copy.
    pub fn report(&self, problem: &str) -> String {
        let mut text = format!(
            "{problem}\n{} boot ended with {} after {}\n",
            self.firmware,
            self.exit,
            format_duration(self.elapsed)
        );
        if !self.qemu_stderr.trim().is_empty() {
            text += &format!("--- QEMU stderr ---\n{}\n", self.qemu_stderr.trim_end());
        }
        let kept = match self.serial_path {
            Some(_) => keep_log(&self.serial),
            None => None,
        };
        text += &match kept {
            Some(path) => format!("--- serial log (kept in {}) ---\n", path.display()),
            None => "--- serial log ---\n".to_owned(),
        };
        text += self.serial.trim_end();
        text += "\n--- end of serial log ---";
        text
    }
}

/// Where failed boots' serial logs are kept.
pub fn test_log_dir() -> PathBuf {
    crate::compile::workspace_root().join("target/test-logs")
}

/// Writes `serial` to a new file in [`test_log_dir`], named after the current thread (the
/// test harness names it after the test), and returns its path; `None` if that fails.
fn keep_log(serial: &str) -> Option<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let dir = test_log_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let thread = std::thread::current();
    let name: String = thread
        .name()
        .unwrap_or("boot")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!(
        "{name}-{}-{}.log",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, serial).ok()?;
    Some(path)
}

/// `line` without carriage returns and ANSI escape sequences (`ESC [ … final`, `ESC x`).
pub fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            // CSI: parameters and intermediates up to a final byte in '@'..='~'; any other
            // escape is two characters.
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl Drop for Boot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}",
                self.report("the test panicked while this boot was alive")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(serial: &str, exit: QemuExit) -> Boot {
        Boot {
            ready_after: None,
            ready_cpu: None,
            exit,
            serial: serial.into(),
            qemu_stderr: String::new(),
            firmware: Firmware::Bios,
            elapsed: Duration::from_millis(1500),
            serial_path: None,
            _dir: None,
        }
    }

    #[test]
    fn exit_codes_map_back_to_debug_exit_values() {
        assert_eq!(debug_exit_status(QEMU_EXIT_SUCCESS), 33);
        assert_eq!(debug_exit_status(QEMU_EXIT_FAILURE), 35);
        assert_eq!(QemuExit::from_status(Some(33), None), QemuExit::Success);
        assert_eq!(QemuExit::from_status(Some(35), None), QemuExit::Failure);
        assert_eq!(QemuExit::from_status(Some(0), None), QemuExit::Other(0));
        assert_eq!(QemuExit::from_status(Some(1), None), QemuExit::Other(1));
        assert_eq!(QemuExit::from_status(None, Some(9)), QemuExit::Other(137));
    }

    #[test]
    fn cli_exit_codes_are_distinct() {
        let codes = [
            QemuExit::Success,
            QemuExit::Failure,
            QemuExit::Other(0),
            QemuExit::Timeout,
        ]
        .map(QemuExit::cli_exit_code);
        assert_eq!(codes, [0, 1, 3, 124]);
    }

    #[test]
    fn markers_must_appear_in_order() {
        let b = boot(
            "fredvisor 0.1.0\r\ncmdline: exit=qemu\r\nnucleus: ready\r\n",
            QemuExit::Success,
        );
        b.expect_in_order(&["fredvisor ", "cmdline: exit=qemu", "nucleus: ready"])
            .unwrap();
        let err = b
            .expect_in_order(&["nucleus: ready", "cmdline: "])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("expected \"cmdline: \" after \"nucleus: ready\""),
            "{err}"
        );
        assert!(
            err.contains("--- serial log ---\nfredvisor 0.1.0"),
            "the log is in the error: {err}"
        );
        // A marker is consumed: the same text twice needs two occurrences.
        assert!(b.expect_in_order(&["ready", "ready"]).is_err());
    }

    #[test]
    fn a_failed_expectation_keeps_the_log_under_target_test_logs() {
        let mut b = boot("nucleus: PANIC at kept-log-test\n", QemuExit::Failure);
        b.serial_path = Some("/tmp/gone/serial.log".into());
        let err = b.expect_exit(QemuExit::Success).unwrap_err().to_string();
        let kept = err
            .split("--- serial log (kept in ")
            .nth(1)
            .and_then(|rest| rest.split(") ---").next())
            .unwrap_or_else(|| panic!("no kept log named in {err}"));
        assert!(kept.contains("/target/test-logs/"), "{kept}");
        assert!(
            kept.contains("a_failed_expectation_keeps_the_log"),
            "named after the test: {kept}"
        );
        assert_eq!(
            std::fs::read_to_string(kept).unwrap(),
            "nucleus: PANIC at kept-log-test\n"
        );
        std::fs::remove_file(kept).unwrap();
    }

    #[test]
    fn wrong_exit_reports_both_and_the_log() {
        let b = boot("nucleus: PANIC\n", QemuExit::Timeout);
        b.expect_exit(QemuExit::Timeout).unwrap();
        let err = b.expect_exit(QemuExit::Success).unwrap_err().to_string();
        assert!(
            err.contains("expected the boot to end with success"),
            "{err}"
        );
        assert!(err.contains("ended with timeout"), "{err}");
        assert!(err.contains("nucleus: PANIC"), "{err}");
    }

    #[test]
    fn lines_drop_terminal_escapes() {
        let ovmf =
            "\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: x\r\n\r\x1b[0m\x1b[37m\x1b[40mfredvisor 0.1.0\r\n";
        let b = boot(ovmf, QemuExit::Success);
        assert_eq!(
            b.lines().collect::<Vec<_>>(),
            ["BdsDxe: x", "fredvisor 0.1.0"]
        );
        assert_eq!(clean_line("a\x1bcb"), "ab");
    }

    #[test]
    fn lines_drop_carriage_returns() {
        let b = boot("a\r\ncmdline: x y\r\n", QemuExit::Success);
        assert_eq!(
            b.line_starting_with("cmdline: ").as_deref(),
            Some("cmdline: x y")
        );
        assert_eq!(
            b.expect_line("y", |l| l.ends_with(" y")).unwrap(),
            "cmdline: x y"
        );
        assert!(b.expect_line("z", |l| l.contains('z')).is_err());
        assert!(b.expect_absent("PANIC").is_ok() && b.expect_absent("cmdline").is_err());
    }
}
