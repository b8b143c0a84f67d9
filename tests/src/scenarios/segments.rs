//! Issue 16's descriptor tables reaching the CPU (`guest-segments`): a guest's own GDT and
//! LDT selectors load (FS takes its base from the guest's descriptor) and load again after a
//! switch, and the hypervisor's reserved entries and descriptors never validated fault in the
//! guest with their selector. Shared by `tests/guest_segments.rs` (QEMU, IDT) and
//! `tests/fred_cpu.rs` (Bochs, FRED): the same lines under both.

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

pub fn own_gdt_and_ldt_selectors_load(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-segments")?;
    let case = |name: &str, case: &str| GuestFile::new(name, &path).mem(4).cmdline(case);
    let boot = boot_guests(machine, vec![case("sg", "own"), case("sh", "hostile")], 2)?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest sg: segments: own: ds 0xb es 0xf, fs:[0] 0x6d7d000000001234 through the GDT and \
         0x1d7d000000005678 through the LDT",
        "guest sg: segments: own: 26 checks passed",
        "guest sh: segments: hostile: 30 checks passed",
        "pv-server: guest sg: shut down (poweroff)",
        "pv-server: guest sh: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}

pub fn a_selector_that_no_longer_loads_enters_the_failsafe_callback(
    machine: Machine,
) -> Result<()> {
    let path = guest_elf("guest-segments")?;
    let boot = boot_guests(
        machine,
        vec![GuestFile::new("fs", &path).mem(4).cmdline("failsafe")],
        1,
    )?;
    no_wrong_answer(&boot)?;
    for line in [
        "guest fs: segments: failsafe: frame ds 0xb es 0xb fs 0x13 gs 0x0, rip \
         hypercall_page+0x14a, cs 0xe030 mask 1, ss 0xe02b; ds 0x0 es 0x0 now",
        "guest fs: segments: failsafe: 23 checks passed",
        "pv-server: guest fs: shut down (poweroff)",
    ] {
        expect_exact_line(&boot, line)?;
    }
    Ok(())
}
