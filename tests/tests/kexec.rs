//! kexec (issue 21) under QEMU/TCG: fred-server's policy asks for a hand-off once the
//! system is ready (`kexec=reboot-into`), the nucleus stops the other CPUs with an NMI
//! shootdown, turns FRED off, copies the kexec image (by default the nucleus ELF itself,
//! shipped as boot module `kexec-image`) to its load address and jumps to it with a fresh
//! multiboot2 information structure; generation 2 says so in its banner and boots to
//! `nucleus: ready`. `crashkernel` does the same from a panic. Hostile requests (a module
//! that is no ELF, an ELF that is no multiboot2 image, a module that does not exist) are
//! refused with one line and the system goes on.
use anyhow::{Result, ensure};
use tests::{Image, Qemu, QemuExit, boot_timeout, markers};

/// The generation-2 banner: `fredvisor <version> (kexec generation 2)`.
fn generation_2_banner() -> String {
    format!(
        "{}{} (kexec generation 2)",
        markers::BANNER,
        env!("CARGO_PKG_VERSION")
    )
}

fn boot(cmdline: &str, smp: u32, until: Option<&str>) -> Result<tests::Boot> {
    let iso = Image::new().cmdline(cmdline).build_shared()?;
    let mut qemu = Qemu::new(&iso)
        .arg("-smp")
        .arg(smp.to_string())
        .timeout(boot_timeout());
    if let Some(marker) = until {
        qemu = qemu.until_lines(&[marker]);
    }
    qemu.run()
}

fn ready_count(boot: &tests::Boot) -> usize {
    boot.lines().filter(|l| l == markers::READY).count()
}

#[test]
fn reboot_into_boots_generation_2_to_ready_on_one_cpu() -> Result<()> {
    let boot = boot("kexec=reboot-into exit=qemu", 1, None)?;
    let banner = generation_2_banner();
    boot.expect_in_order(&[
        markers::READY,
        "fred-server: kexec: asking for a hand-off into module 3 (generation 2)",
        "nucleus: kexec: cpu 0 hands the machine to module 3 (generation 2): 4 segment(s), entry 0x",
        "nucleus: kexec: jumping to the trampoline",
        &banner,
        "kexec: generation 2 (",
        "): fred-server asked for it; CR4.FRED clear at entry",
        "cmdline: exit=qemu kexec-generation=2 kexec-reason=request",
        "module: kexec-image (",
        "nucleus: fred-server says hello",
        markers::READY,
    ])?;
    ensure!(
        ready_count(&boot) == 2,
        "{}",
        boot.report("expected one ready per generation")
    );
    // Generation 2 does not hand over again (kexec=reboot-into is not passed on).
    boot.expect_absent("kexec generation 3")?;
    boot.expect_exit(QemuExit::Success)
}

/// Under `-smp 4`: each AP confirmed parked on its own NMI stack (IDT delivery: the NMI
/// gate's IST page of its own block), the summary, generation 2's banner, every AP online
/// again (INIT-SIPI-SIPI out of the parked halt loop), ready.
fn expect_four_cpus_handed_over(boot: &tests::Boot) -> Result<()> {
    let banner = generation_2_banner();
    let mut order = vec!["nucleus: 4 cpu(s) online".to_owned()];
    for n in 1..4 {
        order.push(format!(
            "nucleus: kexec: cpu {n} (apic id {n}) parked on its NMI stack (frame 0x"
        ));
    }
    order.push(
        "nucleus: kexec: 3 of 3 other cpu(s) parked (NMI shootdown, IDT delivery here)".into(),
    );
    order.push("nucleus: kexec: jumping to the trampoline".into());
    order.push(banner);
    for n in 1..4 {
        order.push(format!(
            "cpu {n}: online (apic id {n}, fred: disabled (cpu lacks FRED))"
        ));
    }
    order.push("nucleus: 4 cpu(s) online".into());
    order.push(markers::READY.into());
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    boot.expect_in_order(&order)?;
    boot.expect_absent("did not confirm")?;
    boot.expect_absent("did not answer")?;
    Ok(())
}

#[test]
fn reboot_into_on_four_cpus_parks_every_ap_and_brings_them_all_back() -> Result<()> {
    let boot = boot("kexec=reboot-into exit=qemu", 4, None)?;
    expect_four_cpus_handed_over(&boot)?;
    ensure!(
        ready_count(&boot) == 2,
        "{}",
        boot.report("expected one ready per generation")
    );
    boot.expect_exit(QemuExit::Success)
}

