//! SMP bring-up (issue 20 points 1, 2 and 5) under QEMU/TCG `-smp 4`: every AP comes online
//! with its own line, checks on itself that its RSP and its `#DF` stack (TSS IST1, FRED SL3
//! where FRED is on) lie in its own stack block, the blocks are distinct, `cpus=N` limits the
//! count, and one CPU boots as before (no AP lines).
use std::collections::HashSet;

use anyhow::{Result, ensure};
use tests::{Image, Qemu, QemuExit, boot_timeout, markers};

fn boot(cmdline: &str, smp: u32) -> Result<tests::Boot> {
    let iso = Image::new().cmdline(cmdline).build_shared()?;
    Qemu::new(&iso)
        .arg("-smp")
        .arg(smp.to_string())
        .timeout(boot_timeout())
        .run()
}

/// The block address of `cpu N: own stacks: block 0x...` lines, one per AP.
fn own_blocks(boot: &tests::Boot, cpus: u32) -> Result<Vec<String>> {
    (1..cpus)
        .map(|n| {
            let prefix = format!("cpu {n}: own stacks: block ");
            let line = boot.expect_line(&prefix, |l| l.starts_with(&prefix))?;
            Ok(line[prefix.len()..]
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned())
        })
        .collect()
}

#[test]
fn four_cpus_come_online_each_on_its_own_stack_block() -> Result<()> {
    let boot = boot("exit=qemu", 4)?;
    boot.expect_in_order(&[
        "smp: 4 cpu(s) in the MADT; starting the others through the xAPIC (boot cpu apic id 0)",
        "cpu 1: online (apic id 1, fred: disabled (cpu lacks FRED))",
        "cpu 2: online (apic id 2, fred: disabled (cpu lacks FRED))",
        "cpu 3: online (apic id 3, fred: disabled (cpu lacks FRED))",
        "nucleus: 4 cpu(s) online",
        markers::READY,
    ])?;
    boot.expect_absent("stack check FAILED")?;
    // QEMU's MADT and APIC page pass the address checks (`bsp_x86_64::madt`).
    boot.expect_absent("smp: the MADT's")?;
    boot.expect_absent("memory: device page")?;
    let blocks = own_blocks(&boot, 4)?;
    let distinct: HashSet<&String> = blocks.iter().collect();
    ensure!(distinct.len() == 3, "blocks not distinct: {blocks:?}");
    // One 64 KiB stack slot per CPU in CPU order: cpu N's block is N slots above the boot
    // CPU's, so none of them is the boot CPU's.
    let base = |b: &String| u64::from_str_radix(b.trim_start_matches("0x"), 16).unwrap_or(0);
    for (n, block) in blocks.iter().enumerate().skip(1) {
        ensure!(
            base(block) == base(&blocks[0]) + n as u64 * 0x10000,
            "cpu {}'s block {block} is not {n} slots above cpu 1's: {blocks:?}",
            n + 1
        );
    }
    boot.expect_exit(QemuExit::Success)
}

#[test]
fn cpus_option_limits_how_many_come_online() -> Result<()> {
    let boot = boot("cpus=2 exit=qemu", 4)?;
    boot.expect_in_order(&[
        "cpu 1: online (apic id 1, fred: disabled (cpu lacks FRED))",
        "smp: 2 more cpu(s) not started (cpus=2, the nucleus runs at most 8)",
        "nucleus: 2 cpu(s) online",
        markers::READY,
    ])?;
    boot.expect_absent("cpu 2: online")?;
    boot.expect_exit(QemuExit::Success)
}

#[test]
fn one_cpu_boots_as_before() -> Result<()> {
    for (cmdline, smp) in [("exit=qemu", 1), ("cpus=1 exit=qemu", 4)] {
        let boot = boot(cmdline, smp)?;
        boot.expect_in_order(&["nucleus: 1 cpu(s) online", markers::READY])?;
        boot.expect_absent("cpu 1: online")?;
        boot.expect_absent("smp: ")?;
        boot.expect_exit(QemuExit::Success)?;
    }
    Ok(())
}

/// `selftest=cpu-df`: each AP overflows its primary stack; the `#DF` frame must lie in the
/// `#DF` page (page 4) of that AP's own block, as its `own stacks` line names it.
#[test]
fn each_ap_takes_its_double_fault_on_its_own_df_stack() -> Result<()> {
    let boot = boot("selftest=cpu-df exit=qemu", 4)?;
    boot.expect_in_order(&["nucleus: 4 cpu(s) online", markers::READY])?;
    boot.expect_absent("#DF FAILED")?;
    for (n, block) in (1..4).zip(own_blocks(&boot, 4)?) {
        let prefix = format!("cpu {n}: #DF on its own #DF stack (IST1, frame 0x");
        let line = boot.expect_line(&prefix, |l| l.starts_with(&prefix))?;
        let frame = u64::from_str_radix(line[prefix.len()..].trim_end_matches(')'), 16)?;
        let block = u64::from_str_radix(block.trim_start_matches("0x"), 16)?;
        ensure!(
            (block + 4 * 4096..block + 5 * 4096).contains(&frame),
            "cpu {n}: #DF frame {frame:#x} not in the #DF page of its block {block:#x}"
        );
    }
    boot.expect_exit(QemuExit::Success)
}

