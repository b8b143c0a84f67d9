//! Issue 7 acceptance (and issue 14 on a FRED CPU): Ring3 servers loaded from boot modules, crashes reported by
//! fred-server (or by the nucleus when fred-server itself crashes) and restarted, the give-up
//! after three restarts, corrupt modules rejected with one line, syscalls with bad pointers
//! refused, a swapped-in server, and the benchmark path end to end.
//!
//! Every expected line is spelled out in full; addresses come from the boot itself (the
//! fault line) and are checked against the ELF that was shipped (the instruction at the
//! reported RIP). Crash boots do not pass `exit=qemu` (the nucleus would end the run at
//! `nucleus: ready`, before the crash): QEMU is stopped at the last line we wait for.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use ipc::PROTOCOL_VERSION;
use ipc::layout::SERVER_LINK_BASE;

use crate::machine::{Machine, Stop};
use crate::{
    Boot, Image, Iso, QemuExit, SplitMix64, build_fixture_server, built_server_elf, count_lines,
    elf, expect_exact_line, expect_line_count, expect_lines_in_order, expect_one_line, file_in_iso,
    hex_after, markers,
};

/// The servers in slot order (image-builder ships them in this order, the nucleus gives
/// them these slots and owner numbers).
const SERVERS: [&str; 2] = ["fred-server", "pv-server"];
const FRED_SLOT: usize = 0;
const PV_SLOT: usize = 1;

/// A kernel-half address for the corrupt-module test (the start of the upper half).
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// `mov qword ptr [0], rax`: the store of `fault=null` (`ipc::rt::cpu::null_write`).
const NULL_STORE: [u8; 8] = [0x48, 0x89, 0x04, 0x25, 0, 0, 0, 0];
const UD2: [u8; 2] = [0x0f, 0x0b];
const PAUSE: [u8; 2] = [0xf3, 0x90];

/// The watchdog's limit: 2 s of 100 Hz ticks without a syscall (`nucleus/src/thread/sched.rs`).
const HUNG_TICKS: u32 = 200;

// ---- expected lines -----------------------------------------------------------------------

fn loaded_line(name: &str, slot: usize, elf: &[u8], generation: u32) -> Result<String> {
    Ok(format!(
        "server {name}: loaded (slot {slot}, entry {:#x}, {} bytes, {} segments, generation {generation})",
        elf::entry(elf)?,
        elf.len(),
        elf::loads(elf)?.len()
    ))
}

fn hello_line(name: &str, generation: u32) -> String {
    format!("nucleus: {name} says hello (protocol {PROTOCOL_VERSION}, generation {generation})")
}

fn selfcheck_lines(name: &str) -> [String; 2] {
    ["kernel pointer", "unmapped pointer"]
        .map(|what| format!("{name}: selfcheck: console_write({what}) -> bad pointer argument"))
}

fn fault_option_line(name: &str, option: &str, generation: u32) -> String {
    format!("{name}: test option: fault={option} in generation {generation}")
}

fn fault_skipped_line(name: &str, option: &str, generation: u32) -> String {
    format!("{name}: test option: fault={option} skipped in generation {generation} (faults=1)")
}

// ---- boots --------------------------------------------------------------------------------

/// The ELF of server `name` as it is inside `iso`.
fn shipped(iso: &Iso, name: &str) -> Result<Vec<u8>> {
    file_in_iso(iso.path(), &format!("/boot/{name}"))
}

/// Boots `image` (without an exit option) until `marker` shows; fails on a timeout or a
/// panic.
fn boot_until(machine: Machine, image: Image, marker: &str) -> Result<(Arc<Iso>, Boot)> {
    let (iso, boot) = machine.boot_until(&image, Stop::At(marker))?;
    boot.expect_exit(QemuExit::Stopped)?;
    boot.expect_absent(markers::PANIC)?;
    Ok((iso, boot))
}

