//! Issue 8 point 7: the FRED decision on a CPU without FRED (QEMU/TCG), one line per boot.
//!
//! `fred=on` and `fred=auto` both stay on the IDT (`on` with a warning), and every event
//! self-test still passes there; `fred=off` and `pv-shim` name themselves as the reason.
//! The scenarios are `tests::scenarios::fred_decision`, shared with `fred_cpu.rs`.

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::fred_decision;

#[test]
fn fred_on_without_cpu_support_warns_stays_on_idt_and_selftests_pass() -> Result<()> {
    fred_decision::fred_on_is_honoured_where_the_cpu_can_and_selftests_pass(Machine::QEMU_BIOS)
}

#[test]
fn fred_auto_without_cpu_support_stays_on_idt_silently_and_selftests_pass() -> Result<()> {
    fred_decision::fred_auto_follows_the_cpu_silently_and_selftests_pass(Machine::QEMU_BIOS)
}

#[test]
fn fred_off_names_the_command_line_and_selftests_pass() -> Result<()> {
    fred_decision::fred_off_names_the_command_line_and_selftests_pass(Machine::QEMU_BIOS)
}

#[test]
fn pv_shim_disables_fred_and_says_so() -> Result<()> {
    fred_decision::pv_shim_disables_fred_and_says_so(Machine::QEMU_BIOS)
}
