//! Issue 22 acceptance: the binary trace on COM2, decoded on the host with the ELFs' defmt
//! tables (`image_builder::trace`, what `run --trace` and `trace RAW` run).
//!
//! One `selftest=all trace=events` boot: its trace holds the five self-test events in order,
//! each with its vector, and each server's start. A pv-server crash (`fault=null`): the trace
//! holds the fault (vector 14 from ring 3), its forwarding to fred-server, fred-server's
//! reply, and pv-server stopped, restarted and started again as generation 1. The capture of the first boot, cut short
//! and corrupted, decodes up to the damage and says where it stopped in one line. The `hello`
//! guest: its start, its hypercalls (console writes, then the shutdown) with their replies, and
//! its end. The `traps` guest: each of its nine traps forwarded and bounced to its handler.
//! `trace=all`: syscalls, switches and the servers' own records; without `trace=`, an empty
//! COM2.

use std::fs;

use anyhow::{Context, Result, ensure};

use image_builder::guest::{ALL_ENDED, GuestFile};
use image_builder::trace::{self, Decoded, Table, Tables};
use tests::{Boot, Image, Qemu, QemuExit, boot_timeout, markers};

/// A boot with COM2 captured: COM1, the raw trace, its decoding and the tables that did it.
struct Traced {
    boot: Boot,
    elfs: trace::Elfs,
    raw: Vec<u8>,
    decoded: Decoded,
    tables: Tables<Table>,
}

/// Boots `cmdline` with COM2 captured and decodes the capture with the ISO's ELFs.
fn traced_boot(cmdline: &str, until: Option<fn(&str) -> bool>) -> Result<Traced> {
    traced_image(Image::new().cmdline(cmdline), until)
}

/// Boots `image` with COM2 captured and decodes the capture with the ISO's ELFs.
fn traced_image(image: Image, until: Option<fn(&str) -> bool>) -> Result<Traced> {
    let iso = image.build_shared()?;
    let dir = tempfile::tempdir()?;
    let raw_path = dir.path().join("trace.raw");
    let mut qemu = Qemu::new(&iso).timeout(boot_timeout()).com2_file(&raw_path);
    if let Some(done) = until {
        qemu = qemu.until_serial(done);
    }
    let boot = qemu.run()?;
    let raw = fs::read(&raw_path).context("the COM2 capture")?;
    let elfs = trace::Elfs::of(&iso);
    let (tables, notes) = elfs.tables()?;
    ensure!(notes.is_empty(), "{notes:?}");
    let decoded = trace::decode(&raw, &tables);
    Ok(Traced {
        boot,
        elfs,
        raw,
        decoded,
        tables,
    })
}

/// Fails unless `lines` holds a line containing each of `wanted`, in this order.
fn expect_in_order(decoded: &Decoded, wanted: &[String]) -> Result<()> {
    let mut lines = decoded.lines.iter();
    for want in wanted {
        ensure!(
            lines.any(|l| l.contains(want.as_str())),
            "no {want:?} (after the earlier ones) in the trace:\n{}",
            decoded.text()
        );
    }
    Ok(())
}

/// Every decoded record starts with its timestamp (the TSC), which never goes back.
fn expect_timestamps_first_and_rising(decoded: &Decoded) -> Result<()> {
    let mut last = 0u64;
    for line in decoded.lines.iter().filter(|l| !l.starts_with("trace: ")) {
        let stamp: u64 = line
            .split(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("no timestamp first in {line:?}"))?;
        ensure!(stamp >= last, "timestamp goes back at {line:?}");
        last = stamp;
    }
    Ok(())
}

/// The five resumable self-tests in the order the nucleus runs them, with their vectors.
const SELFTEST_EVENTS: [&str; 5] = [
    "event delivered: SoftwareException vector 3 via Idt",
    "event delivered: Exception vector 6 via Idt",
    "event delivered: Exception vector 14 via Idt",
    "event delivered: Exception vector 14 via Idt",
    "event delivered: Exception vector 13 via Idt",
];