/// Like [`boot_until`], with a stop condition on complete lines.
fn boot_until_serial(
    machine: Machine,
    image: Image,
    done: fn(&str) -> bool,
) -> Result<(Arc<Iso>, Boot)> {
    let (iso, boot) = machine.boot_until(&image, Stop::When(done))?;
    boot.expect_exit(QemuExit::Stopped)?;
    boot.expect_absent(markers::PANIC)?;
    Ok((iso, boot))
}

/// The RIP of the single line starting with `prefix` (`… at 0x…`).
fn fault_rip(boot: &Boot, prefix: &str) -> Result<u64> {
    let line = expect_one_line(boot, &format!("prefix {prefix:?}"), |l| {
        l.starts_with(prefix)
    })?;
    hex_after(&line, " at ").with_context(|| boot.report(&format!("no RIP in {line:?}")))
}

/// The register dump of a Ring3 fault, as `reporter` (`fred-server` or `nucleus`) prints it:
/// header, event line, the delivery (FRED stack level 0, or the IDT's primary stack), and the
/// RIP line with a Ring3 code selector and `rip`.
fn expect_dump(
    machine: Machine,
    boot: &Boot,
    reporter: &str,
    event_line: &str,
    rip: u64,
) -> Result<()> {
    let header = format!("{reporter}: ----[ register dump, cpu 0, ring 3 ]----");
    let rip_prefix = format!("{reporter}: RIP:    ");
    let delivery = format!("{reporter}: {}", machine.primary_delivery());
    expect_lines_in_order(boot, &[&header, event_line, &delivery])?;
    let rip_line = expect_one_line(boot, "the RIP line of the dump", |l| {
        l.starts_with(&rip_prefix)
    })?;
    let (selector, address) = rip_line[rip_prefix.len()..]
        .split_once(':')
        .with_context(|| boot.report(&format!("malformed {rip_line:?}")))?;
    let selector = u16::from_str_radix(selector, 16)?;
    ensure!(
        selector & 3 == 3 && address == format!("{rip:016x}"),
        "{}",
        boot.report(&format!(
            "{rip_line:?}: expected a Ring3 selector and RIP {rip:016x}"
        ))
    );
    boot.expect_in_order(&[&header, event_line, &rip_line])?;
    Ok(())
}

/// How a test fault of pv-server looks in fred-server's report.
struct PvFault {
    /// The `fault=` value.
    option: &'static str,
    /// The summary after `faulted: `, given the RIP.
    summary: fn(u64) -> String,
    /// The dump's event line.
    event_line: &'static str,
    /// Is the code at the RIP (16 bytes of the shipped ELF) the faulting instruction?
    code_matches: fn(&[u8], u64) -> bool,
    /// Lines that must come between the option line and the fault report.
    before_report: Vec<String>,
    /// The dump's `cr2:` value must be 0 (the `#PF` of the null write).
    cr2_is_zero: bool,
}