/// Bochs' FRED CPU model with two CPUs (`cpu: count=2`): the AP enables FRED on itself and
/// its `#DF` arrives on its own FRED SL3. `$FREDVISOR_BOCHS` must be a Bochs configured with
/// `--enable-smp` (one without refuses the bochsrc).
#[test]
#[ignore = "needs FREDVISOR_BOCHS (configured with --enable-smp)"]
fn bochs_two_cpus_each_enable_fred_and_double_fault_on_their_own_sl3() -> Result<()> {
    let iso = Image::new()
        .cmdline("fred=on selftest=cpu-df exit=bochs")
        .build_shared()?;
    let boot = image_builder::Bochs::new(&iso)
        .cpus(2)
        .timeout(boot_timeout())
        .run()?;
    boot.expect_in_order(&[
        "fred: enabled (cpu has FRED+LKGS)",
        "smp: 2 cpu(s) in the MADT; starting the others through the x2APIC (boot cpu apic id 0)",
        "cpu 1: online (apic id 1, fred: enabled (cpu has FRED+LKGS))",
        "nucleus: 2 cpu(s) online",
        markers::READY,
    ])?;
    boot.expect_line("the AP's #DF on its own SL3", |l| {
        l.starts_with("cpu 1: #DF on its own #DF stack (FRED SL3, frame 0x")
    })?;
    boot.expect_line("the AP's own-stacks line under FRED", |l| {
        l.starts_with("cpu 1: own stacks: ") && l.ends_with("(IST1 and FRED SL3)")
    })?;
    boot.expect_exit(QemuExit::Success)
}

/// `selftest=cpu-ipi` (issue 20 point 3): the local APIC timer is calibrated once and ticks on
/// every AP; each AP takes a reschedule IPI; a TLB shootdown is answered by every AP whose
/// CR3 holds the root; an NMI to all but self reaches each AP. Boot goes on with the APs
/// idle.
#[test]
fn each_ap_ticks_and_answers_reschedule_shootdown_and_nmi() -> Result<()> {
    let boot = boot("selftest=cpu-ipi exit=qemu", 4)?;
    boot.expect_line("the local APIC timer's calibration", |l| {
        l.starts_with("timer: local APIC timer, clock ")
            && l.ends_with("kHz (measured against the PIT), 100 Hz on every cpu")
    })?;
    boot.expect_in_order(&[
        "nucleus: 4 cpu(s) online",
        "selftest: cpu-ipi: passed (cpu 1: reschedule IPI taken)",
        "selftest: cpu-ipi: passed (cpu 2: reschedule IPI taken)",
        "selftest: cpu-ipi: passed (cpu 3: reschedule IPI taken)",
        "selftest: cpu-ipi: passed (TLB shootdown of the nucleus root: 3 of 3 cpu(s) asked, all flushed: true)",
        "selftest: cpu-ipi: passed (NMI to all but self: 3 of 3 cpu(s) took it)",
        "selftest: 8 passed, 0 failed",
        markers::READY,
    ])?;
    for n in 1..4 {
        let prefix = format!("selftest: cpu-ipi: passed (cpu {n}: local APIC timer, ");
        boot.expect_line(&prefix, |l| l.starts_with(&prefix))?;
    }
    boot.expect_absent("FAILED")?;
    boot.expect_exit(QemuExit::Success)
}

/// One CPU ticks from its local APIC timer too (the PIT only where there is no APIC), and
/// `selftest=nested-tick` still takes a tick inside nucleus code.
#[test]
fn one_cpu_ticks_from_its_local_apic_timer() -> Result<()> {
    let boot = boot("cpus=1 selftest=nested-tick exit=qemu", 1)?;
    boot.expect_line("the local APIC timer's calibration", |l| {
        l.starts_with("timer: local APIC timer, clock ")
    })?;
    boot.expect_in_order(&["nucleus: 1 cpu(s) online", "selftest: 1 passed, 0 failed"])?;
    boot.expect_line("nested-tick's verdict", |l| {
        l.starts_with("selftest: nested-tick: passed (")
    })?;
    boot.expect_exit(QemuExit::Success)
}