#[test]
fn selftest_all_trace_holds_the_selftest_events_in_order_and_a_damaged_capture_stops_cleanly()
-> Result<()> {
    let Traced {
        boot,
        elfs,
        raw,
        decoded,
        tables,
    } = traced_boot("selftest=all trace=events exit=qemu", None)?;
    boot.expect_in_order(&[markers::READY])?
        .expect_exit(QemuExit::Success)?;
    ensure!(decoded.stopped.is_none(), "{}", decoded.text());
    let mut wanted: Vec<String> = SELFTEST_EVENTS.iter().map(|s| (*s).to_owned()).collect();
    wanted.push("nucleus INFO server 0 fred-server: started (generation 0)".into());
    expect_in_order(&decoded, &wanted)?;
    expect_in_order(
        &decoded,
        &["nucleus INFO server 1 pv-server: started (generation 0)".into()],
    )?;
    let events = decoded
        .lines
        .iter()
        .filter(|l| l.contains("event delivered: ") && l.contains(" ring 0 "))
        .count();
    ensure!(
        events == SELFTEST_EVENTS.len(),
        "{events} ring-0 events, not 5:\n{}",
        decoded.text()
    );
    expect_timestamps_first_and_rising(&decoded)?;

    // `image-builder trace RAW` writes the same text from the capture in a file.
    let dir = tempfile::tempdir()?;
    let (raw_path, text_path) = (dir.path().join("t.raw"), dir.path().join("t.txt"));
    fs::write(&raw_path, &raw)?;
    let again = trace::decode_file(&raw_path, &elfs, Some(&text_path))?;
    ensure!(again.lines == decoded.lines && fs::read_to_string(&text_path)? == decoded.text());

    // The same capture, damaged: cut inside a record, then a byte flipped earlier on.
    let cut = raw.len() - 3;
    let truncated = trace::decode(&raw[..cut], &tables);
    let stop = truncated.stopped.as_deref().context("no stop line")?;
    ensure!(
        stop.starts_with("trace: stopped (truncated) at byte ")
            && truncated.lines.last().map(String::as_str) == Some(stop),
        "{stop}"
    );
    ensure!(
        truncated.lines[..truncated.lines.len() - 1] == decoded.lines[..decoded.lines.len() - 1],
        "the records before the cut decode differently"
    );
    let mut corrupt = raw.clone();
    let at = raw.len() / 2;
    corrupt[at] ^= 0x5a;
    let damaged = trace::decode(&corrupt, &tables);
    let stop = damaged.stopped.as_deref().context("no stop line")?;
    ensure!(
        stop.starts_with("trace: stopped (corrupt) at byte "),
        "{stop}\n{}",
        damaged.text()
    );
    ensure!(
        damaged.records < decoded.records
            && damaged.lines[..damaged.lines.len() - 1] == decoded.lines[..damaged.lines.len() - 1],
        "the records before the damage decode differently"
    );
    Ok(())
}

fn restarted_and_skipped(log: &str) -> bool {
    log.contains("fred-server: pv-server (owner 1) restarted, generation 1")
        && log.contains(" skipped in generation 1 (faults=1)")
}

#[test]
fn a_server_crash_and_restart_are_in_the_trace() -> Result<()> {
    let Traced { boot, decoded, .. } = traced_boot(
        "server-args=pv-server:fault=null trace=events",
        Some(restarted_and_skipped),
    )?;
    boot.expect_absent(markers::PANIC)?;
    boot.expect_exit(QemuExit::Stopped)?;
    ensure!(decoded.stopped.is_none(), "{}", decoded.text());
    let forwarded = decoded
        .lines
        .iter()
        .find(|l| l.contains("event forwarded: of thread 1 to server 0 fred-server token "))
        .and_then(|l| l.rsplit(" token ").next())
        .with_context(|| format!("nothing forwarded:\n{}", decoded.text()))?
        .to_owned();
    let story = [
        "nucleus INFO server 1 pv-server: started (generation 0)".to_owned(),
        "event delivered: Exception vector 14 via Idt".into(),
        format!("event forwarded: of thread 1 to server 0 fred-server token {forwarded}"),
        "server 1 pv-server: stopped".into(),
        "server 1 pv-server: restarting (restart 1)".into(),
        "nucleus INFO server 1 pv-server: started (generation 1)".into(),
    ];
    expect_in_order(&decoded, &story)?;
    // fred-server's reply (restart) is taken in the syscall that restarts pv-server; the
    // trace records it once that syscall is done.
    expect_in_order(
        &decoded,
        &[
            story[2].clone(),
            format!("reply taken: for thread 1 token {forwarded}"),
        ],
    )?;
    expect_timestamps_first_and_rising(&decoded)
}

fn all_guests_ended(log: &str) -> bool {
    log.contains(ALL_ENDED)
}

/// The token at the end of the first decoded line containing `what`.
fn token_of(decoded: &Decoded, what: &str) -> Result<String> {
    Ok(decoded
        .lines
        .iter()
        .find(|l| l.contains(what))
        .and_then(|l| l.rsplit(" token ").next())
        .with_context(|| format!("no {what:?} in the trace:\n{}", decoded.text()))?
        .to_owned())
}

