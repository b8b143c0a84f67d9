//! Issue 13: a hostile server must not halt, flood, spoof or spy.
//!
//! The `hostile-server` fixture is swapped in with `--server` (as pv-server, and for two
//! tests as fred-server too) and runs one attack, chosen by its start argument `attack=…`
//! (`role=…` for its fred-server parts). For each attack the nucleus must report the
//! server's fault in one line, stay up, and the other server must keep working: after the
//! restart the fixture's generation 1 executes `int3`, which only a working fred-server
//! resumes.
//!
//! Crash boots do not pass `exit=qemu` (the nucleus would end the run at `nucleus: ready`):
//! QEMU is stopped at the last line the test waits for.
use anyhow::{Context, Result, ensure};
use image_builder::bochs;
use tests::{
    Boot, Image, Qemu, QemuExit, boot_timeout, build_fixture_server, expect_exact_line,
    expect_lines_in_order, expect_one_line, markers,
};

/// A line of the fixture as the nucleus prints it: `<server>: hostile: <text>`.
fn hostile(server: &str, text: &str) -> String {
    format!("{server}: hostile: {text}")
}

/// What proves the system survived an attack of pv-server in generation 0: the restarted
/// fixture runs and fred-server still answers its `int3`.
fn recovered() -> [String; 3] {
    [
        format!(
            "nucleus: pv-server says hello (protocol {}, generation 1)",
            ipc::PROTOCOL_VERSION
        ),
        hostile("pv-server", "generation 1 up"),
        hostile("pv-server", "int3 resumed"),
    ]
}

fn fixture_image(pv_args: &str) -> Result<Image> {
    let hostile = build_fixture_server("hostile-server")?;
    Ok(Image::new()
        .server("pv-server", &hostile)
        .cmdline(&format!("server-args=pv-server:{pv_args}")))
}

/// Boots `image` until `last` shows (or the deadline); the nucleus must not have died.
fn boot_until(image: &Image, last: &str, cpu: Option<&str>) -> Result<Boot> {
    let iso = image.build_shared()?;
    let mut qemu = Qemu::new(&iso).timeout(boot_timeout()).until(last);
    if let Some(cpu) = cpu {
        qemu = qemu.arg("-cpu").arg(cpu);
    }
    let boot = qemu.run()?;
    expect_nucleus_alive(&boot)?;
    Ok(boot)
}

/// No line of the nucleus' says it died (server lines may quote anything).
fn expect_nucleus_alive(boot: &Boot) -> Result<()> {
    for dead in [markers::PANIC, "nucleus: FATAL", "nucleus: halted"] {
        ensure!(
            !boot.lines().any(|l| l.starts_with(dead)),
            "{}",
            boot.report(&format!("the nucleus printed {dead:?}"))
        );
    }
    Ok(())
}

/// pv-server's fault in fred-server's one report line, with the given summary start.
fn expect_fault_reported(boot: &Boot, summary: &str) -> Result<String> {
    let prefix = format!("fred-server: pv-server (owner 1) faulted: {summary}");
    expect_one_line(boot, &format!("a line starting {prefix:?}"), |l| {
        l.starts_with(&prefix)
    })
}

/// The attack in generation 0 faulted with `summary`, fred-server restarted pv-server and
/// the restarted one runs and is served.
fn attack_is_a_server_fault(attack: &str, summary: &str) -> Result<Boot> {
    let image = fixture_image(&format!("attack={attack}"))?;
    let [hello, up, resumed] = recovered();
    let boot = boot_until(&image, &resumed, None)?;
    let fault = expect_fault_reported(&boot, summary)?;
    // pv-server attacks right after its own hello, so its lines may come before
    // fred-server's hello and with it `nucleus: ready`: ready is checked, not ordered.
    expect_exact_line(&boot, markers::READY)?;
    expect_lines_in_order(
        &boot,
        &[
            &hostile("pv-server", &format!("attack {attack}")),
            &fault,
            "fred-server: restarting pv-server (crash 1 of 3 allowed)",
            "nucleus: restarting pv-server (restart 1)",
            &hello,
            &up,
            &resumed,
        ],
    )?;
    Ok(boot)
}