/// Boots with `server-args=pv-server:fault=<option>,selfcheck` until the restarted pv-server
/// skips the fault, and checks the whole story: selfcheck refusals in generation 0, the
/// fault, fred-server's report with the dump, the restart, Hello from generation 1 and the
/// selfcheck refusals again (traffic after the restart), no nucleus report, no panic.
fn pv_server_fault_is_reported_and_restarted(machine: Machine, fault: PvFault) -> Result<()> {
    let option = fault.option;
    let skipped = fault_skipped_line("pv-server", option, 1);
    let image = Image::new()
        .cmdline(&machine.options(&format!("server-args=pv-server:fault={option},selfcheck")));
    // Both ends of the story: the restarted pv-server and fred-server's line about it run in
    // either order, so the boot waits for both.
    let (iso, boot) = boot_until_serial(machine, image, restarted_and_skipped)?;
    let pv = shipped(&iso, "pv-server")?;

    let rip = fault_rip(&boot, "fred-server: pv-server (owner 1) faulted: ")?;
    let fault_line = format!(
        "fred-server: pv-server (owner 1) faulted: {}",
        (fault.summary)(rip)
    );
    let code =
        elf::code_at(&pv, rip, 16).map_err(|e| anyhow::anyhow!(boot.report(&e.to_string())))?;
    ensure!(
        (fault.code_matches)(code, rip),
        "{}",
        boot.report(&format!(
            "the code at RIP {rip:#x} in the shipped pv-server is {code:02x?}, not the fault={option} instruction"
        ))
    );
    let [kernel0, unmapped0] = selfcheck_lines("pv-server");
    let mut story: Vec<String> = vec![
        loaded_line("pv-server", PV_SLOT, &pv, 0)?,
        hello_line("pv-server", 0),
        kernel0.clone(),
        unmapped0.clone(),
        fault_option_line("pv-server", option, 0),
    ];
    story.extend(fault.before_report.iter().cloned());
    story.extend([
        fault_line,
        "fred-server: restarting pv-server (crash 1 of 3 allowed)".into(),
        "nucleus: pv-server stopped".into(),
        "nucleus: restarting pv-server (restart 1)".into(),
        loaded_line("pv-server", PV_SLOT, &pv, 1)?,
        hello_line("pv-server", 1),
        kernel0.clone(),
        unmapped0.clone(),
        skipped,
    ]);
    let story: Vec<&str> = story.iter().map(String::as_str).collect();
    expect_lines_in_order(&boot, &story)?;
    expect_dump(machine, &boot, "fred-server", fault.event_line, rip)?;
    if fault.cr2_is_zero {
        let registers = expect_one_line(&boot, "the dump's cr2", |l| {
            l.starts_with("fred-server: cr0: ")
        })?;
        ensure!(
            hex_after(&registers, "cr2: ") == Some(0),
            "{}",
            boot.report(&format!("CR2 is not 0 in {registers:?}"))
        );
    }
    expect_exact_line(
        &boot,
        "fred-server: pv-server (owner 1) restarted, generation 1",
    )?;
    expect_line_count(&boot, markers::READY, 1)?;
    expect_line_count(&boot, &kernel0, 2)?;
    expect_line_count(&boot, &unmapped0, 2)?;
    let faults = count_lines(&boot, "nucleus: restarting pv-server (restart 1)");
    ensure!(
        faults == 1,
        "{}",
        boot.report("pv-server restarted more than once")
    );
    boot.expect_absent("the nucleus reports it")?
        .expect_absent("nucleus: fred-server stopped")?;
    Ok(())
}

/// fred-server heard of pv-server's restart, and the restarted one skipped its test fault.
fn restarted_and_skipped(log: &str) -> bool {
    log.contains("fred-server: pv-server (owner 1) restarted, generation 1")
        && log.contains(" skipped in generation 1 (faults=1)")
}

fn null_store_at(code: &[u8], _rip: u64) -> bool {
    code.starts_with(&NULL_STORE)
}

fn ud2_at(code: &[u8], _rip: u64) -> bool {
    code.starts_with(&UD2)
}

/// `pause`, or the short `jmp` back to the `pause` of `spin_forever`'s loop.
fn spin_loop_at(code: &[u8], _rip: u64) -> bool {
    code.starts_with(&PAUSE) || code.starts_with(&[0xeb, 0xfc])
}

// ---- tests --------------------------------------------------------------------------------

