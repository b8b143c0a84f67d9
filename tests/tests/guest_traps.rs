//! Issue 16 points 1-4 and 8 on QEMU (IDT): trap bouncing, `iret`, user mode and the hostile
//! trap guests. The scenarios are `tests::scenarios::guest_traps`, shared with `fred_cpu.rs`
//! (Bochs, FRED).

use anyhow::Result;
use tests::machine::Machine;
use tests::scenarios::guest_traps;

const QEMU: Machine = Machine::QEMU_BIOS;

#[test]
fn traps_are_bounced_with_xens_frame_and_return_through_iret() -> Result<()> {
    guest_traps::traps_are_bounced_with_xens_frame_and_return_through_iret(QEMU)
}

#[test]
fn user_mode_is_entered_and_left_by_int_syscall_and_a_fault() -> Result<()> {
    guest_traps::user_mode_is_entered_and_left_by_int_syscall_and_a_fault(QEMU)
}

#[test]
fn hostile_trap_tables_and_stacks_crash_only_their_guest() -> Result<()> {
    guest_traps::hostile_trap_tables_and_stacks_crash_only_their_guest(QEMU)
}

#[test]
fn hostile_iret_frames_crash_only_their_guest() -> Result<()> {
    guest_traps::hostile_iret_frames_crash_only_their_guest(QEMU)
}