// ---- 1: SYSCALL and SYSENTER from compatibility mode --------------------------------------

/// The far return to the low slot 0x1b faults with its selector (below 0xe000 a server has no
/// usable segment), fred-server reports it and kills pv-server (a `#GP[sel]` is a call-gate
/// request it does not emulate), and fred-server carries on.
fn compat_mode_is_refused(attack: &str) -> Result<()> {
    let image = fixture_image(&format!("attack={attack}"))?;
    let last = "nucleus: pv-server stopped";
    let boot = boot_until(&image, last, None)?;
    let fault = expect_fault_reported(&boot, "#GP at ")?;
    ensure!(
        fault.ends_with(" (error 0x18)"),
        "{}",
        boot.report(&format!("{fault:?} is not the #GP of selector 0x18"))
    );
    let killed = expect_one_line(&boot, "fred-server's verdict", |l| {
        l.starts_with("fred-server: pv-server (owner 1): #GP[GDT index 3] at ")
            && l.ends_with(", killing it")
    })?;
    // pv-server attacks right after its own hello, so its lines may come before
    // fred-server's hello and with it `nucleus: ready`: ready is checked, not ordered.
    expect_exact_line(&boot, markers::READY)?;
    expect_lines_in_order(
        &boot,
        &[
            &hostile("pv-server", &format!("attack {attack}")),
            &fault,
            &killed,
            last,
        ],
    )?;
    // Never in compat mode: the dump's code selector is the 64-bit one.
    boot.expect_line("the dump's RIP line in 64-bit code", |l| {
        l.starts_with("fred-server: RIP:    e033:")
    })?;
    boot.expect_absent("nucleus: fred-server stopped")?;
    Ok(())
}

#[test]
fn syscall_from_compat_mode_is_the_servers_fault() -> Result<()> {
    compat_mode_is_refused("compat-syscall")
}

#[test]
fn sysenter_from_compat_mode_is_the_servers_fault() -> Result<()> {
    compat_mode_is_refused("compat-sysenter")
}

#[test]
fn sysenter_from_64_bit_mode_is_the_servers_fault() -> Result<()> {
    // IA32_SYSENTER_CS = 0: #GP(0) (Intel), or #UD where SYSENTER does not exist in long mode.
    let image = fixture_image("attack=sysenter")?;
    let [hello, up, resumed] = recovered();
    let boot = boot_until(&image, &resumed, None)?;
    let fault = expect_one_line(&boot, "pv-server's #GP or #UD", |l| {
        l.starts_with("fred-server: pv-server (owner 1) faulted: #GP at ")
            || l.starts_with("fred-server: pv-server (owner 1) faulted: #UD at ")
    })?;
    expect_lines_in_order(&boot, &[&fault, &hello, &up, &resumed])
}

// ---- 2: restart storms --------------------------------------------------------------------