pub fn each_server_is_loaded_from_its_module_and_says_hello_before_ready(
    machine: Machine,
) -> Result<()> {
    let iso = Image::new().cmdline(&machine.cmdline("")).build_shared()?;
    let boot = machine.boot_iso(&iso, None)?;
    boot.expect_absent(markers::PANIC)?
        .expect_absent("rejected")?;
    let mut loaded = Vec::new();
    for (slot, name) in SERVERS.iter().enumerate() {
        let elf = shipped(&iso, name)?;
        ensure!(
            elf::entry(&elf)? == SERVER_LINK_BASE && SERVER_LINK_BASE == 0x40_0000,
            "{name} is not linked at 0x400000"
        );
        loaded.push(loaded_line(name, slot, &elf, 0)?);
    }
    let started = format!("nucleus: {} server(s) started", SERVERS.len());
    expect_lines_in_order(&boot, &[&loaded[0], &loaded[1], &started])?;
    let lines: Vec<String> = boot.lines().collect();
    let ready = lines
        .iter()
        .position(|l| l == markers::READY)
        .with_context(|| boot.report("no `nucleus: ready`"))?;
    for name in SERVERS {
        let hello = hello_line(name, 0);
        let at = lines.iter().position(|l| *l == hello);
        ensure!(
            at.is_some_and(|at| at < ready),
            "{}",
            boot.report(&format!("expected {hello:?} before {:?}", markers::READY))
        );
        expect_line_count(&boot, &hello, 1)?;
    }
    boot.expect_exit(QemuExit::Success)
}

pub fn pv_server_null_write_is_shown_by_fred_server_and_restarted(machine: Machine) -> Result<()> {
    pv_server_fault_is_reported_and_restarted(
        machine,
        PvFault {
            option: "null",
            summary: |rip| format!("#PF at {rip:#x} (error 0x6, address 0x0)"),
            event_line: "fred-server: event: #PF (type 3 HW exception, vector 14) error 0x6 [W U] data (CR2) 0x0",
            code_matches: null_store_at,
            before_report: Vec::new(),
            cr2_is_zero: true,
        },
    )
}

pub fn pv_server_ud2_is_shown_by_fred_server_and_restarted(machine: Machine) -> Result<()> {
    pv_server_fault_is_reported_and_restarted(
        machine,
        PvFault {
            option: "ud2",
            summary: |rip| format!("#UD at {rip:#x} (error 0x0)"),
            event_line: "fred-server: event: #UD (type 3 HW exception, vector 6) error 0x0",
            code_matches: ud2_at,
            before_report: Vec::new(),
            cr2_is_zero: false,
        },
    )
}

pub fn hung_pv_server_is_caught_by_the_watchdog_and_restarted(machine: Machine) -> Result<()> {
    pv_server_fault_is_reported_and_restarted(
        machine,
        PvFault {
            option: "loop",
            // The tick that caught it: the local APIC timer's vector (0xf0).
            summary: |rip| format!("Interrupt {{ vector: 240 }} at {rip:#x}"),
            event_line: "fred-server: event: interrupt (type 0 external interrupt, vector 240)",
            code_matches: spin_loop_at,
            before_report: vec![format!(
                "nucleus: pv-server made no syscall for {HUNG_TICKS} ticks: treating it as hung"
            )],
            cr2_is_zero: false,
        },
    )
}

