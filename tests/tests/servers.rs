//! Issue 7 acceptance: Ring3 servers loaded from boot modules, crashes reported by
//! fred-server (or by the nucleus when fred-server itself crashes) and restarted, the give-up
//! after three restarts, corrupt modules rejected with one line, syscalls with bad pointers
//! refused, a swapped-in server, and the benchmark path end to end; on QEMU. The scenarios
//! are `tests::scenarios::servers`, shared with `fred_cpu.rs` (every expected line is spelled
//! out there, addresses checked against the shipped ELF).

use anyhow::{Context, Result, ensure};
use image_builder::bench;
use tests::machine::Machine;
use tests::scenarios::servers;
use tests::{Image, QemuExit, boot_timeout, expect_exact_line, expect_one_line, markers};

const QEMU: Machine = Machine::QEMU_BIOS;

#[test]
fn each_server_is_loaded_from_its_module_and_says_hello_before_ready() -> Result<()> {
    servers::each_server_is_loaded_from_its_module_and_says_hello_before_ready(QEMU)
}

#[test]
fn pv_server_null_write_is_shown_by_fred_server_and_restarted() -> Result<()> {
    servers::pv_server_null_write_is_shown_by_fred_server_and_restarted(QEMU)
}

#[test]
fn pv_server_ud2_is_shown_by_fred_server_and_restarted() -> Result<()> {
    servers::pv_server_ud2_is_shown_by_fred_server_and_restarted(QEMU)
}

#[test]
fn hung_pv_server_is_caught_by_the_watchdog_and_restarted() -> Result<()> {
    servers::hung_pv_server_is_caught_by_the_watchdog_and_restarted(QEMU)
}

#[test]
fn crashing_fred_server_is_reported_by_the_nucleus_and_restarted() -> Result<()> {
    servers::crashing_fred_server_is_reported_by_the_nucleus_and_restarted(QEMU)
}

#[test]
fn fourth_crash_makes_fred_server_give_up_and_it_keeps_running() -> Result<()> {
    servers::fourth_crash_makes_fred_server_give_up_and_it_keeps_running(QEMU)
}

#[test]
fn server_cut_inside_its_headers_is_rejected_as_truncated() -> Result<()> {
    servers::server_cut_inside_its_headers_is_rejected_as_truncated(QEMU)
}

#[test]
fn server_cut_inside_a_segment_is_rejected_naming_the_segment() -> Result<()> {
    servers::server_cut_inside_a_segment_is_rejected_naming_the_segment(QEMU)
}

#[test]
fn server_with_a_segment_in_kernel_space_is_rejected() -> Result<()> {
    servers::server_with_a_segment_in_kernel_space_is_rejected(QEMU)
}

#[test]
fn elf_magic_followed_by_random_bytes_is_rejected() -> Result<()> {
    servers::elf_magic_followed_by_random_bytes_is_rejected(QEMU)
}

#[test]
fn random_bytes_are_rejected_as_not_elf() -> Result<()> {
    servers::random_bytes_are_rejected_as_not_elf(QEMU)
}

#[test]
fn alt_server_swapped_in_as_pv_server_runs_under_that_name() -> Result<()> {
    servers::alt_server_swapped_in_as_pv_server_runs_under_that_name(QEMU)
}

// ---- bench --------------------------------------------------------------------------------

#[test]
fn bench_boot_prints_five_parsable_measurements() -> Result<()> {
    let iso =
        bench::with_bench_guest(Image::new().cmdline(bench::CMDLINE), false)?.build_shared()?;
    let timeout = boot_timeout().max(bench::DEFAULT_TIMEOUT);
    let (ranges, boot) = bench::measure(&iso, timeout)?;
    boot.expect_exit(QemuExit::Stopped)?;
    expect_exact_line(&boot, markers::READY)?;
    for (measurement, range) in bench::Measurement::ALL.into_iter().zip(ranges) {
        let line = expect_one_line(&boot, measurement.line_prefix(), |l| {
            l.starts_with(measurement.line_prefix())
        })?;
        ensure!(
            bench::parse_line(&line) == Some((measurement, range)),
            "{}",
            boot.report(&format!("{line:?} does not parse to {range:?}"))
        );
        ensure!(
            range.min > 0 && range.min <= range.max,
            "{}",
            boot.report(&format!(
                "{measurement}: min {} max {}",
                range.min, range.max
            ))
        );
    }
    ensure!(
        boot.lines()
            .any(|l| l.ends_with(" rounds=1000") && l.starts_with("bench: ring-roundtrip ")),
        "{}",
        boot.report("the ring round trip did not run 1000 rounds")
    );
    // README.md shows what bench measures (instruction counts: the same on every host).
    let readme =
        std::fs::read_to_string(image_builder::compile::workspace_root().join("README.md"))?;
    let shown = bench::readme_table(&readme).context("README.md has no bench table")?;
    let measured = bench::table(&ranges);
    ensure!(
        bench::table_minimums(shown) == bench::table_minimums(&measured),
        "README.md's bench figures are not what bench measures now; \
         `cargo fv bench --update-readme` writes them:\n{measured}"
    );
    Ok(())
}
