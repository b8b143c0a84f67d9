//! The COM1 console: every line the nucleus prints goes through here.
//!
//! One spin lock around the UART. Fatal paths (`#DF`, panic) must print even when the
//! interrupted code held the lock, so they use [`force_unlock`] first: on the single boot CPU
//! the holder can never run again, so breaking the lock cannot cause a second writer.
use bsp_x86_64::uart::{COM1, Uart16550};
use core::fmt::{self, Write};
use spin::Mutex;

// SAFETY: COM1 belongs to the nucleus; no server is given access to its ports.
static CONSOLE: Mutex<Uart16550> = Mutex::new(unsafe { Uart16550::new(COM1) });

/// Programs the UART. Safe to call more than once (early IDT may print before `init`).
pub fn init() {
    CONSOLE.lock().init();
}

#[doc(hidden)]
pub fn write_fmt(args: fmt::Arguments<'_>) {
    // Printing can only fail if a `Display` impl fails; nothing useful to do then.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Waits until the UART has sent everything, so an emulator exit does not truncate output.
pub fn drain() {
    CONSOLE.lock().drain();
}

/// Breaks the console lock for a fatal path that will never return to the holder.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: only called on fatal paths of the single boot CPU, after which the
        // interrupted lock holder never runs again; see the module comment.
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
