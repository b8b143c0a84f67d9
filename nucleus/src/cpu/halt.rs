//! Stopping this CPU for good: the end of every path that cannot go on (exit, a failed
//! boot step, a parked CPU).

/// Stops this CPU with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; an NMI may still wake it, hence the loop.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
