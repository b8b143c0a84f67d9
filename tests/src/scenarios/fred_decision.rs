//! Issue 8 point 7: the FRED decision, one line per boot. On a CPU without FRED (QEMU/TCG)
//! `fred=on` and `fred=auto` both stay on the IDT (`on` with a warning); on a FRED CPU both
//! enable FRED without a warning (issue 14). Every event self-test passes either way;
//! `fred=off` and `pv-shim` name themselves as the reason.

use anyhow::{Result, ensure};

use crate::machine::{FRED_ENABLED, Machine};
use crate::{
    Boot, Image, QemuExit, expect_event_selftests_passed, expect_exact_line, expect_one_line,
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

/// The decision comes before the self-tests, which all pass, then `ready`.
fn expect_selftests_pass(boot: &Boot, decision: &str) -> Result<()> {
    expect_event_selftests_passed(boot)?;
    boot.expect_in_order(&[decision, "selftest: int3: executing int3", markers::READY])?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

/// Boots with exactly `options` and the exit option (no `fred=on` added: the option under
/// test is the scenario's own).
fn boot(machine: Machine, options: &str) -> Result<Boot> {
    machine.boot(&Image::new().cmdline(&format!("{options} {}", machine.exit_option())))
}

/// `fred=on`: refused with a warning without FRED; enabled silently with it.
pub fn fred_on_is_honoured_where_the_cpu_can_and_selftests_pass(machine: Machine) -> Result<()> {
    let boot = boot(machine, "fred=on selftest=all")?;
    let decision = machine.decision();
    expect_decision(&boot, decision)?;
    if machine.has_fred() {
        expect_no_warning(&boot)?;
    } else {
        expect_one_line(&boot, "the fred=on refusal", |l| {
            l.starts_with("fred: warning")
        })?;
        expect_exact_line(&boot, REFUSED)?;
        boot.expect_in_order(&[REFUSED, decision])?;
    }
    expect_selftests_pass(&boot, decision)
}

/// `fred=auto`: the CPU decides, silently.
pub fn fred_auto_follows_the_cpu_silently_and_selftests_pass(machine: Machine) -> Result<()> {
    let boot = boot(machine, "fred=auto selftest=all")?;
    let decision = machine.decision();
    expect_decision(&boot, decision)?;
    expect_no_warning(&boot)?;
    if machine.has_fred() {
        ensure!(decision == FRED_ENABLED);
    }
    expect_selftests_pass(&boot, decision)
}

/// `fred=off`: the IDT on any CPU, naming the command line.
pub fn fred_off_names_the_command_line_and_selftests_pass(machine: Machine) -> Result<()> {
    let boot = boot(machine, "fred=off selftest=all")?;
    let decision = "fred: disabled (fred=off)";
    expect_decision(&boot, decision)?;
    expect_no_warning(&boot)?;
    expect_selftests_pass(&boot, decision)
}

/// `pv-shim`: the IDT on any CPU, naming the shim.
pub fn pv_shim_disables_fred_and_says_so(machine: Machine) -> Result<()> {
    let boot = boot(machine, "pv-shim")?;
    expect_decision(&boot, "fred: disabled (pv-shim)")?;
    expect_no_warning(&boot)?;
    boot.expect_in_order(&["fred: disabled (pv-shim)", markers::READY])?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}
