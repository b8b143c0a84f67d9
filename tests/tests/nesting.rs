//! Issue 14 point 1: events nested inside nucleus work, on QEMU (IDT delivery), where the
//! self-tests reproduce what hung under Bochs' FRED model (see `tests::scenarios::nesting`;
//! `fred_cpu.rs` runs the same scenarios, and the crashing-fred-server one, under Bochs).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::nesting;

#[test]
fn a_tick_in_nucleus_code_comes_back_to_it() -> Result<()> {
    nesting::a_tick_in_nucleus_code_comes_back_to_it(Machine::QEMU_BIOS)
}

#[test]
fn an_event_inside_a_console_write_prints_and_the_line_goes_on() -> Result<()> {
    nesting::an_event_inside_a_console_write_prints_and_the_line_goes_on(Machine::QEMU_BIOS)
}