/// Both servers crash in every generation: the nucleus gives up on fred-server, then on
/// pv-server (whose crashes it handles itself once fred-server is gone), and stays up.
#[test]
fn a_server_that_always_crashes_is_given_up_by_the_nucleus() -> Result<()> {
    let image = Image::new().cmdline(
        "server-args=fred-server:fault=ud2,faults=99 server-args=pv-server:fault=null,faults=99",
    );
    let iso = image.build_shared()?;
    let boot = Qemu::new(&iso)
        .timeout(boot_timeout())
        .until_serial(|log| {
            log.contains("nucleus: gave up on pv-server") || log.contains("(restart 40)")
        })
        .run()?;
    expect_nucleus_alive(&boot)?;
    let gave_up = |name: &str| format!("nucleus: gave up on {name} (");
    let fred = expect_one_line(&boot, "the give-up on fred-server", |l| {
        l.starts_with(&gave_up("fred-server"))
    })?;
    let pv = expect_one_line(&boot, "the give-up on pv-server", |l| {
        l.starts_with(&gave_up("pv-server"))
    })?;
    expect_lines_in_order(&boot, &[&fred, &pv])?;
    for name in ["fred-server", "pv-server"] {
        let restarts = count_lines_starting(&boot, &format!("nucleus: restarting {name} ("));
        ensure!(
            (1..=8).contains(&restarts),
            "{}",
            boot.report(&format!("{name} restarted {restarts} times"))
        );
        // Nothing after the give-up: the server stays down.
        let after: Vec<String> = boot
            .lines()
            .skip_while(|l| !l.starts_with(&gave_up(name)))
            .filter(|l| {
                l.starts_with(&format!("nucleus: restarting {name} "))
                    || l.starts_with(&format!("server {name}: loaded"))
            })
            .collect();
        ensure!(
            after.is_empty(),
            "{}",
            boot.report(&format!("{name} came back after the give-up: {after:?}"))
        );
    }
    Ok(())
}

fn count_lines_starting(boot: &Boot, prefix: &str) -> usize {
    boot.lines().filter(|l| l.starts_with(prefix)).count()
}

// ---- 3: forged console lines --------------------------------------------------------------

#[test]
fn a_server_cannot_print_a_line_that_reads_as_the_nucleus() -> Result<()> {
    let image = fixture_image("attack=forge")?;
    let last = hostile("pv-server", "forge: console_write took every byte");
    let boot = boot_until(&image, &last, None)?;
    // pv-server attacks right after its own hello, so its lines may come before
    // fred-server's hello and with it `nucleus: ready`: ready is checked, not ordered.
    expect_exact_line(&boot, markers::READY)?;
    expect_lines_in_order(
        &boot,
        &[&hostile("pv-server", "forge: Log -> Ok(())"), &last],
    )?;
    for forged in [
        "nucleus: FATAL: forged",
        "nucleus: FATAL: forged by Log",
        "selftest: 99 passed, 0 failed",
        "selftest: 98 passed, 0 failed",
        "nucleus: halted",
    ] {
        ensure!(
            !boot.lines().any(|l| l.starts_with(forged)),
            "{}",
            boot.report(&format!("a server printed a line starting {forged:?}"))
        );
    }
    // Every byte of the forgery is on pv-server's lines, escaped.
    expect_exact_line(&boot, "pv-server: selftest: 99 passed, 0 failed\\x0d")?;
    expect_exact_line(&boot, "pv-server: \\x1b[2J\\x1b[31mnucleus: halted")?;
    expect_exact_line(&boot, "pv-server: \\x0dnucleus: PANIC forged")?;
    expect_exact_line(
        &boot,
        "pv-server: x\\x0anucleus: FATAL: forged by Log\\x0d\\x0aselftest: 98 passed, 0 failed",
    )?;
    let banner = boot.serial.find(markers::BANNER).context("no banner")?;
    ensure!(
        !boot.serial[banner..].contains('\x1b'),
        "{}",
        boot.report("an escape character reached the console")
    );
    // One `nucleus: ready`: the nucleus' own.
    tests::expect_line_count(&boot, markers::READY, 1)?;
    // The Bochs verdict reads the nucleus' lines only: neither the forged summary nor the
    // forged FATAL decides it.
    ensure!(
        bochs::outcome(&boot.serial, None) == QemuExit::Success,
        "{}",
        boot.report("the Bochs verdict was fooled")
    );
    Ok(())
}

#[test]
fn the_bochs_verdict_ignores_server_lines() {
    let forged = "nucleus: ready\npv-server: selftest: 0 passed, 9 failed\n\
                  fred-server: nucleus: FATAL: x\npv-server: nucleus: halted\n";
    assert_eq!(bochs::outcome(forged, None), QemuExit::Success);
}