/// The scenario that hung under Bochs' FRED before issue 14's fix (a tick nested in the
/// restart switched away from it while it held the console lock).
pub fn crashing_fred_server_is_reported_by_the_nucleus_and_restarted(
    machine: Machine,
) -> Result<()> {
    // fred-server executes ud2 right after its Hello; pv-server then faults too, and the
    // restarted fred-server must handle that: traffic after the restart.
    let pv_skipped = fault_skipped_line("pv-server", "null", 1);
    let image =
        Image::new().cmdline(&machine.options(
            "server-args=fred-server:fault=ud2 server-args=pv-server:fault=null,selfcheck",
        ));
    let (iso, boot) = boot_until(machine, image, &pv_skipped)?;
    let fred = shipped(&iso, "fred-server")?;
    let pv = shipped(&iso, "pv-server")?;

    let rip_line = expect_one_line(&boot, "the nucleus' RIP line", |l| {
        l.starts_with("nucleus: RIP:    ")
    })?;
    let rip = rip_line
        .rsplit(':')
        .next()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .with_context(|| boot.report(&format!("no RIP in {rip_line:?}")))?;
    let code =
        elf::code_at(&fred, rip, 2).map_err(|e| anyhow::anyhow!(boot.report(&e.to_string())))?;
    ensure!(
        code == UD2,
        "{}",
        boot.report(&format!(
            "fred-server's code at {rip:#x} is {code:02x?}, not ud2"
        ))
    );
    expect_dump(
        machine,
        &boot,
        "nucleus",
        "nucleus: event: #UD (type 3 HW exception, vector 6) error 0x0",
        rip,
    )?;
    expect_lines_in_order(
        &boot,
        &[
            &loaded_line("fred-server", FRED_SLOT, &fred, 0)?,
            &hello_line("fred-server", 0),
            &fault_option_line("fred-server", "ud2", 0),
            "nucleus: fred-server faulted and fred-server faulted itself: the nucleus reports it",
            "nucleus: ----[ register dump, cpu 0, ring 3 ]----",
            "nucleus: fred-server stopped",
            "nucleus: restarting fred-server (restart 1)",
            &loaded_line("fred-server", FRED_SLOT, &fred, 1)?,
            &hello_line("fred-server", 1),
            &fault_skipped_line("fred-server", "ud2", 1),
        ],
    )?;
    // pv-server: unaffected by fred-server's crash, and its own crash is handled by the
    // restarted fred-server.
    let [kernel, unmapped] = selfcheck_lines("pv-server");
    expect_lines_in_order(
        &boot,
        &[
            &hello_line("pv-server", 0),
            &kernel,
            &unmapped,
            &fault_option_line("pv-server", "null", 0),
        ],
    )?;
    let pv_rip = fault_rip(&boot, "fred-server: pv-server (owner 1) faulted: ")?;
    ensure!(
        elf::code_at(&pv, pv_rip, 8)? == NULL_STORE,
        "{}",
        boot.report("pv-server's fault RIP is not its null store")
    );
    expect_lines_in_order(
        &boot,
        &[
            &hello_line("fred-server", 1),
            &format!(
                "fred-server: pv-server (owner 1) faulted: #PF at {pv_rip:#x} (error 0x6, address 0x0)"
            ),
            "fred-server: restarting pv-server (crash 1 of 3 allowed)",
            "nucleus: restarting pv-server (restart 1)",
            &hello_line("pv-server", 1),
            &kernel,
            &unmapped,
            &pv_skipped,
        ],
    )?;
    expect_line_count(
        &boot,
        "nucleus: fred-server faulted and fred-server faulted itself: the nucleus reports it",
        1,
    )?;
    expect_line_count(&boot, "nucleus: restarting fred-server (restart 1)", 1)?;
    expect_line_count(&boot, markers::READY, 1)?;
    boot.expect_absent("giving up")?;
    Ok(())
}

/// The give-up boot ends once fred-server gave up and the nucleus stopped pv-server.
fn gave_up_and_stopped(log: &str) -> bool {
    log.split_once("fred-server: pv-server crashed 4 times, giving up")
        .is_some_and(|(_, after)| after.contains("nucleus: pv-server stopped"))
}

