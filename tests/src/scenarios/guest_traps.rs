//! Issue 16 points 1-4 and 8: the trap and user-mode test guests (`tests/guests/traps`,
//! `tests/guests/usermode`) with their exact lines — every trap bounced with Xen's frame and
//! back through `iret`, user mode entered and left by `int`, `syscall` and a fault, and the
//! hostile trap tables, stacks and `iret` frames each ending only their guest. Shared by
//! `guest_traps.rs` (QEMU, IDT) and `fred_cpu.rs` (Bochs, FRED): the same lines under both.

use anyhow::{Context, Result, ensure};
use image_builder::guest::GuestFile;

use super::guests::{boot_guests, guest_elf};
use crate::machine::Machine;
use crate::{Boot, expect_exact_line};

fn expect_all(boot: &Boot, lines: &[String]) -> Result<()> {
    for line in lines {
        expect_exact_line(boot, line)?;
    }
    ensure!(
        !boot.lines().any(|l| l.contains("WRONG")),
        "a guest check failed"
    );
    Ok(())
}

/// The crash line of guest `name`, which must start and end as given, and its dump.
fn expect_crash(boot: &Boot, name: &str, starts: &str, ends: &str) -> Result<()> {
    let prefix = format!("pv-server: guest {name}: crashed: {starts}");
    let line = boot
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("no line starting {prefix:?}"))?;
    ensure!(line.ends_with(ends), "{line:?} does not end {ends:?}");
    expect_exact_line(
        boot,
        &format!("pv-server: guest {name}: ----[ register dump, cpu 0, ring 3 ]----"),
    )
}

pub fn traps_are_bounced_with_xens_frame_and_return_through_iret(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-traps")?;
    let boot = boot_guests(machine, vec![GuestFile::new("traps", &path).mem(4)], 1)?;
    let lines: Vec<String> = [
        // Events were unmasked: the saved mask is 0 and IF 1; the entry's flag masks them.
        "ud2: vector 0x6, no error code, rip +0, cs 0xe030 mask 0, IF 1",
        "ud2: handler ran with mask 1, mask after iret 0",
        "read of NULL: vector 0xe, error 0x0, rip +0, cs 0xe030 mask 1, IF 0",
        "read of NULL: vcpu_info cr2 0x0",
        "unmapped read: vector 0xe, error 0x0, rip +0, cs 0xe030 mask 1, IF 0",
        "unmapped read: vcpu_info cr2 0x700000000000",
        "non-canonical read: vector 0xd, error 0x0, rip +0, cs 0xe030 mask 1, IF 0",
        "div by 0: vector 0x0, no error code, rip +0, cs 0xe030 mask 1, IF 0",
        "int3: vector 0x3, no error code, rip +1, cs 0xe030 mask 1, IF 0",
        "int 4: vector 0x4, no error code, rip +2, cs 0xe030 mask 1, IF 0",
        "int 0x20 (DPL 1): vector 0x20, no error code, rip +2, cs 0xe030 mask 1, IF 0",
        "int 0x21 (DPL 0): vector 0xd, error 0x10a, rip +0, cs 0xe030 mask 1, IF 0",
        "9 traps, each back through iret",
    ]
    .iter()
    .map(|l| format!("guest traps: traps: {l}"))
    .chain(["pv-server: guest traps: shut down (poweroff)".to_string()])
    .collect();
    expect_all(&boot, &lines)
}

pub fn user_mode_is_entered_and_left_by_int_syscall_and_a_fault(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-usermode")?;
    let boot = boot_guests(machine, vec![GuestFile::new("user", &path).mem(4)], 1)?;
    let kept = "cs 0xe033, on the kernel stack yes, user rsp kept yes";
    let lines: Vec<String> = [
        "entering user mode".to_string(),
        "user code computed 42".to_string(),
        format!("int 0x80 from user: vector 0x80, rip right yes, {kept}"),
        format!("syscall from user: vector 0x100, rip right yes, {kept}"),
        "syscall from user: rcx is the return rip yes".to_string(),
        format!("int 0x81 from user: vector 0xd with its error code, rip right yes, {kept}"),
        format!("ud2 from user: vector 0x6, rip right yes, {kept}"),
        "back in kernel mode, powering off".to_string(),
    ]
    .iter()
    .map(|l| format!("guest user: usermode: {l}"))
    .chain(["pv-server: guest user: shut down (poweroff)".to_string()])
    .collect();
    expect_all(&boot, &lines)
}

pub fn hostile_trap_tables_and_stacks_crash_only_their_guest(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-traps")?;
    let guest = |name: &str, case: &str| GuestFile::new(name, &path).mem(4).cmdline(case);
    let boot = boot_guests(
        machine,
        vec![
            guest("bt", "bad-table"),
            guest("nt", "no-table"),
            guest("ro", "ro-stack"),
            guest("hv", "hv-stack"),
        ],
        0,
    )?;
    expect_all(
        &boot,
        &[
            "guest bt: traps: bad-table: 9 answers right; ud2 into a handler in the hypervisor's range".into(),
            "pv-server: guest bt: crashed: #UD handler 0xffff800000001000 is in the hypervisor's range".into(),
            "pv-server: guest hv: crashed: #UD bounce frame below 0xffff800000002000 cannot be written".into(),
        ],
    )?;
    expect_crash(&boot, "bt", "#UD handler", "range")?;
    expect_crash(&boot, "nt", "#UD at 0x", " (error 0x0) with no trap table")?;
    expect_crash(
        &boot,
        "ro",
        "#UD bounce frame below 0x",
        "800 cannot be written",
    )?;
    expect_crash(&boot, "hv", "#UD bounce frame", "cannot be written")
}

pub fn hostile_iret_frames_crash_only_their_guest(machine: Machine) -> Result<()> {
    let path = guest_elf("guest-traps")?;
    let guest = |name: &str, case: &str| GuestFile::new(name, &path).mem(4).cmdline(case);
    let boot = boot_guests(
        machine,
        vec![
            guest("ih", "iret-hv"),
            guest("ic", "iret-cs"),
            guest("ir", "iret-rip"),
            guest("iu", "iret-user"),
        ],
        0,
    )?;
    expect_all(
        &boot,
        &[
            "pv-server: guest ih: crashed: iret frame at 0xffff800000002000 cannot be read".into(),
            "pv-server: guest ic: crashed: iret to cs 0xe008 ss 0xe02b, not the guest's".into(),
            "pv-server: guest ir: crashed: iret to non-canonical rip 0x800000000000".into(),
            "pv-server: guest iu: crashed: iret to user mode with no user page tables".into(),
        ],
    )
}