// ---- 4: console floods --------------------------------------------------------------------

// ---- ReplyWait's registers (issue 17) --------------------------------------------------------

#[test]
fn reply_wait_registers_are_checked_like_a_ring_record() -> Result<()> {
    let image = fixture_image("attack=reply-wait")?;
    let refused =
        "nucleus: pv-server: unexpected message Reply(Return { token: Token(57005), rax: 65 })";
    let boot = boot_until(&image, refused, None)?;
    expect_lines_in_order(
        &boot,
        &[
            &hostile(
                "pv-server",
                "reply-wait: verdict 7 -> Err(Known(BadArgument))",
            ),
            refused,
        ],
    )?;
    // Nothing was taken for pv-server: fred-server was not woken for it, nobody resumed.
    boot.expect_absent("fred-server: pv-server (owner 1) faulted")?;
    Ok(())
}

#[test]
fn a_console_flood_is_cut_to_the_per_tick_budget() -> Result<()> {
    let image = fixture_image("attack=flood")?;
    let last_prefix = hostile("pv-server", "flood: 64 more writes took ");
    let boot = boot_until(&image, &hostile("pv-server", "flood: done"), None)?;
    let first = expect_one_line(&boot, "the first write's result", |l| {
        l.starts_with(&hostile("pv-server", "flood: first 1024-byte write -> Ok("))
    })?;
    let accepted: u64 = first
        .rsplit_once("Ok(")
        .and_then(|(_, n)| n.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .with_context(|| boot.report(&format!("no count in {first:?}")))?;
    // Each 0x01 escapes to four bytes; with the prefix and the newline one write prints at
    // most WRITE_BYTES_MAX.
    let limit = ipc::console::WRITE_BYTES_MAX as u64;
    ensure!(
        accepted > 0 && 12 + accepted * 4 <= limit,
        "{}",
        boot.report(&format!(
            "one write printed {accepted} unprintable bytes, over the limit of {limit}"
        ))
    );
    // The budget is spent: the writes right after it print (almost) nothing.
    let rest = expect_one_line(&boot, "the other writes' total", |l| {
        l.starts_with(&last_prefix)
    })?;
    let more: u64 = rest[last_prefix.len()..]
        .strip_suffix(" bytes")
        .and_then(|n| n.parse().ok())
        .with_context(|| boot.report(&format!("no count in {rest:?}")))?;
    ensure!(
        more < 1024,
        "{}",
        boot.report(&format!(
            "64 writes right after a flood printed {more} bytes"
        ))
    );
    for line in boot.lines().filter(|l| l.starts_with("pv-server: ")) {
        ensure!(
            line.len() <= limit as usize,
            "{}",
            boot.report(&format!("a {}-byte line", line.len()))
        );
    }
    Ok(())
}

// ---- 5: FPU state -------------------------------------------------------------------------

#[test]
fn x87_in_a_server_is_its_fault() -> Result<()> {
    let boot = attack_is_a_server_fault("x87", "#NM at ")?;
    boot.expect_absent(&hostile("pv-server", "x87: no fault"))?;
    Ok(())
}

#[test]
fn mmx_in_a_server_is_its_fault() -> Result<()> {
    // CR0.EM makes MMX #UD, CR0.TS #NM; which one wins differs between CPUs and emulators.
    let boot = attack_is_a_server_fault("mmx", "#")?;
    let fault = expect_fault_reported(&boot, "#")?;
    ensure!(
        fault.contains("faulted: #UD at ") || fault.contains("faulted: #NM at "),
        "{}",
        boot.report(&format!("{fault:?} is neither #UD nor #NM"))
    );
    boot.expect_absent("mmx: no fault")?;
    Ok(())
}

// ---- 6: the watchdog ----------------------------------------------------------------------

#[test]
fn a_server_looping_on_int3_is_caught_by_the_watchdog() -> Result<()> {
    let image = fixture_image("attack=int3-loop")?;
    let [hello, up, resumed] = recovered();
    let boot = boot_until(&image, &resumed, None)?;
    expect_lines_in_order(
        &boot,
        &[
            &hostile("pv-server", "attack int3-loop"),
            "nucleus: pv-server made no syscall for 200 ticks: treating it as hung",
            "fred-server: restarting pv-server (crash 1 of 3 allowed)",
            &hello,
            &up,
            &resumed,
        ],
    )
}

// ---- 7: boot modules ----------------------------------------------------------------------

#[test]
fn modules_beyond_the_limit_are_counted_and_the_symbol_map_is_kept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut image = Image::new().cmdline("selftest=df-recursion exit=qemu");
    for i in 0..20 {
        let path = dir.path().join(format!("extra-{i:02}"));
        std::fs::write(&path, format!("module {i}\n"))?;
        image = image.module(&format!("extra-{i:02}"), &path);
    }
    let iso = image.build_shared()?;
    let boot = Qemu::new(&iso).timeout(boot_timeout()).run()?;
    // 2 servers + nucleus.sym + kexec-image + 20 extras = 24 modules, 16 kept.
    boot.expect_in_order(&["module: nucleus.sym (", "\nmodule: 8 more ignored"])?;
    let rip = boot.expect_line("the dump's RIP line", |l| l.starts_with("nucleus: RIP:"))?;
    ensure!(
        rip.contains(" <nucleus::selftest::recurse+0x"),
        "{}",
        boot.report(&format!("RIP line {rip:?} names no symbol"))
    );
    boot.expect_exit(QemuExit::Success)
}

