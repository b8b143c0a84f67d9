//! Issue 18 point 3 on QEMU (IDT): the call-gate test guest's exact lines. The scenario is
//! `tests::scenarios::callgates`, shared with `fred_cpu.rs` (Bochs, FRED).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::callgates;

#[test]
fn call_gates_are_emulated_with_the_sdm_rules() -> Result<()> {
    callgates::call_gates_are_emulated_with_the_sdm_rules(Machine::QEMU_BIOS)
}
