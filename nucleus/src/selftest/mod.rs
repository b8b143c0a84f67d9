//! In-kernel event self-tests, chosen by `selftest=` (issue 4 acceptance, issue 8 point 8).
//!
//! They run on any machine — QEMU, Bochs' FRED model, FRED hardware — and end with one
//! summary line `selftest: N passed, M failed`. A fault test arms an expectation
//! ([`expect`]: vector, and the address to resume at), triggers the fault through a tiny asm
//! probe, and then checks what the dispatcher recorded (vector, RIP, error code, event data)
//! against what it knows it did. `df-recursion`, `early-fault` and `panic` end the boot by design and run alone.
mod any_cpu;
mod expect;
pub mod fred;
mod smp;

pub use any_cpu::early_fault;
pub use expect::recover;

use crate::exit::Status;
use bsp_x86_64::cmdline::SelfTests;
use core::sync::atomic::{AtomicU8, Ordering};
use expect::{ExpectedDoubleFault, summary, verdict};

static DF_EXPECTED: AtomicU8 = AtomicU8::new(ExpectedDoubleFault::None as u8);

/// Recurses until the stack runs into the guard page below it; the depth limit is never
/// reached on a 8 KiB stack (each level uses more than 256 bytes).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 32]);
    if depth == u64::MAX {
        return pad[0];
    }
    core::hint::black_box(recurse(depth + 1)) + pad[(depth % 32) as usize]
}

/// Runs the selected tests; returns the summary status.
pub fn run(tests: SelfTests) -> Option<Status> {
    let mut ran = false;
    for (flag, test) in any_cpu::RESUMABLE
        .into_iter()
        .chain(fred::RESUMABLE)
        .chain(smp::RESUMABLE)
    {
        if tests.contains(flag) {
            test();
            ran = true;
        }
    }
    for (flag, level) in [
        (SelfTests::FRED_SL1_DF, ExpectedDoubleFault::StackLevel1),
        (SelfTests::FRED_SL2_DF, ExpectedDoubleFault::StackLevel2),
    ] {
        if tests.contains(flag) {
            ran = true;
            DF_EXPECTED.store(level as u8, Ordering::Release);
            // Returns only when it cannot run (no FRED): the #DF ends the boot otherwise.
            fred::stack_level_double_fault(level);
            DF_EXPECTED.store(ExpectedDoubleFault::None as u8, Ordering::Release);
        }
    }
    if tests.contains(SelfTests::DF_RECURSION) {
        DF_EXPECTED.store(ExpectedDoubleFault::Recursion as u8, Ordering::Release);
        println!("selftest: df-recursion: recursing until the guard page");
        core::hint::black_box(recurse(0));
        verdict("df-recursion", false, format_args!("recursion returned"));
        ran = true;
    }
    if fred::ring3_pending() {
        // `fred-ring3` decides at the first event from a server: the summary comes then.
        return None;
    }
    ran.then(summary)
}

/// At `nucleus: ready`: the deferred summary's status (a deferred test that still waits
/// fails now: no server event reached it).
pub fn deferred_status() -> Option<Status> {
    if fred::ring3_pending() {
        fred::ring3_gave_up();
    }
    expect::deferred()
}

pub fn double_fault_expected() -> bool {
    DF_EXPECTED.load(Ordering::Acquire) != ExpectedDoubleFault::None as u8
}

/// The `#DF` handler calls this when a `#DF` test was running (its dump in hand): the test
/// passed if the `#DF` arrived on the `#DF` stack, and for the FRED stack-level tests, on
/// SL3 after a fault in the guard page that RSP1 / RSP2 point at.
pub fn double_fault_passed(dump: &ipc::dump::RegisterDump) -> Status {
    match DF_EXPECTED.load(Ordering::Acquire) {
        x if x == ExpectedDoubleFault::StackLevel1 as u8 => {
            fred::stack_level_double_fault_seen(1, dump)
        }
        x if x == ExpectedDoubleFault::StackLevel2 as u8 => {
            fred::stack_level_double_fault_seen(2, dump)
        }
        _ => verdict(
            "df-recursion",
            true,
            format_args!("#DF delivered on the #DF stack"),
        ),
    }
    summary()
}