// ---- 8: full event rings ------------------------------------------------------------------

#[test]
fn a_full_event_ring_drops_whole_messages_counted_and_reported() -> Result<()> {
    // The fixture plays both servers: as fred-server it lies about its ring's tail, as
    // pv-server it raises a ring's worth of int3 events and then a fault with a dump.
    let hostile_server = build_fixture_server("hostile-server")?;
    let image = Image::new()
        .server("fred-server", &hostile_server)
        .server("pv-server", &hostile_server)
        .cmdline(
            "server-args=fred-server:role=ring-full server-args=pv-server:attack=int3-then-fault",
        );
    let [hello, up, resumed] = recovered();
    let boot = boot_until(&image, &resumed, None)?;
    let verdict = expect_one_line(&boot, "the fixture's verdict", |l| {
        l.starts_with(&hostile("fred-server", "ring-full: "))
            && l.contains(" dump(s) without their event")
    })?;
    // Nothing of the dump went in without its event, and every message that did not fit
    // is counted in the ring.
    ensure!(
        verdict.contains(": 0 dump(s) without their event") && !verdict.ends_with(" 0 drop(s)"),
        "{}",
        boot.report(&format!(
            "{verdict:?}: a half-sent dump or an uncounted drop"
        ))
    );
    let report = expect_one_line(&boot, "the nucleus' report of the drop", |l| {
        l.starts_with(
            "nucleus: fred-server's event ring is full: pv-server's fault is not forwarded (",
        )
    })?;
    // The nucleus reported and restarted pv-server itself, and the fixture's fred-server
    // still serves the restarted one.
    expect_lines_in_order(
        &boot,
        &[
            &report,
            "nucleus: ----[ register dump, cpu 0, ring 3 ]----",
            "nucleus: restarting pv-server (restart 1)",
            &hello,
            &up,
            &resumed,
        ],
    )?;
    Ok(())
}

// ---- 9: CR4 protections, and privileged instructions at CPL 3 ------------------------------

