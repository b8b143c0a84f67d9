//! Issue 4 acceptance: nucleus events reported with exact values, on QEMU (IDT delivery)
//! and on a FRED CPU (issue 14).
//!
//! One `selftest=all` boot carries the five resumable events (`int3`, `ud2`, two `#PF`s,
//! `#GP`); every address the nucleus reports is compared with the one its self-test printed
//! before faulting. `df-recursion` and `early-fault` end the boot and get a boot each; so does
//! the garbage command line.

use anyhow::{Context, Result, ensure};

use crate::machine::Machine;
use crate::{
    Boot, Image, QemuExit, SplitMix64, expect_event_selftests_passed, expect_exact_line,
    expect_one_line, hex_after, lines_matching, markers, selftest_summary,
};

/// The address `selftest=pf-unmapped` reads (`nucleus/src/selftest/expect.rs`, `UNMAPPED_ADDRESS`).
const UNMAPPED_ADDRESS: u64 = 0xdead_b000;
/// The selector `selftest=gp-selector` loads: GDT index 9, one past the nucleus' GDT.
const BAD_SELECTOR: u16 = 9 << 3;
/// Where the nucleus is linked: every RIP of nucleus code lies in its image's slot.
const KERNEL_VMA: u64 = crate::NUCLEUS_IMAGE;
const PAGE: u64 = 4096;
/// Per-CPU stack block (architecture.md §4): 8 pages, 8-page aligned, primary stack in
/// pages 7–6, so the page just below the primary stack is page 5 of the block.
const BLOCK_PAGES: u64 = 8;
const PAGE_BELOW_PRIMARY: u64 = 5;

/// The value of `<label>0x…` in the single line that starts with `prefix`.
fn hex_in_line(boot: &Boot, prefix: &str, label: &str) -> Result<u64> {
    let line = expect_one_line(boot, &format!("prefix {prefix:?}"), |l| {
        l.starts_with(prefix)
    })?;
    hex_after(&line, label)
        .with_context(|| boot.report(&format!("no hex number after {label:?} in {line:?}")))
}

/// int3: reported as `#BP`, and the marker printed after the int3 follows the report.
fn check_int3(boot: &Boot) -> Result<()> {
    boot.expect_in_order(&[
        "selftest: int3: executing int3",
        "nucleus: #BP (int3) at 0x",
        "selftest: int3: resumed after int3",
        "selftest: int3: passed (reported and resumed)",
    ])?;
    let rip = hex_in_line(boot, "nucleus: #BP (int3) at ", " at ")?;
    ensure!(
        (KERNEL_VMA..crate::NUCLEUS_IMAGE_END).contains(&rip),
        "{}",
        boot.report(&format!("#BP RIP {rip:#x} is not nucleus code"))
    );
    Ok(())
}

/// ud2: the `#UD` RIP equals the address the self-test printed for its ud2.
fn check_ud2(boot: &Boot) -> Result<()> {
    let probe = hex_in_line(boot, "selftest: ud2: executing ud2 at ", " at ")?;
    let reported = hex_in_line(boot, "nucleus: #UD (6) at ", " at ")?;
    ensure!(
        reported == probe,
        "{}",
        boot.report(&format!(
            "#UD at {reported:#x}, but the ud2 is at {probe:#x}"
        ))
    );
    ensure!(
        (KERNEL_VMA..crate::NUCLEUS_IMAGE_END).contains(&probe),
        "{}",
        boot.report("ud2 probe outside the nucleus")
    );
    expect_exact_line(boot, &format!("nucleus: #UD (6) at {probe:#x}"))?;
    boot.expect_in_order(&[
        &format!("selftest: ud2: executing ud2 at {probe:#x}"),
        &format!("nucleus: #UD (6) at {probe:#x}"),
        "selftest: ud2: passed (",
    ])
    .map(drop)
}

