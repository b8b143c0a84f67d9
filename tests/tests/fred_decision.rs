//! Issue 8 point 7: the FRED decision on a CPU without FRED (QEMU/TCG), one line per boot.
//!
//! `fred=on` and `fred=auto` both stay on the IDT (`on` with a warning), and every event
//! self-test still passes there; `fred=off` and `pv-shim` name themselves as the reason.

use anyhow::{Result, ensure};
use tests::{
    Boot, QemuExit, boot_bios, expect_event_selftests_passed, expect_exact_line, expect_one_line,
    lines_matching, markers,
};

const REFUSED: &str = "fred: warning: fred=on refused (cpu lacks FRED), staying on IDT delivery";

/// The single `fred: enabled (…)` / `fred: disabled (…)` line, which must equal `expected`.
fn expect_decision(boot: &Boot, expected: &str) -> Result<()> {
    let line = expect_one_line(boot, "the FRED decision (fred: enabled|disabled)", |l| {
        l.starts_with("fred: enabled") || l.starts_with("fred: disabled")
    })?;
    ensure!(
        line == expected,
        "{}",
        boot.report(&format!("decision {line:?}, expected {expected:?}"))
    );
    Ok(())
}

fn expect_no_warning(boot: &Boot) -> Result<()> {
    let warnings = lines_matching(boot, |l| l.starts_with("fred: warning"));
    ensure!(
        warnings.is_empty(),
        "{}",
        boot.report(&format!("unexpected FRED warnings {warnings:?}"))
    );
    Ok(())
}

/// The decision comes before the self-tests, which all pass on the IDT, then `ready`.
fn expect_selftests_on_idt(boot: &Boot, decision: &str) -> Result<()> {
    expect_event_selftests_passed(boot)?;
    boot.expect_in_order(&[decision, "selftest: int3: executing int3", markers::READY])?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

#[test]
fn fred_on_without_cpu_support_warns_stays_on_idt_and_selftests_pass() -> Result<()> {
    let boot = boot_bios("fred=on selftest=all exit=qemu")?;
    let decision = "fred: disabled (cpu lacks FRED)";
    expect_decision(&boot, decision)?;
    expect_one_line(&boot, "the fred=on refusal", |l| {
        l.starts_with("fred: warning")
    })?;
    expect_exact_line(&boot, REFUSED)?;
    boot.expect_in_order(&[REFUSED, decision])?;
    expect_selftests_on_idt(&boot, decision)
}

#[test]
fn fred_auto_without_cpu_support_stays_on_idt_silently_and_selftests_pass() -> Result<()> {
    let boot = boot_bios("fred=auto selftest=all exit=qemu")?;
    let decision = "fred: disabled (cpu lacks FRED)";
    expect_decision(&boot, decision)?;
    expect_no_warning(&boot)?;
    expect_selftests_on_idt(&boot, decision)
}

#[test]
fn fred_off_names_the_command_line_and_selftests_pass() -> Result<()> {
    let boot = boot_bios("fred=off selftest=all exit=qemu")?;
    let decision = "fred: disabled (fred=off)";
    expect_decision(&boot, decision)?;
    expect_no_warning(&boot)?;
    expect_selftests_on_idt(&boot, decision)
}

#[test]
fn pv_shim_disables_fred_and_says_so() -> Result<()> {
    let boot = boot_bios("pv-shim exit=qemu")?;
    expect_decision(&boot, "fred: disabled (pv-shim)")?;
    expect_no_warning(&boot)?;
    boot.expect_in_order(&["fred: disabled (pv-shim)", markers::READY])?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}