/// What each probe of the fixture's table may raise: (name, [(vector, error code)]).
fn expected_probes() -> Vec<(String, Vec<(u8, u64)>)> {
    let gp = 13;
    let ud = 6;
    let mut probes: Vec<(String, Vec<(u8, u64)>)> = (0..=255u64)
        .map(|n| match n {
            3 => (format!("int {n:#04x}"), vec![(3, 0)]),
            // A DPL-0 gate: #GP with the IDT bit and the vector (SDM: index << 3; QEMU's TCG
            // reports the 16-byte gate's offset, vector << 4).
            _ => (
                format!("int {n:#04x}"),
                vec![(gp, (n << 3) | 2), (gp, (n << 4) | 2)],
            ),
        })
        .collect();
    let named: &[(&str, u8, u64)] = &[
        ("hlt", gp, 0),
        ("cli", gp, 0),
        ("sti", gp, 0),
        ("sgdt", gp, 0),
        ("sidt", gp, 0),
        ("sldt", gp, 0),
        ("str", gp, 0),
        ("smsw", gp, 0),
        ("in", gp, 0),
        ("out", gp, 0),
        ("rdmsr", gp, 0),
        ("wrmsr", gp, 0),
        ("mov-from-cr0", gp, 0),
        ("mov-to-cr3", gp, 0),
        ("mov-from-dr7", gp, 0),
        ("lgdt", gp, 0),
        ("lidt", gp, 0),
        ("swapgs", gp, 0),
        ("sysret", gp, 0),
        ("sysexit", gp, 0),
        ("sysenter", gp, 0),
        // Where SYSENTER/SYSEXIT do not exist in 64-bit mode (AMD; QEMU's default model).
        ("sysexit", ud, 0),
        ("sysenter", ud, 0),
        // QEMU's TCG pops IRETQ's frame with supervisor reads, which SMAP refuses.
        ("iretq-to-ring0", 14, 1),
        ("iretq-iopl3-then-cli", 14, 1),
        // QEMU's TCG has no ICEBP.
        ("int1", ud, 0),
        ("invlpg", gp, 0),
        ("wbinvd", gp, 0),
        ("clts", gp, 0),
        ("iretq-to-ring0", gp, 0xe008),
        ("iretq-iopl3-then-cli", gp, 0),
        ("popf-iopl3-then-cli", gp, 0),
        ("popf-ac-then-int3", 3, 0),
        ("popf-tf", 1, 0),
        ("call-far-kernel-cs", gp, 0xe008),
        ("call-far-tss", gp, 0xe040),
        ("call-far-compat-cs", gp, 0x18),
        ("call-far-ldt", gp, 0x04),
        ("jmp-far-kernel-cs", gp, 0xe008),
        ("mov-ss-kernel-ds", gp, 0xe010),
        ("mov-ds-tss", gp, 0xe040),
        ("mov-fs-kernel-cs", gp, 0xe008),
        ("int1", 1, 0),
        ("into", ud, 0),
        ("xgetbv", ud, 0),
        ("rdpmc", gp, 0),
        ("wrfsbase", ud, 0),
        ("ltr", gp, 0),
        ("lldt", gp, 0),
        ("lmsw", gp, 0),
        ("invd", gp, 0),
        ("mov-from-cr8", gp, 0),
        ("vmcall", ud, 0),
    ];
    for &(name, vector, error) in named {
        match probes.iter_mut().find(|(n, _)| n == name) {
            Some((_, allowed)) => allowed.push((vector, error)),
            None => probes.push((name.to_owned(), vec![(vector, error)])),
        }
    }
    probes
}

/// QEMU's default model plus the protections the nucleus turns on when it finds them.
const PROTECTED_CPU: &str = "qemu64,+smep,+smap,+umip";