/// pf-unmapped: CR2 is the chosen address, error code 0 decoded as `[NP R S]`.
fn check_pf_unmapped(boot: &Boot) -> Result<()> {
    let chosen = hex_in_line(boot, "selftest: pf-unmapped: reading ", "reading ")?;
    ensure!(
        chosen == UNMAPPED_ADDRESS,
        "{}",
        boot.report(&format!(
            "pf-unmapped read {chosen:#x}, expected {UNMAPPED_ADDRESS:#x}"
        ))
    );
    let expected_tail = format!(": address (CR2) {UNMAPPED_ADDRESS:#x}, error 0x0 [NP R S]");
    let line = expect_one_line(boot, "the #PF report for the unmapped read", |l| {
        l.starts_with("nucleus: #PF (14) at 0x")
            && l.contains(&format!("(CR2) {UNMAPPED_ADDRESS:#x}"))
    })?;
    ensure!(
        line.ends_with(&expected_tail),
        "{}",
        boot.report(&format!(
            "#PF line {line:?} does not end with {expected_tail:?}"
        ))
    );
    boot.expect_in_order(&[
        "selftest: pf-unmapped: reading 0xdeadb000",
        &line,
        "selftest: pf-unmapped: passed (CR2 0xdeadb000, error 0x0)",
    ])
    .map(drop)
}

/// pf-nx: the fetch from the NX data page faults with RIP = CR2 = the called address, error
/// 0x11 (present + instruction fetch), decoded with `I`.
fn check_pf_nx(boot: &Boot) -> Result<()> {
    let target = hex_in_line(boot, "selftest: pf-nx: calling data at ", " at ")?;
    let expected = format!(
        "nucleus: #PF (14) at {target:#x}: address (CR2) {target:#x}, error 0x11 [P R S I]"
    );
    expect_exact_line(boot, &expected)?;
    boot.expect_in_order(&[
        &format!("selftest: pf-nx: calling data at {target:#x}"),
        &expected,
        "selftest: pf-nx: passed (",
    ])
    .map(drop)
}

/// gp-selector: `#GP` with the selector error code decoded to GDT index 9.
fn check_gp_selector(boot: &Boot) -> Result<()> {
    let tail = format!(": error {BAD_SELECTOR:#x}: sel {BAD_SELECTOR:#06x}: GDT index 9 (EXT=0)");
    let line = expect_one_line(boot, "the #GP report", |l| {
        l.starts_with("nucleus: #GP (13) at 0x")
    })?;
    ensure!(
        line.ends_with(&tail),
        "{}",
        boot.report(&format!("#GP line {line:?} does not end with {tail:?}"))
    );
    boot.expect_in_order(&[
        &format!("selftest: gp-selector: loading DS with {BAD_SELECTOR:#x}"),
        &line,
        "selftest: gp-selector: passed (error 0x48)",
    ])
    .map(drop)
}

