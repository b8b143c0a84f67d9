//! Ending a test run: QEMU's `isa-debug-exit` or Bochs' shutdown port, chosen by `exit=`.
//!
//! Only a command-line option arms these ports, so a bare-metal boot never writes to them.
pub use crate::cpu::halt::halt_forever;
use bsp_x86_64::port::outb;
use core::sync::atomic::{AtomicU8, Ordering};
use ipc::markers::{BOCHS_SHUTDOWN_PORT, QEMU_EXIT_FAILURE, QEMU_EXIT_PORT, QEMU_EXIT_SUCCESS};

const NONE: u8 = 0;
const QEMU: u8 = 1;
const BOCHS: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(NONE);

/// How a run ends when it is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
}

pub fn arm_qemu() {
    MODE.store(QEMU, Ordering::Relaxed);
}

pub fn arm_bochs() {
    MODE.store(BOCHS, Ordering::Relaxed);
}

/// Ends the emulator run if an exit was armed; otherwise halts this CPU forever.
pub fn exit(status: Status) -> ! {
    crate::trace::flush();
    crate::console::drain();
    match MODE.load(Ordering::Relaxed) {
        QEMU => {
            let code = match status {
                Status::Success => QEMU_EXIT_SUCCESS,
                Status::Failure => QEMU_EXIT_FAILURE,
            };
            // SAFETY: armed by `exit=qemu`: the user told us port 0xf4 is QEMU's
            // isa-debug-exit device, whose only effect is to end the emulator.
            unsafe { outb(QEMU_EXIT_PORT, code) };
        }
        BOCHS => {
            for &b in b"Shutdown" {
                // SAFETY: armed by `exit=bochs`: port 0x8900 is Bochs' shutdown port.
                unsafe { outb(BOCHS_SHUTDOWN_PORT, b) };
            }
        }
        _ => {}
    }
    halt_forever()
}