pub fn fourth_crash_makes_fred_server_give_up_and_it_keeps_running(machine: Machine) -> Result<()> {
    let image = Image::new().cmdline(&machine.options("server-args=pv-server:fault=null,faults=9"));
    let (iso, boot) = boot_until_serial(machine, image, gave_up_and_stopped)?;
    let pv = shipped(&iso, "pv-server")?;
    let rip = elf_null_store_rip(&boot, &pv)?;
    let fault_line = format!(
        "fred-server: pv-server (owner 1) faulted: #PF at {rip:#x} (error 0x6, address 0x0)"
    );
    let mut story = vec![hello_line("pv-server", 0)];
    for generation in 0..4 {
        story.push(fault_option_line("pv-server", "null", generation));
        story.push(fault_line.clone());
        if generation < 3 {
            let restart = generation + 1;
            story.push(format!(
                "fred-server: restarting pv-server (crash {restart} of 3 allowed)"
            ));
            story.push("nucleus: pv-server stopped".into());
            story.push(format!("nucleus: restarting pv-server (restart {restart})"));
            story.push(loaded_line("pv-server", PV_SLOT, &pv, restart)?);
            story.push(hello_line("pv-server", restart));
        }
    }
    story.push("fred-server: pv-server crashed 4 times, giving up".into());
    story.push("nucleus: pv-server stopped".into());
    let story: Vec<&str> = story.iter().map(String::as_str).collect();
    expect_lines_in_order(&boot, &story)?;
    expect_line_count(&boot, &fault_line, 4)?;
    expect_line_count(&boot, "nucleus: pv-server stopped", 4)?;
    // No fourth restart, and fred-server (which printed the verdict and whose Kill reply
    // stopped pv-server) neither crashed, hung nor stopped.
    boot.expect_absent("restarting pv-server (restart 4)")?
        .expect_absent("generation 4")?
        .expect_absent("nucleus: fred-server stopped")?
        .expect_absent("nucleus: fred-server faulted")?
        .expect_absent("treating it as hung")?;
    expect_line_count(&boot, &hello_line("fred-server", 0), 1)?;
    Ok(())
}

/// The RIP of pv-server's first null-store fault, checked against the shipped ELF.
fn elf_null_store_rip(boot: &Boot, pv: &[u8]) -> Result<u64> {
    let line = boot.expect_line("pv-server's #PF", |l| {
        l.starts_with("fred-server: pv-server (owner 1) faulted: #PF at ")
    })?;
    let rip = hex_after(&line, " at ").with_context(|| boot.report("no RIP"))?;
    ensure!(
        elf::code_at(pv, rip, 8)? == NULL_STORE,
        "{}",
        boot.report(&format!("{rip:#x} is not pv-server's null store"))
    );
    Ok(rip)
}

// ---- corrupt modules ----------------------------------------------------------------------

/// How a corrupt module is shipped.
enum Ship {
    /// Through `Image::server` (image-builder's ELF-magic check applies).
    Checked,
    /// Through `Image::server_unchecked` (any bytes).
    Unchecked,
}

