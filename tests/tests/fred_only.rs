//! Issue 14 point 3: the FRED-only self-tests under the IDT (QEMU): each says it needs FRED
//! and is skipped, and boot goes on (`fred_cpu.rs` runs them on a FRED CPU).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::fred_only;

#[test]
fn fred_only_selftests_are_skipped_on_the_idt() -> Result<()> {
    fred_only::fred_only_selftests_pass_on_fred_and_are_skipped_on_the_idt(Machine::QEMU_BIOS)
}

#[test]
fn stack_level_df_selftests_are_skipped_on_the_idt() -> Result<()> {
    fred_only::a_pf_on_a_guard_stack_level_escalates_to_df_on_sl3(Machine::QEMU_BIOS, 1)?;
    fred_only::a_pf_on_a_guard_stack_level_escalates_to_df_on_sl3(Machine::QEMU_BIOS, 2)
}
