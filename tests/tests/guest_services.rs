//! Issue 16 points 5-7 on QEMU (IDT): instruction emulation, event channels and the timer,
//! the grant table, descriptor tables and the new hypercalls' refusals. The scenarios are
//! `tests::scenarios::guest_services`, shared with `fred_cpu.rs` (Bochs, FRED).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::guest_services;

const QEMU: Machine = Machine::QEMU_BIOS;

#[test]
fn emulated_cpuid_control_registers_msrs_and_ports() -> Result<()> {
    guest_services::emulated_cpuid_control_registers_msrs_and_ports(QEMU)
}

#[test]
fn event_channels_the_timer_and_time() -> Result<()> {
    guest_services::event_channels_the_timer_and_time(QEMU)
}

#[test]
fn the_grant_table() -> Result<()> {
    guest_services::the_grant_table(QEMU)
}

#[test]
fn forbidden_descriptors_and_bad_pointers_are_refused() -> Result<()> {
    guest_services::forbidden_descriptors_and_bad_pointers_are_refused(QEMU)
}
