//! Test-only server options from StartInfo `args`: `selfcheck`, `fault=KIND [faults=N]`,
//! `hammer=int3`.
//!
//! Every server honours them the same way, so the boot tests can crash or probe any of them
//! (issue 7 items 7 and the syscall acceptance test). They run after `Hello`, so the nucleus
//! already counts the server as ready when it crashes.
//!
//! * `selfcheck`: `console_write` with a kernel pointer and with an unmapped user pointer;
//!   each must fail, and the outcome is printed as
//!   `<name>: selfcheck: console_write(kernel pointer) -> bad pointer argument`.
//! * `fault=null|ud2|loop`: a null write (`#PF`), a `ud2` (`#UD`) or an endless loop without
//!   syscalls. `faults=N` (default 1) limits it to the first `N` generations, so a restarted
//!   server comes back healthy (`faults=1`) or keeps crashing until fred-server gives up
//!   (`faults=9`).
//! * `hammer=int3`: `int3` for good (each one an event the fault handler answers), with a
//!   line after the first and every 10 000th: events in flight for the kexec tests.
//! * `events=N`: raises `N` `int3` events, each forwarded to the server's fault handler and
//!   resumed by it, and prints how many came back and the TSC ticks they took (the
//!   cross-CPU event stress, with the server on another CPU than its handler).

use core::fmt;

use super::{Server, cpu, sys};
use crate::println;

/// The nucleus' image (L4 slot 257, `nucleus/src/layout.rs`): the nucleus must refuse it.
pub const KERNEL_POINTER: u64 = 0xffff_8080_0020_0000;
/// Address below `layout::IMAGE_START`: never mapped in a server.
pub const UNMAPPED_POINTER: u64 = 0x1000;

/// What `fault=` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    NullWrite,
    InvalidOpcode,
    EndlessLoop,
}

/// A `fault=` or `faults=` value we do not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    UnknownFault,
    BadCount,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownFault => "unknown fault= value (null, ud2, loop), ignored",
            Self::BadCount => "faults= is not a number, using 1",
        })
    }
}

impl FaultKind {
    pub fn parse(value: &[u8]) -> Result<Self, OptionError> {
        match value {
            b"null" => Ok(Self::NullWrite),
            b"ud2" => Ok(Self::InvalidOpcode),
            b"loop" => Ok(Self::EndlessLoop),
            _ => Err(OptionError::UnknownFault),
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::NullWrite => "null",
            Self::InvalidOpcode => "ud2",
            Self::EndlessLoop => "loop",
        }
    }
}

fn parse_count(value: &[u8]) -> Result<u32, OptionError> {
    core::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(OptionError::BadCount)
}

/// Runs the test options of `server` (call after `Hello`). Returns unless a fault or a
/// hammer was asked.
pub fn run(server: &Server) {
    let info = server.info();
    if info.has_arg(b"selfcheck") {
        selfcheck();
    }
    if let Some(value) = info.arg_value(b"events") {
        match parse_count(value) {
            Ok(count) => raise_events(count),
            Err(_) => println!("test option: events= is not a number, ignored"),
        }
    }
    if info.arg_value(b"hammer") == Some(b"int3") {
        hammer_int3();
    }
    let Some(value) = info.arg_value(b"fault") else {
        return;
    };
    let kind = match FaultKind::parse(value) {
        Ok(kind) => kind,
        Err(error) => return println!("test option: {error}"),
    };
    let faults = match info.arg_value(b"faults").map(parse_count) {
        None => 1,
        Some(Ok(count)) => count,
        Some(Err(error)) => {
            println!("test option: {error}");
            1
        }
    };
    if server.generation() >= faults {
        return println!(
            "test option: fault={} skipped in generation {} (faults={faults})",
            kind.name(),
            server.generation()
        );
    }
    println!(
        "test option: fault={} in generation {}",
        kind.name(),
        server.generation()
    );
    match kind {
        FaultKind::NullWrite => cpu::null_write(),
        FaultKind::InvalidOpcode => cpu::invalid_opcode(),
        FaultKind::EndlessLoop => cpu::spin_forever(),
    }
}

/// `hammer=int3`: raises `int3` events for good (each one forwarded to the fault handler
/// and resumed), saying so after the first and every 10 000th: a stream of events in flight
/// for the tests that hand the machine over underneath it (kexec).
fn hammer_int3() -> ! {
    println!("test option: hammer=int3: raising int3 events for good");
    let mut count: u64 = 0;
    loop {
        cpu::breakpoint();
        count += 1;
        if count == 1 || count.is_multiple_of(10_000) {
            println!("test option: hammer=int3: {count} event(s) handled");
        }
    }
}

/// Events between two `nop` syscalls in `events=`: an `int3` loop without syscalls is what
/// the nucleus' watchdog calls hung (and a tick held pending while the nucleus ran is taken
/// at the first instruction after a resume, so it finds the loop in ring 3 often).
const EVENTS_PER_SYSCALL: u32 = 1000;

/// `events=N`: `N` `int3`s, each returning only once its handler resumed it.
fn raise_events(count: u32) {
    let start = cpu::rdtsc();
    let mut resumed = 0u32;
    for _ in 0..count {
        cpu::breakpoint();
        resumed += 1;
        if resumed % EVENTS_PER_SYSCALL == 0 {
            let _ = sys::nop();
        }
    }
    let ticks = cpu::rdtsc().wrapping_sub(start);
    let per_event = ticks / u64::from(count.max(1));
    // Events per second of the TSC's rate, where the nucleus measured it (pv-server only).
    match sys::clock(crate::domain::Clock::TscKhz) {
        Ok(khz) if khz > 0 && ticks > 0 => println!(
            "test option: events: {count} int3 event(s) raised, {resumed} resumed, {ticks} TSC ticks ({per_event} per event, {} events/s)",
            u128::from(count) * u128::from(khz) * 1000 / u128::from(ticks)
        ),
        _ => println!(
            "test option: events: {count} int3 event(s) raised, {resumed} resumed, {ticks} TSC ticks ({per_event} per event)"
        ),
    }
}

/// Passes bad pointers to `console_write` and prints what the nucleus answered.
pub fn selfcheck() {
    for (what, address) in [
        ("kernel pointer", KERNEL_POINTER),
        ("unmapped pointer", UNMAPPED_POINTER),
    ] {
        match sys::console_write_raw(address, 16) {
            Err(error) => println!("selfcheck: console_write({what}) -> {error}"),
            Ok(written) => {
                println!(
                    "selfcheck: console_write({what}) -> accepted {written} bytes (should fail)"
                )
            }
        }
    }
    match sys::ring_wait_raw(u64::MAX) {
        Err(error) => println!("selfcheck: ring_wait(bad ring) -> {error}"),
        Ok(()) => println!("selfcheck: ring_wait(bad ring) -> accepted (should fail)"),
    }
}
