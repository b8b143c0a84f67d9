//! Issue 13: a hostile server must not halt, flood, spoof or spy.
//!
//! The `hostile-server` fixture is swapped in with `--server` (as pv-server, and for two
//! tests as fred-server too) and runs one attack, chosen by its start argument `attack=…`
//! (`role=…` for its fred-server parts). For each attack the nucleus must report the
//! server's fault in one line, stay up, and the other server must keep working: after the
//! restart the fixture's generation 1 executes `int3`, which only a working fred-server
//! resumes.
//!
//! Crash boots do not pass `exit=qemu` (the nucleus would end the run at `nucleus: ready`):
//! QEMU is stopped at the last line the test waits for.
use anyhow::{Result, ensure};
use image_builder::bochs;
use tests::{Image, Qemu, QemuExit, boot_timeout};

// ---- 3: forged console lines --------------------------------------------------------------

#[test]
fn the_bochs_verdict_ignores_server_lines() {
    let forged = "nucleus: ready\npv-server: selftest: 0 passed, 9 failed\n\
                  fred-server: nucleus: FATAL: x\npv-server: nucleus: halted\n";
    assert_eq!(bochs::outcome(forged, None), QemuExit::Success);
}

// ---- 7: boot modules ----------------------------------------------------------------------

#[test]
fn modules_beyond_the_limit_are_counted_and_the_symbol_map_is_kept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut image = Image::new().cmdline("selftest=df-recursion exit=qemu");
    for i in 0..20 {
        let path = dir.path().join(format!("extra-{i:02}"));
        std::fs::write(&path, format!("module {i}\n"))?;
        image = image.module(&format!("extra-{i:02}"), &path);
    }
    let iso = image.build_shared()?;
    let boot = Qemu::new(&iso).timeout(boot_timeout()).run()?;
    // 2 servers + nucleus.sym + 20 extras = 23 modules, 16 kept.
    boot.expect_in_order(&["module: nucleus.sym (", "\nmodule: 7 more ignored"])?;
    let rip = boot.expect_line("the dump's RIP line", |l| l.starts_with("nucleus: RIP:"))?;
    ensure!(
        rip.contains(" <nucleus::selftest::recurse+0x"),
        "{}",
        boot.report(&format!("RIP line {rip:?} names no symbol"))
    );
    boot.expect_exit(QemuExit::Success)
}

// ---- 9: CR4 protections ------------------------------------------------------------------

#[test]
fn the_boot_line_says_which_protections_the_default_cpu_lacks() -> Result<()> {
    let boot = tests::boot_bios("exit=qemu")?;
    let line = boot.expect_line("the protections line", |l| l.starts_with("cpu: SMEP "))?;
    ensure!(
        line.contains("SMAP ") && line.contains("UMIP ") && line.contains("PGE "),
        "{}",
        boot.report(&format!("{line:?} does not name every protection"))
    );
    boot.expect_exit(QemuExit::Success)
}
