//! The COM1 console: every line the nucleus prints goes through here.
//!
//! One spin lock around the UART, which remembers the CPU holding it. A CPU waits for a
//! console another CPU holds (that writer finishes its line; the console takes no other
//! lock, so it is last in the lock order). A console that this CPU already holds is held by
//! a context this one interrupted (an event nested in a `println!`: an exception in a
//! `Display` impl, an interrupt a CPU model let through): that holder cannot run again
//! before this context returns, so waiting would deadlock (issue 14). The nested writer
//! instead writes its text straight to the UART, starting on a fresh line; the holder's line
//! goes on after it. Port writes are one byte each, so nothing is torn below a byte. Fatal
//! paths (`#DF`, panic) break the lock first with [`force_unlock`], since the holder never
//! runs again. NMI handlers print nothing.
use bsp_x86_64::uart::{COM1, Uart16550};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::{Mutex, MutexGuard};

// SAFETY: COM1 belongs to the nucleus; no server is given access to its ports.
static CONSOLE: Mutex<Uart16550> = Mutex::new(unsafe { Uart16550::new(COM1) });

/// Whether the last byte sent was a newline (or nothing was sent yet): a nested writer
/// starts a fresh line only when it cut one.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

/// The CPU (`PerCpu::index`) holding [`CONSOLE`], or [`NOBODY`].
static OWNER: AtomicU32 = AtomicU32::new(NOBODY);
const NOBODY: u32 = u32::MAX;

/// The console, held by this CPU until dropped.
struct Held(MutexGuard<'static, Uart16550>);

impl Drop for Held {
    fn drop(&mut self) {
        // Before the guard unlocks: nobody may see this CPU as owner of a free lock.
        OWNER.store(NOBODY, Ordering::Release);
    }
}

/// Takes the console, waiting while another CPU holds it; `None` if this CPU holds it
/// already (a context this one interrupted: see the module comment).
fn take() -> Option<Held> {
    let me = crate::cpu::percpu::current().index();
    loop {
        if let Some(guard) = CONSOLE.try_lock() {
            OWNER.store(me, Ordering::Release);
            return Some(Held(guard));
        }
        if OWNER.load(Ordering::Acquire) == me {
            return None;
        }
        core::hint::spin_loop();
    }
}

/// A UART that remembers whether it ended a line.
struct Lines<'a>(&'a mut Uart16550);

impl Write for Lines<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(&last) = s.as_bytes().last() {
            self.0.write_bytes(s.as_bytes());
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The UART behind a console some interrupted context of this CPU holds.
fn nested_uart() -> Uart16550 {
    // SAFETY: the lock holder is a context of this CPU, suspended under this one until it
    // returns, and other CPUs wait for the lock (`take`), so only one context drives COM1
    // at a time; a second handle is just the port number.
    unsafe { Uart16550::new(COM1) }
}

/// Programs the UART. Safe to call more than once (early IDT may print before `init`).
pub fn init() {
    match take() {
        Some(mut held) => held.0.init(),
        None => nested_uart().init(),
    }
}

#[doc(hidden)]
pub fn write_fmt(args: fmt::Arguments<'_>) {
    // Printing can only fail if a `Display` impl fails; nothing useful to do then.
    match take() {
        Some(mut held) => {
            let _ = Lines(&mut held.0).write_fmt(args);
        }
        None => {
            let mut uart = nested_uart();
            if !AT_LINE_START.load(Ordering::Relaxed) {
                uart.write_bytes(b"\n");
            }
            let _ = Lines(&mut uart).write_fmt(args);
        }
    }
}

/// Waits until the UART has sent everything, so an emulator exit does not truncate output.
pub fn drain() {
    match take() {
        Some(mut held) => held.0.drain(),
        None => nested_uart().drain(),
    }
}

/// Breaks the console lock for a fatal path that will never return to the holder.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        OWNER.store(NOBODY, Ordering::Release);
        // SAFETY: only called on fatal paths, after which the interrupted lock holder never
        // runs again; see the module comment. (Another CPU holding it would print on.)
        unsafe { CONSOLE.force_unlock() };
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