#[test]
fn a_guests_start_hypercalls_and_shutdown_are_in_the_trace() -> Result<()> {
    let hello = tests::build_fixture_server("guest-hello")?;
    let image = Image::new()
        .cmdline("trace=events")
        .guest(GuestFile::new("hello", &hello));
    let Traced { boot, decoded, .. } = traced_image(image, Some(all_guests_ended))?;
    boot.expect_absent(markers::PANIC)?;
    ensure!(
        boot.lines()
            .any(|l| l == "pv-server: guest hello: shut down (poweroff)"),
        "{}",
        boot.report("hello did not power off")
    );
    ensure!(decoded.stopped.is_none(), "{}", decoded.text());
    // Domain 1's vCPU is thread 2 (after the two servers); pv-server answers its hypercalls.
    let console = token_of(&decoded, "guest 1: hypercall 18 ConsoleIo (0x0, ")?;
    let shutdown = token_of(&decoded, "guest 1: hypercall 29 SchedOp (0x2, ")?;
    let story = [
        "nucleus INFO server 1 pv-server: started (generation 0)".to_owned(),
        "nucleus INFO guest 1: started (thread 2, rip 0x".into(),
        format!("to server 1 pv-server token {console}"),
        format!("reply taken: for thread 2 token {console}"),
        "guest 1: hypercall 29 SchedOp (0x2, ".into(),
        "nucleus INFO guest 1: shut down (thread 2 stopped)".into(),
    ];
    expect_in_order(&decoded, &story)?;
    // `events` leaves the syscalls and switches to `all`.
    ensure!(
        !decoded
            .lines
            .iter()
            .any(|l| l.contains("nucleus DEBUG switch: ") || l.contains("nucleus DEBUG syscall ")),
        "{}",
        decoded.text()
    );
    ensure!(
        decoded
            .lines
            .iter()
            .any(|l| l.ends_with(&format!("to server 1 pv-server token {shutdown}"))),
        "{}",
        decoded.text()
    );
    expect_timestamps_first_and_rising(&decoded)
}

#[test]
fn a_guests_traps_bounced_to_its_handlers_are_in_the_trace() -> Result<()> {
    let traps = tests::build_fixture_server("guest-traps")?;
    let image = Image::new()
        .cmdline("trace=events")
        .guest(GuestFile::new("traps", &traps).mem(4));
    let Traced { boot, decoded, .. } = traced_image(image, Some(all_guests_ended))?;
    boot.expect_absent(markers::PANIC)?;
    ensure!(
        boot.lines()
            .any(|l| l == "guest traps: traps: 9 traps, each back through iret"),
        "{}",
        boot.report("the traps guest did not finish")
    );
    ensure!(decoded.stopped.is_none(), "{}", decoded.text());
    // The first trap, `ud2`: delivered from ring 3, forwarded to pv-server, answered by a
    // bounce into the guest's handler, which returns with the `iret` hypercall.
    let ud2 = token_of(
        &decoded,
        "event forwarded: of thread 2 to server 1 pv-server token ",
    )?;
    expect_in_order(
        &decoded,
        &[
            "nucleus INFO guest 1: started (thread 2, rip 0x".to_owned(),
            "guest 1: hypercall 0 SetTrapTable (".into(),
            "event delivered: Exception vector 6 via Idt".into(),
            format!("event forwarded: of thread 2 to server 1 pv-server token {ud2}"),
            format!("reply taken: for thread 2 token {ud2}"),
            "guest 1: event bounced to the guest at rip 0x".into(),
            "guest 1: hypercall 23 Iret (".into(),
            "nucleus INFO guest 1: shut down (thread 2 stopped)".into(),
        ],
    )?;
    let bounces = decoded
        .lines
        .iter()
        .filter(|l| l.contains("guest 1: event bounced to the guest at rip 0x"))
        .count();
    ensure!(
        bounces == 9,
        "{bounces} bounces, not 9:\n{}",
        decoded.text()
    );
    expect_timestamps_first_and_rising(&decoded)
}

#[test]
fn trace_all_adds_syscalls_switches_and_the_servers_records_and_the_default_is_off() -> Result<()> {
    let Traced { boot, decoded, .. } = traced_boot("trace=all exit=qemu", None)?;
    boot.expect_in_order(&[markers::READY])?
        .expect_exit(QemuExit::Success)?;
    ensure!(decoded.stopped.is_none(), "{}", decoded.text());
    // The servers' own records, decoded with their ELFs, and `all`'s nucleus records.
    for want in [
        "fred-server INFO fred-server running (generation 0)",
        "pv-server INFO pv-server running (generation 0)",
        "nucleus DEBUG switch: 0 -> 1",
        "nucleus DEBUG syscall ",
    ] {
        ensure!(
            decoded.lines.iter().any(|l| l.contains(want)),
            "no {want:?} in the trace:\n{}",
            decoded.text()
        );
    }
    // Without `trace=`, COM2 carries nothing.
    let Traced { boot, raw, .. } = traced_boot("exit=qemu", None)?;
    boot.expect_exit(QemuExit::Success)?;
    ensure!(
        raw.is_empty(),
        "{} bytes on COM2 with the trace off",
        raw.len()
    );
    Ok(())
}
