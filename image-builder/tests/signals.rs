//! A signal to image-builder alone (not to its process group, as `kill PID` or a closing
//! terminal sends it) ends QEMU and removes every temporary folder, then image-builder
//! exits with 128 + the signal.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The pid of a `qemu-system-*` process whose parent is `parent`, if there is one.
fn qemu_child_of(parent: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may contain spaces, so split after the last ')'.
        let (head, tail) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1;
        let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm.starts_with("qemu-system")).then_some(pid)
    })
}

/// True while `pid` is a live (not zombie) qemu process.
fn qemu_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.contains("(qemu-system")
            && stat
                .rsplit_once(')')
                .and_then(|(_, tail)| tail.split_whitespace().next())
                != Some("Z")
    })
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn signal_ends_qemu_and_removes_temporary_folders(signal: &str, number: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut image_builder = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["run", "--stay", "--timeout", "600", "--output"])
        .arg(out.path().join("run.iso"))
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not a pipe: a QEMU left behind would hold a pipe open and hang the test.
        .stderr(fs::File::create(out.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let pid = image_builder.id();
    // The first build of the nucleus may be part of this wait.
    let deadline = Instant::now() + Duration::from_secs(900);
    let qemu = loop {
        if let Some(qemu) = qemu_child_of(pid) {
            break qemu;
        }
        if let Some(status) = image_builder.try_wait().unwrap() {
            let stderr = fs::read_to_string(out.path().join("stderr")).unwrap_or_default();
            panic!("image-builder ended ({status}) before QEMU ran: {stderr}");
        }
        assert!(Instant::now() < deadline, "QEMU did not start");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !entries(tmp.path()).is_empty(),
        "the run has its temporary folder while QEMU runs"
    );

    let sent = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = image_builder.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "image-builder did not end after SIG{signal}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(out.path().join("stderr")).unwrap_or_default();
    assert_eq!(status.code(), Some(128 + number), "SIG{signal}: {stderr}");
    assert!(!qemu_alive(qemu), "SIG{signal} left QEMU {qemu} running");
    assert_eq!(
        entries(tmp.path()),
        Vec::<String>::new(),
        "SIG{signal} left temporary folders"
    );
}

/// True if this process ignores signal `number` (and so image-builder inherits that and
/// keeps ignoring it, as `nohup` asks).
fn ignored_here(number: i32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (number - 1)) != 0)
}

/// One test for the three signals, so that only one QEMU runs at a time.
#[test]
fn sigterm_sigint_and_sighup_end_qemu_and_remove_temporary_folders() {
    for (signal, number) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        if ignored_here(number) {
            eprintln!("SIG{signal} is ignored by the test process (nohup?): not tried");
            continue;
        }
        signal_ends_qemu_and_removes_temporary_folders(signal, number);
    }
}
