//! Issue 14 point 1: events nested inside nucleus work.
//!
//! Under Bochs' FRED model a crashing fred-server hung the nucleus: the CPU model delivered
//! a timer tick while the nucleus was restarting fred-server (FRED delivery clears
//! RFLAGS.IF there without masking interrupts), the tick found no current server, took the
//! nucleus for idle and switched to pv-server, abandoning the restart with the console lock
//! held; pv-server's next `println!` in the nucleus spun on that lock forever. QEMU masks
//! interrupts correctly, so these self-tests open the same two doors on purpose:
//! `nested-tick` takes a tick in nucleus code outside the idle loop (before the fix boot
//! never went on), `console-nested` takes a breakpoint in the middle of a console write
//! (before the fix its report spun on the console lock). Both hung; a hang is a timeout,
//! which fails the test.

use anyhow::Result;

use crate::machine::Machine;
use crate::{Image, QemuExit, expect_exact_line, expect_lines_in_order, markers, selftest_summary};

/// `selftest=nested-tick`: the tick is counted and the nucleus goes on where it was.
pub fn a_tick_in_nucleus_code_comes_back_to_it(machine: Machine) -> Result<()> {
    let boot = machine.boot(&Image::new().cmdline(&machine.cmdline("selftest=nested-tick")))?;
    boot.expect_in_order(&[
        "selftest: nested-tick: taking a timer tick in nucleus code",
        "selftest: nested-tick: passed (",
        " window(s), resumed in the nucleus)",
        &selftest_summary(1, 0),
        markers::READY,
    ])?
    .expect_absent(": FAILED")?
    .expect_absent(markers::PANIC)?;
    // The servers started after the self-test, so the tick did not leave the nucleus for idle.
    expect_exact_line(&boot, "nucleus: 2 server(s) started")?;
    boot.expect_exit(QemuExit::Success)
}

/// `selftest=console-nested`: the nested `#BP` report gets a line of its own, and the
/// interrupted line ends after it.
pub fn an_event_inside_a_console_write_prints_and_the_line_goes_on(machine: Machine) -> Result<()> {
    let boot = machine.boot(&Image::new().cmdline(&machine.cmdline("selftest=console-nested")))?;
    expect_lines_in_order(
        &boot,
        &[
            "selftest: console-nested: a breakpoint inside [",
            "] this line",
            "selftest: console-nested: passed (the nested report printed and the line went on)",
            &selftest_summary(1, 0),
            markers::READY,
        ],
    )?;
    let lines: Vec<String> = boot.lines().collect();
    let cut = lines
        .iter()
        .position(|l| l == "selftest: console-nested: a breakpoint inside [")
        .unwrap_or(usize::MAX);
    let nested = lines
        .get(cut.wrapping_add(1))
        .map(String::as_str)
        .unwrap_or("");
    anyhow::ensure!(
        nested.starts_with(&format!(
            "nucleus: #BP (int3) at {}",
            crate::NUCLEUS_RIP_PREFIX
        )) && nested.ends_with(", resuming"),
        "{}",
        boot.report(&format!(
            "expected the #BP report right after the cut line, found {nested:?}"
        ))
    );
    boot.expect_absent(": FAILED")?;
    boot.expect_exit(QemuExit::Success)
}
