//! Guests across CPUs (issue 20 points 4 and 5): a guest's `cpu=` places its vCPU on that
//! CPU, so under QEMU/TCG `-smp 4` a guest runs on every CPU while its hypercalls and events
//! cross to pv-server on the boot CPU (ring + reschedule IPI each way, TLB shootdowns when
//! the pagetables guest changes its tables); without `cpu=` the guests spread over the CPUs
//! the servers leave free; a `cpu=` that is not online is one line and the default. Every
//! boot ends at pv-server's summary with every guest powered off and every frame back.
use anyhow::{Context, Result, ensure};
use image_builder::guest::{GuestFile, GuestsEnded};
use tests::{
    Boot, Image, Qemu, QemuExit, boot_timeout, build_fixture_server, expect_exact_line, markers,
};

fn until_summary(serial: &str) -> bool {
    GuestsEnded::from_serial(serial).is_some()
}

/// Boots `guests` on `smp` CPUs (QEMU/TCG) until pv-server's summary.
fn boot_qemu(cmdline: &str, smp: u32, guests: &[GuestFile]) -> Result<Boot> {
    let image = guests
        .iter()
        .fold(Image::new().cmdline(cmdline), |image, g| {
            image.guest(g.clone())
        });
    let iso = image.build_shared()?;
    let boot = Qemu::new(&iso)
        .arg("-smp")
        .arg(smp.to_string())
        .timeout(boot_timeout())
        .until_serial(until_summary)
        .run()?;
    boot.expect_exit(QemuExit::Stopped)?;
    Ok(boot)
}

/// Every guest powered off, every frame back, and no line of a shootdown nobody answered.
fn expect_all_ended(boot: &Boot, total: u32) -> Result<()> {
    expect_exact_line(boot, markers::READY)?;
    let ended = GuestsEnded::from_serial(&boot.serial).context("no summary line")?;
    ensure!(
        ended.total == total && ended.all_powered_off(),
        "expected {total} of {total} powered off, got {ended:?}"
    );
    ensure!(
        ended.free_after_kib == ended.free_before_kib,
        "free memory not restored: {ended:?}"
    );
    boot.expect_absent("did not answer a TLB shootdown")?;
    boot.expect_absent("FAILED")?;
    Ok(())
}

fn hello(name: &str) -> Result<GuestFile> {
    Ok(GuestFile::new(name, build_fixture_server("guest-hello")?)
        .mem(8)
        .cmdline(name))
}

fn pagetables(name: &str) -> Result<GuestFile> {
    Ok(GuestFile::new(
        name,
        build_fixture_server("guest-pagetables")?,
    ))
}

fn expect_hello_ran(boot: &Boot, name: &str) -> Result<()> {
    expect_exact_line(boot, &format!("guest {name}: hello: cmd_line \"{name}\""))?;
    expect_exact_line(boot, &format!("guest {name}: hello: powering off"))?;
    expect_exact_line(
        boot,
        &format!("pv-server: guest {name}: shut down (poweroff)"),
    )
}

fn expect_pagetables_ran(boot: &Boot, name: &str) -> Result<()> {
    expect_exact_line(boot, &format!("guest {name}: pagetables: 31 checks passed"))?;
    expect_exact_line(
        boot,
        &format!("pv-server: guest {name}: shut down (poweroff)"),
    )
}

/// hello and pagetables guests pinned to CPUs 0..cpus: each placed where its `cpu=` says,
/// each finishing with its exact lines.
fn a_guest_pinned_to_each_cpu(boot: impl Fn(&[GuestFile]) -> Result<Boot>, cpus: u8) -> Result<()> {
    let mut guests = Vec::new();
    for cpu in 0..cpus {
        let guest = match cpu % 2 {
            0 => hello(&format!("h{cpu}"))?,
            _ => pagetables(&format!("p{cpu}"))?,
        };
        guests.push(guest.cpu(cpu));
    }
    let boot = boot(&guests)?;
    for (cpu, guest) in guests.iter().enumerate() {
        let name = &guest.name;
        expect_exact_line(
            &boot,
            &format!("nucleus: guest {name} runs on cpu {cpu} (cpu=)"),
        )?;
        match cpu % 2 {
            0 => expect_hello_ran(&boot, name)?,
            _ => expect_pagetables_ran(&boot, name)?,
        }
    }
    expect_all_ended(&boot, u32::from(cpus))
}

