//! Issue 15 acceptance on QEMU (IDT): the project's PV64 test guests end to end. The
//! scenarios are `tests::scenarios::guests`, shared with `fred_cpu.rs` (Bochs, FRED).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::guests;

const QEMU: Machine = Machine::QEMU_BIOS;

#[test]
fn hello_prints_its_start_info_and_powers_off() -> Result<()> {
    guests::hello_prints_its_start_info_and_powers_off(QEMU)
}

#[test]
fn pagetables_maps_remaps_and_unmaps() -> Result<()> {
    guests::pagetables_maps_remaps_and_unmaps(QEMU)
}

#[test]
fn two_guests_at_once_both_finish_unmixed() -> Result<()> {
    guests::two_guests_at_once_both_finish_unmixed(QEMU)
}

#[test]
fn hostile_guests_get_their_errors_and_others_run_on() -> Result<()> {
    guests::hostile_guests_get_their_errors_and_others_run_on(QEMU)
}

#[test]
fn segment_bases_are_loaded_and_hostile_ones_refused() -> Result<()> {
    guests::segment_bases_are_loaded_and_hostile_ones_refused(QEMU)
}

#[test]
fn spinning_and_faulting_guests_end_and_hello_still_runs() -> Result<()> {
    guests::spinning_and_faulting_guests_end_and_hello_still_runs(QEMU)
}

#[test]
fn bad_images_are_rejected_with_one_line_each() -> Result<()> {
    guests::bad_images_are_rejected_with_one_line_each(QEMU)
}
