//! Issue 4 acceptance: nucleus events reported with exact values, on QEMU (IDT delivery).
//!
//! The scenarios are `tests::scenarios::events` (shared with `fred_cpu.rs`, which runs them
//! on a FRED CPU): one `selftest=all` boot carries the five resumable events (`int3`, `ud2`,
//! two `#PF`s, `#GP`); every address the nucleus reports is compared with the one its
//! self-test printed before faulting. `df-recursion` and `early-fault` end the boot and get a
//! boot each; so does the garbage command line.

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::events;

#[test]
fn selftest_all_reports_each_event_with_exact_values_bios() -> Result<()> {
    events::selftest_all_reports_each_event_with_exact_values(Machine::QEMU_BIOS)
}

#[test]
fn selftest_all_reports_each_event_with_exact_values_uefi() -> Result<()> {
    events::selftest_all_reports_each_event_with_exact_values(Machine::QEMU_UEFI)
}

#[test]
fn unbounded_recursion_double_faults_onto_the_df_stack() -> Result<()> {
    events::unbounded_recursion_double_faults_onto_the_df_stack(Machine::QEMU_BIOS)
}

#[test]
fn fault_before_the_command_line_is_parsed_is_reported_by_the_early_idt() -> Result<()> {
    events::fault_before_the_command_line_is_parsed_is_reported_by_the_early_idt(Machine::QEMU_BIOS)
}

#[test]
fn garbage_command_line_warns_caps_warnings_and_boots() -> Result<()> {
    events::garbage_command_line_warns_caps_warnings_and_boots(Machine::QEMU_BIOS)
}

#[test]
fn grub_syntax_on_the_command_line_is_refused_before_building() {
    events::grub_syntax_on_the_command_line_is_refused_before_building()
}
