//! A hostile server: every kind of bad message it can send gets one clear line from the
//! nucleus, and the nucleus keeps running it and everyone else (engineering rule "bad input
//! never takes the system down silently"; issue 7, forwarding and syscalls).
//!
//! The `alt-server` fixture runs as pv-server with the start argument `hostile`: it sends
//! an undecodable record, a `Kill` reply it has no right to send, an unknown syscall, and
//! then overwrites the producer index of its reply ring.
use anyhow::Result;

use crate::machine::{Machine, Stop};
use crate::{
    Image, QemuExit, build_fixture_server, expect_exact_line, expect_lines_in_order, markers,
};

/// Each offence of the hostile alt-server gets one line; nobody is killed or restarted.
pub fn hostile_server_messages_get_one_line_each_and_the_nucleus_keeps_running(
    machine: Machine,
) -> Result<()> {
    let alt = build_fixture_server("alt-server")?;
    let image = Image::new()
        .server("pv-server", &alt)
        .cmdline(&machine.options("server-args=pv-server:hostile"));
    let last = "pv-server: alt-server: hostile: still scheduled after all of it";
    // `nucleus: ready` waits for fred-server's Hello, which may come before, among or after
    // the hostile lines: wait for both ends, expect no order between them.
    let (_, boot) = machine.boot_until(&image, Stop::Lines(&[markers::READY, last]))?;
    expect_exact_line(&boot, markers::READY)?;
    expect_lines_in_order(
        &boot,
        &[
            "pv-server: alt-server: hostile: sent an undecodable record (queued)",
            "pv-server: alt-server: hostile: sent a Kill reply",
            "pv-server: alt-server: hostile: unknown syscall -> no such syscall",
            "pv-server: alt-server: hostile: corrupted the reply ring head",
            last,
        ],
    )?;
    // One line per offence, naming the server.
    let dropped = boot.expect_line("the undecodable record reported", |l| {
        l.starts_with("nucleus: pv-server: dropped a message: ")
    })?;
    let stray = boot.expect_line("the stray reply reported", |l| {
        l.starts_with("nucleus: pv-server: unexpected message Reply(Kill")
    })?;
    let corrupt = boot.expect_line("the corrupt ring reported", |l| {
        l.starts_with("nucleus: pv-server: reply ring corrupt (")
            && l.ends_with("); ignoring it until the server restarts")
    })?;
    for line in [&dropped, &stray, &corrupt] {
        anyhow::ensure!(
            boot.lines().filter(|l| l == line).count() == 1,
            "{}",
            boot.report(&format!("{line:?} not exactly once"))
        );
    }
    // Nobody was killed or restarted for it, and the nucleus never fell over.
    expect_exact_line(
        &boot,
        &format!(
            "nucleus: pv-server says hello (protocol {}, generation 0)",
            ipc::PROTOCOL_VERSION
        ),
    )?;
    boot.expect_absent("nucleus: pv-server stopped")?;
    boot.expect_absent("restarting")?;
    boot.expect_absent("PANIC")?;
    boot.expect_absent("FATAL")?;
    boot.expect_exit(QemuExit::Stopped)
}

/// fred-server dies holding an event it has not answered: the nucleus restarts it and hands
/// the event to the new one, which then deals with the faulting server as usual.
pub fn an_event_fred_server_died_holding_goes_to_its_successor(machine: Machine) -> Result<()> {
    let image =
        Image::new()
            .cmdline(&machine.options(
                "server-args=fred-server:fault-on-event server-args=pv-server:fault=null",
            ));
    let last = &format!(
        "nucleus: pv-server says hello (protocol {}, generation 1)",
        ipc::PROTOCOL_VERSION
    );
    // pv-server may print its option before fred-server's Hello, so before `nucleus: ready`.
    let (_, boot) = machine.boot_until(&image, Stop::Lines(&[markers::READY, last]))?;
    expect_exact_line(&boot, markers::READY)?;
    expect_lines_in_order(
        &boot,
        &[
            "pv-server: test option: fault=null in generation 0",
            "fred-server: test option: fault-on-event: ud2 before answering",
            "nucleus: fred-server faulted and fred-server faulted itself: the nucleus reports it",
            "nucleus: restarting fred-server (restart 1)",
            "nucleus: pv-server's unanswered event handed to the new fred-server",
            "fred-server: restarting pv-server (crash 1 of 3 allowed)",
            "nucleus: restarting pv-server (restart 1)",
            last,
        ],
    )?;
    boot.expect_absent("PANIC")?;
    boot.expect_exit(QemuExit::Stopped)
}