/// Ships `bytes` as server `victim`, boots with the exit option and expects the one
/// rejection line, the other server loaded and saying Hello, and `nucleus: ready`.
fn corrupt_module_is_rejected(
    machine: Machine,
    victim: &str,
    bytes: &[u8],
    ship: Ship,
    reason: &str,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(victim);
    std::fs::write(&path, bytes).context("cannot write the corrupt module")?;
    let image = Image::new().cmdline(&machine.cmdline(""));
    let image = match ship {
        Ship::Checked => image.server(victim, &path),
        Ship::Unchecked => image.server_unchecked(victim, &path),
    };
    let iso = image.build_shared()?;
    let boot = machine.boot_iso(&iso, None)?;
    let (slot, other) = SERVERS
        .iter()
        .enumerate()
        .find(|(_, s)| **s != victim)
        .context("no other server")?;
    let other_elf = shipped(&iso, other)?;
    let rejected = format!("server {victim}: rejected: {reason}");
    expect_lines_in_order(
        &boot,
        &[
            &rejected,
            "nucleus: 1 server(s) started",
            &hello_line(other, 0),
            markers::READY,
        ],
    )?;
    expect_exact_line(&boot, &loaded_line(other, slot, &other_elf, 0)?)?;
    expect_line_count(&boot, &rejected, 1)?;
    boot.expect_absent(&format!("server {victim}: loaded"))?
        .expect_absent(&format!("nucleus: {victim} says hello"))?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

pub fn server_cut_inside_its_headers_is_rejected_as_truncated(machine: Machine) -> Result<()> {
    let pv = built_server_elf("pv-server")?;
    // Half of the program header table survives.
    let headers = elf::program_headers(&pv)?;
    let cut = headers.first().context("no program headers")?.at + 28;
    corrupt_module_is_rejected(machine, "pv-server", &pv[..cut], Ship::Checked, "truncated")
}

pub fn server_cut_inside_a_segment_is_rejected_naming_the_segment(machine: Machine) -> Result<()> {
    let fred = built_server_elf("fred-server")?;
    let loads = elf::loads(&fred)?;
    let first = loads.first().context("no PT_LOAD")?;
    // The first segment keeps all but its last byte.
    let cut = usize::try_from(first.offset + first.filesz - 1)?;
    let reason = format!("segment {} extends past the end of the file", first.index);
    corrupt_module_is_rejected(machine, "fred-server", &fred[..cut], Ship::Checked, &reason)
}

pub fn server_with_a_segment_in_kernel_space_is_rejected(machine: Machine) -> Result<()> {
    let mut pv = built_server_elf("pv-server")?;
    let loads = elf::loads(&pv)?;
    let victim = *loads.last().context("no PT_LOAD")?;
    elf::set_load_address(&mut pv, &victim, KERNEL_HALF)?;
    ensure!(elf::loads(&pv)?.last().map(|h| h.vaddr) == Some(KERNEL_HALF));
    let reason = format!("segment {} outside user space", victim.index);
    corrupt_module_is_rejected(machine, "pv-server", &pv, Ship::Checked, &reason)
}

pub fn elf_magic_followed_by_random_bytes_is_rejected(machine: Machine) -> Result<()> {
    let mut rng = SplitMix64::new(0x7e1f_0001);
    let mut bytes: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    bytes[..4].copy_from_slice(b"\x7fELF");
    if bytes[4] == 2 {
        bytes[4] = 3; // anything but ELFCLASS64
    }
    corrupt_module_is_rejected(machine, "fred-server", &bytes, Ship::Checked, "not ELF64")
}

pub fn random_bytes_are_rejected_as_not_elf(machine: Machine) -> Result<()> {
    let mut rng = SplitMix64::new(0x7e1f_0002);
    let mut bytes: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    if bytes[0] == 0x7f {
        bytes[0] = 0;
    }
    corrupt_module_is_rejected(
        machine,
        "pv-server",
        &bytes,
        Ship::Unchecked,
        "not an ELF file",
    )
}

// ---- swap ---------------------------------------------------------------------------------

/// The fixture's own line, behind the prefix the nucleus gives every line of pv-server's.
const ALT_GREETING: &str =
    "pv-server: alt-server: hello from the swapped-in server (running as pv-server)";

fn alt_greeted_and_ready(log: &str) -> bool {
    log.contains(ALT_GREETING) && log.contains(markers::READY)
}

pub fn alt_server_swapped_in_as_pv_server_runs_under_that_name(machine: Machine) -> Result<()> {
    let alt = build_fixture_server("alt-server")?;
    let image = Image::new()
        .server("pv-server", &alt)
        .cmdline(&machine.options(""));
    let (iso, boot) = boot_until_serial(machine, image, alt_greeted_and_ready)?;
    let shipped_alt = shipped(&iso, "pv-server")?;
    // The ISO ships servers stripped (image_builder::strip): byte for byte the stripped copy.
    ensure!(
        shipped_alt == image_builder::strip::stripped(&std::fs::read(&alt)?)?,
        "the ISO's pv-server is not the alt-server ELF"
    );
    expect_lines_in_order(
        &boot,
        &[
            &loaded_line("pv-server", PV_SLOT, &shipped_alt, 0)?,
            &hello_line("pv-server", 0),
        ],
    )?;
    expect_exact_line(&boot, ALT_GREETING)?;
    expect_line_count(&boot, markers::READY, 1)?;
    // The real pv-server never ran.
    boot.expect_absent("pv-server: started")?;
    Ok(())
}