#[test]
fn cr4_protections_are_on_and_every_privileged_probe_faults() -> Result<()> {
    let hostile_server = build_fixture_server("hostile-server")?;
    let image = Image::new()
        .server("fred-server", &hostile_server)
        .server("pv-server", &hostile_server)
        .cmdline("server-args=fred-server:role=resume-probes server-args=pv-server:attack=probes");
    let last = hostile("pv-server", "probes: done");
    let boot = boot_until(&image, &last, Some(PROTECTED_CPU))?;
    expect_exact_line(&boot, "cpu: SMEP on, SMAP on, UMIP on, PGE on")?;
    for (name, allowed) in expected_probes() {
        let lines: Vec<String> = allowed
            .iter()
            .map(|(vector, error)| {
                hostile(
                    "fred-server",
                    &format!("probe {name}: vector {vector} error {error:#x}"),
                )
            })
            .collect();
        boot.expect_line(&format!("probe {name}: one of {allowed:?}"), |l| {
            lines.iter().any(|wanted| wanted == l)
        })?;
        let seen = count_lines_starting(&boot, &hostile("fred-server", &format!("probe {name}:")));
        ensure!(
            seen == 1,
            "{}",
            boot.report(&format!("probe {name} raised {seen} events"))
        );
    }
    boot.expect_absent("event outside the probes")?;
    expect_exact_line(&boot, &last)?;
    Ok(())
}

#[test]
fn the_boot_line_says_which_protections_the_default_cpu_lacks() -> Result<()> {
    let boot = tests::boot_bios("exit=qemu")?;
    let line = boot.expect_line("the protections line", |l| l.starts_with("cpu: SMEP "))?;
    ensure!(
        line.contains("SMAP ") && line.contains("UMIP ") && line.contains("PGE "),
        "{}",
        boot.report(&format!("{line:?} does not name every protection"))
    );
    boot.expect_exit(QemuExit::Success)
}

// ---- under FRED (Bochs) -----------------------------------------------------------------

/// Under FRED there is no IDT gate and no DPL: `int N` of every vector reaches the nucleus
/// as a software-interrupt event, SYSENTER as a SYSENTER event (FRED ignores the SYSENTER
/// MSRs), and SWAPGS/SYSRET/SYSEXIT are #UD. The nucleus forwards each to the fault handler
/// like any fault and stays up; the compat slot still refuses a far call (#GP(0x18)).
#[test]
#[ignore = "needs FREDVISOR_BOCHS"]
fn under_fred_every_probe_is_an_event_the_nucleus_forwards() -> Result<()> {
    let hostile_server = build_fixture_server("hostile-server")?;
    let image = Image::new()
        .server("fred-server", &hostile_server)
        .server("pv-server", &hostile_server)
        .cmdline(
            "fred=on server-args=fred-server:role=resume-probes server-args=pv-server:attack=probes",
        );
    let iso = image.build_shared()?;
    // No exit option: the run ends at its deadline, long after the probes.
    let boot = image_builder::Bochs::new(&iso)
        .timeout(std::time::Duration::from_secs(400))
        .run()?;
    expect_nucleus_alive(&boot)?;
    expect_exact_line(&boot, "fred: enabled (cpu has FRED+LKGS)")?;
    let probe = |name: &str, vector: u8, error: u64| {
        expect_exact_line(
            &boot,
            &hostile(
                "fred-server",
                &format!("probe {name}: vector {vector} error {error:#x}"),
            ),
        )
    };
    for n in (0..=255u8).filter(|&n| n != 3) {
        probe(&format!("int {n:#04x}"), n, 0)?;
    }
    probe("int 0x03", 3, 0)?;
    // The fixture's catch-all (255) is the SYSENTER event here.
    probe("sysenter", 255, 0)?;
    for name in ["swapgs", "sysret", "sysexit"] {
        probe(name, 6, 0)?;
    }
    probe("sgdt", 13, 0)?;
    probe("call-far-compat-cs", 13, 0x18)?;
    probe("call-far-ldt", 13, 0x04)?;
    expect_exact_line(&boot, &hostile("pv-server", "probes: done"))
}