/// The cross-CPU event stress (issue 20 points 4 and 5): pv-server placed on CPU 1
/// (`server-cpu=`) raises 10^5 `int3` events; each goes through the nucleus on CPU 1 into
/// fred-server's ring on CPU 0 with a reschedule IPI, and fred-server's reply wakes pv-server
/// on CPU 1 the same way. None may be lost: fred-server counts them (every 25 000), and
/// pv-server's loop only ends once every one came back.
#[test]
fn cross_cpu_events_reach_fred_server_and_every_reply_comes_back() -> Result<()> {
    let iso = Image::new()
        .cmdline("server-cpu=pv-server:1 server-args=pv-server:events=100000")
        .build_shared()?;
    let done = "pv-server: test option: events: ";
    let boot = Qemu::new(&iso)
        .arg("-smp")
        .arg("2")
        .until(done)
        .timeout(boot_timeout() * 4)
        .run()?;
    boot.expect_in_order(&[
        "nucleus: 2 cpu(s) online",
        "nucleus: pv-server runs on cpu 1 (server-cpu=)",
        markers::READY,
        "fred-server: 25000 int3 events from pv-server handled",
        "fred-server: 50000 int3 events from pv-server handled",
        "fred-server: 75000 int3 events from pv-server handled",
        "fred-server: 100000 int3 events from pv-server handled",
    ])?;
    let line = boot.expect_line("pv-server's count", |l| l.starts_with(done))?;
    ensure!(
        line.starts_with(&format!(
            "{done}100000 int3 event(s) raised, 100000 resumed, "
        )),
        "events lost: {line}"
    );
    println!("{line}");
    boot.expect_absent("treating it as hung")?;
    boot.expect_absent("faulted")?;
    boot.expect_exit(QemuExit::Stopped)
}

/// `server-cpu=` naming a CPU that is not online says so and keeps the server on the boot
/// CPU (which then runs both servers, as with one CPU).
#[test]
fn server_cpu_of_a_missing_cpu_falls_back_to_the_boot_cpu() -> Result<()> {
    let boot = boot("server-cpu=pv-server:3 exit=qemu", 2)?;
    boot.expect_in_order(&[
        "nucleus: server-cpu=pv-server:3: cpu 3 is not online; pv-server runs on the boot cpu",
        markers::READY,
    ])?;
    boot.expect_exit(QemuExit::Success)
}

/// Bochs' FRED CPU model with two CPUs (issue 20 point 5): `selftest=cpu-ipi` on the AP
/// under FRED: its local APIC timer ticks, it takes a reschedule IPI, answers a TLB
/// shootdown and takes the NMI sent to all but self. `$FREDVISOR_BOCHS` must be a Bochs
/// configured with `--enable-smp`.
#[test]
#[ignore = "needs FREDVISOR_BOCHS (configured with --enable-smp)"]
fn bochs_two_cpus_the_ap_ticks_and_answers_reschedule_shootdown_and_nmi() -> Result<()> {
    let iso = Image::new()
        .cmdline("fred=on selftest=cpu-ipi exit=bochs")
        .build_shared()?;
    let boot = image_builder::Bochs::new(&iso)
        .cpus(2)
        .timeout(tests::bochs_boot_timeout())
        .run()?;
    boot.expect_in_order(&[
        "cpu 1: online (apic id 1, fred: enabled (cpu has FRED+LKGS))",
        "nucleus: 2 cpu(s) online",
        "selftest: cpu-ipi: passed (cpu 1: reschedule IPI taken)",
        "selftest: cpu-ipi: passed (TLB shootdown of the nucleus root: 1 of 1 cpu(s) asked, all flushed: true)",
        "selftest: cpu-ipi: passed (NMI to all but self: 1 of 1 cpu(s) took it)",
        "selftest: 4 passed, 0 failed",
        markers::READY,
    ])?;
    boot.expect_line("the AP's timer", |l| {
        l.starts_with("selftest: cpu-ipi: passed (cpu 1: local APIC timer, ")
    })?;
    boot.expect_absent("FAILED")?;
    boot.expect_exit(QemuExit::Success)
}

/// The cross-CPU event stress on Bochs' FRED CPU model with two CPUs: pv-server on CPU 1
/// raises 25 000 `int3`s (FRED delivery on CPU 1), each handled by fred-server on CPU 0 and
/// resumed; none lost.
#[test]
#[ignore = "needs FREDVISOR_BOCHS (configured with --enable-smp)"]
fn bochs_two_cpus_cross_cpu_events_all_come_back() -> Result<()> {
    let iso = Image::new()
        .cmdline("fred=on server-cpu=pv-server:1 server-args=pv-server:events=25000")
        .build_shared()?;
    let done = "pv-server: test option: events: ";
    let boot = image_builder::Bochs::new(&iso)
        .cpus(2)
        .until(done)
        .timeout(tests::bochs_boot_timeout() * 2)
        .run()?;
    boot.expect_in_order(&[
        "cpu 1: online (apic id 1, fred: enabled (cpu has FRED+LKGS))",
        "nucleus: pv-server runs on cpu 1 (server-cpu=)",
        markers::READY,
        "fred-server: 25000 int3 events from pv-server handled",
    ])?;
    let line = boot.expect_line("pv-server's count", |l| l.starts_with(done))?;
    ensure!(
        line.starts_with(&format!(
            "{done}25000 int3 event(s) raised, 25000 resumed, "
        )),
        "events lost: {line}"
    );
    println!("{line}");
    boot.expect_absent("treating it as hung")?;
    boot.expect_absent("faulted")?;
    boot.expect_exit(QemuExit::Stopped)
}
