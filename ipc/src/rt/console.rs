//! Console output for servers: a line buffer on the stack, flushed with `console_write`.
//!
//! A server has no console of its own; each `console_write` goes to COM1 through the
//! nucleus. [`Console`] collects one line (up to [`LINE_MAX`] bytes) and writes it in one
//! call, so lines of different servers do not interleave mid-line. [`crate::println!`] starts
//! every line with `<name>: ` (the StartInfo name), as style.md §2 item 14 asks; the nucleus
//! adds that prefix itself to any line that lacks it (`crate::console`).

use core::fmt;

use super::sys;

/// Longest piece written in one `console_write`; a longer line goes out in several pieces.
pub const LINE_MAX: usize = 160;

/// A `fmt::Write` sink that writes whole lines to the console.
///
/// The buffer is a `heapless::Vec`, whose storage is not initialised: making a console is
/// one store (its length), and a console nothing was printed to costs one test to finish
/// or drop. `serve` keeps one console for all messages and [`finish`](Self::finish)es it
/// after each (zeroing 160 bytes per message was 42 instructions of every `int3` round
/// trip, moving the console into `drop` 37 more).
pub struct Console {
    buf: heapless::Vec<u8, LINE_MAX>,
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    pub const fn new() -> Self {
        Self {
            buf: heapless::Vec::new(),
        }
    }

    /// Writes out a line left unfinished (no newline yet), if any: what `drop` does, for a
    /// console that lives on. Inline, one test when nothing is buffered.
    #[inline(always)]
    pub fn finish(&mut self) {
        if !self.buf.is_empty() {
            self.flush();
        }
    }

    /// Writes what is buffered. The nucleus may take less than all of it (its console budget
    /// per tick, `crate::console`): the rest is written once it takes more.
    #[cold]
    #[inline(never)]
    pub fn flush(&mut self) {
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            match sys::console_write(rest) {
                Ok(0) => sys::yield_now(),
                Ok(n) => rest = rest.get(n as usize..).unwrap_or(&[]),
                // Nothing useful to do if the console refuses our own buffer.
                Err(_) => break,
            }
        }
        self.buf.clear();
    }

    fn push(&mut self, byte: u8) {
        if self.buf.is_full() {
            self.flush();
        }
        // Cannot fail: a full buffer was flushed just above.
        let _ = self.buf.push(byte);
        if byte == b'\n' {
            self.flush();
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(|byte| self.push(byte));
        Ok(())
    }
}

impl Drop for Console {
    #[inline(always)]
    fn drop(&mut self) {
        self.finish();
    }
}

/// Prints one line `<name>: <args>` (the body of [`crate::println!`]).
pub fn print_line(args: fmt::Arguments<'_>) {
    use fmt::Write as _;
    let mut console = Console::new();
    let _ = writeln!(console, "{}: {}", super::name(), args);
}

/// Prints a line prefixed with this server's name: `println!("ready, {} guests", n)`.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::rt::console::print_line(::core::format_args!($($arg)*)) };
}
