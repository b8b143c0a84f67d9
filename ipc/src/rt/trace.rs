//! A server's binary trace records: its `defmt` global logger (`defmt::info!` and friends in
//! a server go to the trace).
//!
//! A frame is staged here and handed to the nucleus whole with `TraceWrite`; the nucleus
//! puts it in the trace under this server's slot (a server cannot write another's records).
//! When the nucleus does not take server records (`trace=` below `all`) the first call says
//! so and every later record costs only the staging: nothing here waits or fails loudly.
//! The timestamp is the TSC, as the nucleus' records have it, so the host orders both alike.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::trace::MAX_PAYLOAD;

/// One frame being built (a server is single-threaded and takes no asynchronous events
/// inside its own code, so one stage is enough).
struct Stage {
    bytes: [u8; MAX_PAYLOAD],
    len: usize,
    too_long: bool,
}

struct StageCell(UnsafeCell<Stage>);

// SAFETY: a server runs one thread and nothing interrupts it into Rust code of its own, so
// the stage is never touched by two contexts at once.
unsafe impl Sync for StageCell {}

static STAGE: StageCell = StageCell(UnsafeCell::new(Stage {
    bytes: [0; MAX_PAYLOAD],
    len: 0,
    too_long: false,
}));

/// Set once the nucleus said it does not take this server's records.
static REFUSED: AtomicBool = AtomicBool::new(false);

fn stage() -> &'static mut Stage {
    // SAFETY: see `StageCell`: one context, and each logger call ends its borrow.
    unsafe { &mut *STAGE.0.get() }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: defmt calls acquire, writes, release in order from the one server thread.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        let stage = stage();
        stage.len = 0;
        stage.too_long = false;
    }

    unsafe fn flush() {}

    unsafe fn release() {
        if REFUSED.load(Ordering::Relaxed) {
            return;
        }
        let stage = stage();
        if stage.too_long {
            return;
        }
        if !super::sys::trace_write(&stage.bytes[..stage.len]) {
            REFUSED.store(true, Ordering::Relaxed);
        }
    }

    unsafe fn write(bytes: &[u8]) {
        let stage = stage();
        match stage.bytes.get_mut(stage.len..stage.len + bytes.len()) {
            Some(slot) if !REFUSED.load(Ordering::Relaxed) => {
                slot.copy_from_slice(bytes);
                stage.len += bytes.len();
            }
            _ => stage.too_long = true,
        }
    }
}

defmt::timestamp!("{=u64}", tsc());

/// The server runs (its first record; the nucleus takes it at `trace=all` only, and its
/// refusal ends the server's records, so `trace` below `all` costs one syscall per start).
pub fn started(name: &str, generation: u32) {
    defmt::info!("{=str} running (generation {=u32})", name, generation);
}

fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter (allowed in ring 3: the nucleus leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}
