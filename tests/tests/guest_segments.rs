//! Issue 16: a guest's GDT and LDT loaded by the nucleus, on QEMU (IDT). The scenario is
//! `tests::scenarios::segments`, shared with `fred_cpu.rs` (Bochs, FRED).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::segments;

#[test]
fn own_gdt_and_ldt_selectors_load_and_reserved_ones_fault() -> Result<()> {
    segments::own_gdt_and_ldt_selectors_load(Machine::QEMU_BIOS)
}

#[test]
fn a_selector_that_no_longer_loads_enters_the_failsafe_callback() -> Result<()> {
    segments::a_selector_that_no_longer_loads_enters_the_failsafe_callback(Machine::QEMU_BIOS)
}