/// pv-server raises `int3` events without end (`hammer=int3`, each forwarded to fred-server
/// and resumed) and fred-server asks for the hand-off only after answering 20 000 of them:
/// the kexec happens with events in flight (pv-server's latest waits for its answer), the
/// APs are parked, and generation 2 boots to ready with pv-server hammering again. pv-server
/// runs on CPU 1 (`server-cpu=`), so the shootdown NMI finds that CPU busy with its events.
#[test]
fn a_kexec_while_pv_server_hammers_events_on_four_cpus() -> Result<()> {
    let boot = boot(
        "kexec=reboot-into server-cpu=pv-server:1 server-args=pv-server:hammer=int3 \
         server-args=fred-server:kexec-after-events=20000 exit=qemu",
        4,
        None,
    )?;
    boot.expect_in_order(&[
        "nucleus: pv-server runs on cpu 1 (server-cpu=)",
        "fred-server: kexec=reboot-into: waiting for 20000 more event(s) first",
        "pv-server: test option: hammer=int3: 10000 event(s) handled",
        "fred-server: kexec: asking for a hand-off into module 3 (generation 2)",
    ])?;
    expect_four_cpus_handed_over(&boot)?;
    boot.expect_exit(QemuExit::Success)
}

#[test]
fn a_panic_with_crashkernel_on_four_cpus_parks_the_aps_too() -> Result<()> {
    let boot = boot("selftest=panic crashkernel exit=qemu", 4, None)?;
    boot.expect_in_order(&[
        "nucleus: PANIC: selftest: forced panic",
        "nucleus: crashkernel: panic in generation 1",
    ])?;
    expect_four_cpus_handed_over(&boot)?;
    boot.expect_in_order(&["crashkernel: the previous nucleus panicked; CR4.FRED clear at entry"])?;
    boot.expect_exit(QemuExit::Success)
}

#[test]
fn a_panic_with_crashkernel_boots_generation_2_which_says_why() -> Result<()> {
    let boot = boot("selftest=panic crashkernel exit=qemu", 1, None)?;
    let banner = generation_2_banner();
    boot.expect_in_order(&[
        "nucleus: PANIC: selftest: forced panic",
        "nucleus: crashkernel: panic in generation 1: kexec into module 3 (generation 2)",
        "nucleus: kexec: jumping to the trampoline",
        &banner,
        "crashkernel: the previous nucleus panicked; CR4.FRED clear at entry",
        "cmdline: crashkernel exit=qemu kexec-generation=2 kexec-reason=panic",
        markers::READY,
    ])?;
    ensure!(
        ready_count(&boot) == 1,
        "{}",
        boot.report("generation 1 panicked before ready")
    );
    boot.expect_exit(QemuExit::Success)
}

#[test]
fn a_panic_without_crashkernel_still_halts() -> Result<()> {
    let boot = boot("selftest=panic exit=qemu", 1, None)?;
    boot.expect_in_order(&["nucleus: PANIC: selftest: forced panic"])?;
    boot.expect_absent("crashkernel")?;
    boot.expect_absent("kexec generation 2")?;
    boot.expect_exit(QemuExit::Failure)
}

/// A request fred-server is made to send for module `module` (test option
/// `kexec-module=`): refused with `why`, fred-server hears of it and goes on.
fn hostile_request(module: u16, why: &str) -> Result<()> {
    let done =
        format!("fred-server: kexec into module {module} refused by the nucleus; carrying on");
    let boot = boot(
        &format!("kexec=reboot-into server-args=fred-server:kexec-module={module}"),
        1,
        Some(&done),
    )?;
    let refused = format!("nucleus: kexec into module {module} refused: {why}");
    boot.expect_in_order(&[
        markers::READY,
        &format!("fred-server: kexec: asking for a hand-off into module {module} (generation 2)"),
        &refused,
        &done,
    ])?;
    let lines = tests::lines_matching(&boot, |l| l.starts_with("nucleus: kexec"));
    ensure!(
        lines == [refused.clone()],
        "{}",
        boot.report(&format!("expected only the refusal, got {lines:?}"))
    );
    boot.expect_absent("kexec generation 2")?;
    boot.expect_absent(markers::PANIC)?;
    Ok(())
}

#[test]
fn a_module_that_is_no_elf_is_refused_and_the_system_goes_on() -> Result<()> {
    // Module 0 is the symbol map (text).
    hostile_request(0, "not an ELF file")
}

#[test]
fn an_elf_that_is_no_multiboot2_image_is_refused_and_the_system_goes_on() -> Result<()> {
    // Module 1 is fred-server: an ELF executable without a multiboot2 header.
    hostile_request(
        1,
        "no multiboot2 header in its first 32 KiB: not a multiboot2 image",
    )
}

#[test]
fn a_missing_module_is_refused_and_the_system_goes_on() -> Result<()> {
    hostile_request(9, "boot module 9 does not exist (4 modules)")
}
