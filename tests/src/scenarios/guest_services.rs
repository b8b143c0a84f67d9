//! Issue 16 points 5-7 acceptance: the test guests that use instruction emulation
//! (`guest-emulate`), event channels and the timer (`guest-events`), the grant table
//! (`guest-grants`) and the hostile cases for descriptor tables and the new hypercalls'
//! pointers (`guest-hostile`), each with its exact lines. Shared by `tests/guest_services.rs`
//! (QEMU, IDT) and `tests/fred_cpu.rs` (Bochs, FRED): the same lines under both.

use anyhow::{Result, ensure};
use image_builder::guest::GuestFile;

use super::guests::{boot_guests, guest_elf};
use crate::expect_exact_line;
use crate::machine::Machine;

fn no_wrong_answer(boot: &crate::Boot) -> Result<()> {
    ensure!(
        !boot.lines().any(|l| l.contains("WRONG")),
        "a check failed: {:?}",
        boot.lines().find(|l| l.contains("WRONG"))
    );
    Ok(())
}

pub fn emulated_cpuid_control_registers_msrs_and_ports(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-emulate")?;
    let boot = boot_guests(machine, vec![GuestFile::new("emu", &path).mem(4)], 1)?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest emu: emulate: cpuid 0x40000000: eax 0x40000002 XenVMMXenVMM",
        "guest emu: emulate: 36 checks passed",
        "pv-server: guest emu: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}

pub fn event_channels_the_timer_and_time(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-events")?;
    let boot = boot_guests(machine, vec![GuestFile::new("ev", &path).mem(4)], 1)?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest ev: events: VIRQ_TIMER on port 1, poll woke on it and on its timeout",
        "guest ev: events: block woke with the timer's upcall through the event callback",
        "guest ev: events: 52 checks passed",
        "pv-server: guest ev: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}

pub fn the_grant_table(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-grants")?;
    let boot = boot_guests(machine, vec![GuestFile::new("gt", &path).mem(4)], 1)?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest gt: grants: one v1 frame, mapped and written",
        "guest gt: grants: 27 checks passed",
        "pv-server: guest gt: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}

pub fn forbidden_descriptors_and_bad_pointers_are_refused(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-hostile")?;
    let case = |name: &str, case: &str| GuestFile::new(name, &path).mem(4).cmdline(case);
    let boot = boot_guests(
        machine,
        vec![case("ds", "descriptors"), case("np", "new-pointers")],
        2,
    )?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest ds: hostile: descriptors: every forbidden descriptor refused",
        "guest ds: hostile: descriptors: 35 checks passed",
        "guest np: hostile: new-pointers: 45 checks passed",
        "pv-server: guest ds: shut down (poweroff)",
        "pv-server: guest np: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}