#[test]
fn a_guest_pinned_to_each_of_four_cpus_runs_and_finishes() -> Result<()> {
    a_guest_pinned_to_each_cpu(|guests| boot_qemu("", 4, guests), 4)
}

/// Without `cpu=` the guests go to the least loaded online CPUs: with both servers on CPU 0,
/// never CPU 0 while another CPU has fewer threads (which of 1-3 depends on which guests
/// ended already).
#[test]
fn unpinned_guests_spread_over_the_cpus_the_servers_leave_free() -> Result<()> {
    let guests = [hello("a")?, pagetables("b")?, hello("c")?];
    let boot = boot_qemu("", 4, &guests)?;
    for guest in &guests {
        let prefix = format!("nucleus: guest {} runs on cpu ", guest.name);
        let line = boot.expect_line(&prefix, |l| l.starts_with(&prefix))?;
        ensure!(
            ["1", "2", "3"].contains(&&line[prefix.len()..]),
            "{line:?}: not one of the free CPUs"
        );
    }
    expect_hello_ran(&boot, "a")?;
    expect_pagetables_ran(&boot, "b")?;
    expect_hello_ran(&boot, "c")?;
    expect_all_ended(&boot, 3)
}

/// A `cpu=` naming a CPU that is not online (beyond `-smp`, or cut off by `cpus=1`) is one
/// line and the default placement; `cpus=1` runs everything on the boot CPU as before.
#[test]
fn a_cpu_that_is_not_online_falls_back_with_one_line() -> Result<()> {
    let boot = boot_qemu("", 2, &[hello("far")?.cpu(5)])?;
    expect_exact_line(
        &boot,
        "nucleus: guest far: cpu=5: cpu 5 is not online; it runs on cpu 1",
    )?;
    expect_hello_ran(&boot, "far")?;
    expect_all_ended(&boot, 1)?;

    let boot = boot_qemu("cpus=1", 4, &[hello("one")?.cpu(2), pagetables("two")?])?;
    expect_exact_line(
        &boot,
        "nucleus: guest one: cpu=2: cpu 2 is not online; it runs on cpu 0",
    )?;
    boot.expect_absent("nucleus: guest two")?;
    boot.expect_absent("cpu 1: online")?;
    expect_hello_ran(&boot, "one")?;
    expect_pagetables_ran(&boot, "two")?;
    expect_all_ended(&boot, 2)
}

/// The same on Bochs' FRED CPU model with two CPUs (`cpu: count=2`, FRED on both): the
/// guest on CPU 1 enters and leaves ring 3 through FRED there. `$FREDVISOR_BOCHS` must be a
/// Bochs configured with `--enable-smp`.
#[test]
#[ignore = "needs FREDVISOR_BOCHS (configured with --enable-smp)"]
fn bochs_two_cpus_a_guest_pinned_to_each() -> Result<()> {
    a_guest_pinned_to_each_cpu(
        |guests| {
            let image = guests
                .iter()
                .fold(Image::new().cmdline("fred=on"), |image, g| {
                    image.guest(g.clone())
                });
            let iso = image.build_shared()?;
            let boot = image_builder::Bochs::new(&iso)
                .cpus(2)
                .timeout(tests::bochs_boot_timeout())
                .until_serial(until_summary)
                .run()?;
            boot.expect_line("the AP under FRED", |l| {
                l == "cpu 1: online (apic id 1, fred: enabled (cpu has FRED+LKGS))"
            })?;
            Ok(boot)
        },
        2,
    )
}