fn check_selftest_all(boot: &Boot, machine: Machine) -> Result<()> {
    check_int3(boot)?;
    check_ud2(boot)?;
    check_pf_unmapped(boot)?;
    check_pf_nx(boot)?;
    check_gp_selector(boot)?;
    expect_event_selftests_passed(boot)?;
    expect_exact_line(boot, machine.decision())?;
    boot.expect_in_order(&[&selftest_summary(5, 0), markers::READY])?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

fn boot(machine: Machine, options: &str) -> Result<Boot> {
    machine.boot(&Image::new().cmdline(&machine.cmdline(options)))
}

/// `selftest=all`: every resumable event with its exact values, then `ready`.
pub fn selftest_all_reports_each_event_with_exact_values(machine: Machine) -> Result<()> {
    check_selftest_all(&boot(machine, "selftest=all")?, machine)
}

/// `selftest=df-recursion`: the overflow escalates to `#DF` on the `#DF` stack (IST1, or
/// FRED stack level 3) and the dump shows where.
pub fn unbounded_recursion_double_faults_onto_the_df_stack(machine: Machine) -> Result<()> {
    let boot = boot(machine, "selftest=df-recursion")?;
    let df_delivery = format!("nucleus: {}", machine.df_delivery());
    boot.expect_in_order(&[
        "selftest: df-recursion: recursing until the guard page",
        "nucleus: #DF (double fault) on the #DF stack",
        "nucleus: event: #DF (type 3 HW exception, vector 8)",
        &df_delivery,
        "nucleus: RIP:",
        "RSP: ",
        "cr2: ",
        "selftest: df-recursion: passed (#DF delivered on the #DF stack)",
        &selftest_summary(1, 0),
        "nucleus: halted after #DF",
    ])?;
    expect_exact_line(&boot, &df_delivery)?;
    let event = expect_one_line(&boot, "the dump's event line", |l| {
        l.starts_with("nucleus: event: ")
    })?;
    ensure!(
        event.contains("vector 8)"),
        "{}",
        boot.report(&format!("the dump's event is not vector 8: {event:?}"))
    );
    let rip_line = expect_one_line(&boot, "the dump's RIP", |l| l.starts_with("nucleus: RIP:"))?;
    // `nucleus: RIP:    <cs>:<rip>` and, when the symbol map names it, ` <function+0x..>`.
    let rip = rip_line
        .split_whitespace()
        .nth(2)
        .and_then(|cs_rip| cs_rip.split(':').nth(1))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .with_context(|| boot.report(&format!("unreadable RIP line {rip_line:?}")))?;
    ensure!(
        (KERNEL_VMA..crate::NUCLEUS_IMAGE_END).contains(&rip),
        "{}",
        boot.report(&format!("#DF RIP {rip:#x} is not nucleus code"))
    );
    let rsp = hex_in_line(&boot, "nucleus: CS: ", "RSP: ")?;
    let cr2 = hex_in_line(&boot, "nucleus: cr0: ", "cr2: ")?;
    // The fault that escalated was a write just below RSP, into the unmapped page under the
    // primary stack: CR2 sits in page 5 of the 8-page-aligned block, next to RSP (a push
    // under IDT; under FRED the first qword of the event frame, which goes 64-byte aligned
    // below RSP).
    ensure!(
        cr2 / PAGE % BLOCK_PAGES == PAGE_BELOW_PRIMARY,
        "{}",
        boot.report(&format!(
            "CR2 {cr2:#x} is not in the page below the primary stack"
        ))
    );
    let near = if machine.has_fred() { 64 + 63 } else { 16 };
    ensure!(
        rsp.abs_diff(cr2) <= near,
        "{}",
        boot.report(&format!(
            "CR2 {cr2:#x} is not within {near} bytes of RSP {rsp:#x}"
        ))
    );
    // RSP is in the guard page, so the dump shows the words from the first mapped address
    // above it (issue 14: it used to end in `stack (0 words from RSP):`).
    // A page-aligned RSP is itself the first mapped address: then the words start at RSP.
    let above = (rsp + PAGE - 1) & !(PAGE - 1);
    let header = if above == rsp {
        "nucleus: stack (16 words from RSP):".to_owned()
    } else {
        format!(
            "nucleus: stack (16 words from RSP+{:#x}, the first mapped address above RSP):",
            above - rsp
        )
    };
    boot.expect_in_order(&[&header, &format!("nucleus:   {above:016x}: ")])?;
    expect_exact_line(&boot, &selftest_summary(1, 0))?;
    boot.expect_absent(markers::READY)?
        .expect_absent(markers::PANIC)?
        .expect_exit(QemuExit::Success)
}

/// `selftest=early-fault`: reported by the early IDT (also on a FRED CPU: FRED is not on yet).
pub fn fault_before_the_command_line_is_parsed_is_reported_by_the_early_idt(
    machine: Machine,
) -> Result<()> {
    let boot = boot(machine, "selftest=early-fault")?;
    boot.expect_in_order(&[
        markers::BANNER,
        "selftest: early-fault: executing ud2 before the command line is parsed",
        "nucleus: #UD (6) at 0x",
        "nucleus: fault before the command line was parsed (early IDT)",
        "nucleus: FATAL: unrecoverable #UD (6) in the nucleus",
        "register dump",
        "nucleus: event: #UD (type 3 HW exception, vector 6)",
        "nucleus: delivery: IDT",
        "nucleus: RIP:",
        "nucleus: halted",
    ])?;
    let reported = hex_in_line(&boot, "nucleus: #UD (6) at ", " at ")?;
    let rip_line = expect_one_line(&boot, "the dump's RIP", |l| l.starts_with("nucleus: RIP:"))?;
    ensure!(
        rip_line.ends_with(&format!(":{reported:016x}")),
        "{}",
        boot.report(&format!(
            "dump RIP {rip_line:?} differs from the #UD at {reported:#x}"
        ))
    );
    // Nothing after the parse ran: no command-line echo, no FRED decision, no ready.
    boot.expect_absent("cmdline: ")?
        .expect_absent("fred: ")?
        .expect_absent(markers::READY)?
        .expect_exit(QemuExit::Failure)
}

/// Characters GRUB passes through unchanged (`image_builder::grub::check_cmdline`), minus space.
const SAFE_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=,.:/_+-@%";
/// Option keys the nucleus knows: a random word must not be one of them.
const KNOWN_KEYS: [&str; 7] = [
    "fred",
    "pv-shim",
    "loglvl",
    "exit",
    "selftest",
    "bench",
    "server-args",
];
/// Warnings the nucleus prints before it only counts them (`bsp_x86_64::cmdline::MAX_WARNINGS`).
const MAX_WARNINGS: usize = 8;

/// `len` bytes of random words from [`SAFE_CHARS`], single spaces between them.
fn random_words(seed: u64, len: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let mut words = Vec::new();
    let mut used = 0;
    while used < len {
        let room = len - used - usize::from(used > 0);
        let want = (1 + rng.below(16) as usize).min(room.max(1));
        let word: String = (0..want)
            .map(|_| SAFE_CHARS[rng.below(SAFE_CHARS.len() as u64) as usize] as char)
            .collect();
        used += word.len() + usize::from(used > 0);
        words.push(word);
    }
    words
}

/// 4 KiB of random words: the first warnings, a count of the rest, and a normal boot.
pub fn garbage_command_line_warns_caps_warnings_and_boots(machine: Machine) -> Result<()> {
    let noise = random_words(0x4652_4544_7669_736f, 4096);
    let noise_line = noise.join(" ");
    assert_eq!(noise_line.len(), 4096);
    for word in &noise {
        let key = word.split('=').next().unwrap_or_default();
        assert!(
            !KNOWN_KEYS.contains(&key),
            "random word {word:?} is a real option"
        );
    }
    // No `fred=on` here: `fred=banana` falls back to `auto`, which enables FRED where it exists.
    let cmdline = format!(
        "{} fred=banana no-such-option {noise_line}",
        machine.exit_option()
    );
    let boot = machine.boot(&Image::new().cmdline(&cmdline))?;

    expect_exact_line(&boot, &format!("cmdline: {cmdline}"))?;
    let fred = "cmdline: fred=banana: expected on|off|auto, using auto";
    let unknown = "cmdline: unknown option 'no-such-option' ignored";
    let mut expected: Vec<String> = vec![fred.into(), unknown.into()];
    expected.extend(
        noise
            .iter()
            .take(MAX_WARNINGS - 2)
            .map(|w| format!("cmdline: unknown option '{w}' ignored")),
    );
    let total_warnings = 2 + noise.len();
    let suppressed = format!(
        "cmdline: {} more warnings suppressed",
        total_warnings - MAX_WARNINGS
    );
    expected.push(suppressed);
    // The warnings come right after the echo, in order, each on its own line, and nothing
    // else starts with `cmdline: `.
    let cmdline_lines = lines_matching(&boot, |l| l.starts_with("cmdline: "));
    ensure!(
        cmdline_lines.get(1..) == Some(&expected[..]),
        "{}",
        boot.report(&format!(
            "warnings differ:\n  expected {expected:#?}\n  got {:#?}",
            cmdline_lines.get(1..)
        ))
    );
    boot.expect_in_order(&[
        fred,
        unknown,
        "more warnings suppressed",
        machine.decision(),
        markers::READY,
    ])?
    .expect_absent(markers::PANIC)?
    .expect_exit(QemuExit::Success)
}

/// GRUB syntax never reaches `grub.cfg` (no boot: the same on every machine).
pub fn grub_syntax_on_the_command_line_is_refused_before_building() {
    for bad in ["a;b", "x=$y", "\"q\"", "{", "}", "a\\b", "a#b"] {
        let error = Image::new().cmdline(bad).build();
        let Err(error) = error else {
            panic!("{bad:?} reached grub.cfg");
        };
        assert!(
            format!("{error:#}").contains("which GRUB would interpret"),
            "{bad:?}: {error:#}"
        );
    }
}
