//! Issue 14 point 3: the FRED-only self-tests. On a FRED CPU each passes with the values it
//! measured; under the IDT (QEMU) each says it needs FRED and is skipped, and boot goes on.

use anyhow::{Result, ensure};

use crate::machine::Machine;
use crate::{Boot, Image, QemuExit, expect_one_line, hex_after, markers, selftest_summary};

/// The resumable FRED-only self-tests, in the order the nucleus runs them.
pub const RESUMABLE: [&str; 4] = ["fred-nested", "fred-event-data", "fred-erets", "fred-ring3"];

fn skipped(name: &str) -> String {
    format!("selftest: {name}: skipped (needs FRED delivery; this boot uses the IDT)")
}

fn boot(machine: Machine, tests: &str) -> Result<Boot> {
    machine.boot(&Image::new().cmdline(&machine.cmdline(&format!("selftest={tests}"))))
}

/// The verdict line of `name`, which must have passed.
fn passed(boot: &Boot, name: &str) -> Result<String> {
    let prefix = format!("selftest: {name}: passed (");
    expect_one_line(boot, &format!("{name}'s verdict"), |l| {
        l.starts_with(&prefix)
    })
}

/// The four resumable tests in one boot.
pub fn fred_only_selftests_pass_on_fred_and_are_skipped_on_the_idt(machine: Machine) -> Result<()> {
    let boot = boot(machine, &RESUMABLE.join(","))?;
    boot.expect_absent(": FAILED")?
        .expect_absent(markers::PANIC)?;
    if !machine.has_fred() {
        let lines: Vec<String> = RESUMABLE.iter().map(|name| skipped(name)).collect();
        let mut story: Vec<&str> = lines.iter().map(String::as_str).collect();
        let summary = selftest_summary(0, 0);
        story.extend([summary.as_str(), markers::READY]);
        boot.expect_in_order(&story)?;
        return boot.expect_exit(QemuExit::Success);
    }
    // fred-nested: one event at the ring-0 entry, its frame right under the interrupted RSP.
    let nested = passed(&boot, "fred-nested")?;
    let top = hex_after(&nested, "return state ends at ");
    let aligned = hex_after(&nested, "aligned down is ");
    ensure!(
        nested.contains("(1 event(s) at the ring-0 entry (+256)")
            && top.is_some()
            && top == aligned
            && nested.ends_with("; interrupted SL0)"),
        "{}",
        boot.report(&format!("fred-nested: {nested:?}"))
    );
    // fred-event-data: #PF data = CR2 = the address read; #DB data = BS only (what DR6 reads
    // is the CPU's business: Bochs updates it, FRED hardware need not).
    let data = passed(&boot, "fred-event-data")?;
    ensure!(
        data.starts_with(
            "selftest: fred-event-data: passed (#PF data 0xdeadb000, CR2 0xdeadb000; #DB data \
             0x4000 (DR6 reads "
        ),
        "{}",
        boot.report(&format!("fred-event-data: {data:?}"))
    );
    boot.expect_line("the #DB report", |l| {
        l.starts_with(&format!(
            "nucleus: #DB (1) at {}",
            crate::NUCLEUS_RIP_PREFIX
        )) && l.ends_with(": DR6 (positive) 0x4000")
    })?;
    // fred-erets: the #BP ran on the #DF page (SL3); the next event interrupted SL0.
    let erets = passed(&boot, "fred-erets")?;
    ensure!(
        erets.contains(" (#DF page, SL3), it interrupted SL0; the next event interrupted SL0)"),
        "{}",
        boot.report(&format!("fred-erets: {erets:?}"))
    );
    // fred-ring3: the first server event, at RSP0, with the nucleus' GS and the user's apart.
    let ring3 = passed(&boot, "fred-ring3")?;
    let rsp0 = hex_after(&ring3, "(RSP0 ");
    let cpu_info = hex_after(&ring3, "(cpu_info ");
    ensure!(
        hex_after(&ring3, "return state ends at ") == rsp0
            && ring3.contains("), copied into the save area;")
            && hex_after(&ring3, "GS base ") == cpu_info
            && ring3.ends_with("user GS 0x0:0x0)"),
        "{}",
        boot.report(&format!("fred-ring3: {ring3:?}"))
    );
    boot.expect_in_order(&[
        "selftest: fred-ring3: waiting for the first event from a server",
        "server fred-server: loaded",
        "selftest: fred-ring3: passed (",
        &selftest_summary(4, 0),
        markers::READY,
    ])?;
    boot.expect_exit(QemuExit::Success)
}

/// `fred-sl1-df` or `fred-sl2-df` (terminal): `#DF` on SL3 after a fault in the guard page
/// RSP1 (page 5, the primary shadow stack) or RSP2 (page 0, the IST shadow stacks) points at.
pub fn a_pf_on_a_guard_stack_level_escalates_to_df_on_sl3(
    machine: Machine,
    level: u8,
) -> Result<()> {
    let name = format!("fred-sl{level}-df");
    let boot = boot(machine, &name)?;
    boot.expect_absent(": FAILED")?
        .expect_absent(markers::PANIC)?;
    if !machine.has_fred() {
        boot.expect_in_order(&[&skipped(&name), &selftest_summary(0, 0), markers::READY])?;
        return boot.expect_exit(QemuExit::Success);
    }
    let page = if level == 1 {
        "primary shadow stack"
    } else {
        "IST shadow stacks"
    };
    boot.expect_in_order(&[
        &format!("selftest: {name}: #PF on SL{level}, whose RSP{level} points at a guard page"),
        "nucleus: #DF (double fault) on the #DF stack",
        "nucleus: delivery: FRED, stack level 3 (#DF)",
        &format!("selftest: {name}: passed (#DF on stack level 3 after a fault at CR2 0x"),
        &format!(" in the {page} page)"),
        &selftest_summary(1, 0),
        "nucleus: halted after #DF",
    ])?;
    boot.expect_absent(markers::READY)?;
    boot.expect_exit(QemuExit::Success)
}
