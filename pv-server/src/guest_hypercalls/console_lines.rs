//! A guest's console output as lines (issue 15 point 5): `guest NAME: <text>`.
//!
//! Bytes arrive in `console_io` writes of any size; a line ends at LF, CR or CR LF (one end,
//! not two), and is cut once its escaped text reaches [`MAX_LINE`] bytes, so that a guest that
//! never sends a newline still gets its text out and every line fits one console write of
//! pv-server's (`ipc::console::WRITE_BYTES_MAX`, prefixes included). Bytes are escaped by the
//! same rule as every server's console text (`ipc::console::Escaped`: printable ASCII as it
//! is, anything else `\xNN`), so a guest can neither move the cursor of the operator's
//! terminal nor start a fresh line that forges another prefix.

use core::fmt::Write;

use heapless::Vec;
use ipc::console::{Escaped, escaped_len};

/// Longest line, in escaped bytes, before it is cut.
pub const MAX_LINE: usize = 160;

/// Line assembly for one guest.
#[derive(Debug, Default)]
pub struct ConsoleLines {
    line: Vec<u8, MAX_LINE>,
    /// Escaped length of `line`.
    escaped: usize,
    /// The last byte was a CR: an LF right after it ends nothing.
    after_cr: bool,
}

impl ConsoleLines {
    pub const fn new() -> Self {
        Self {
            line: Vec::new(),
            escaped: 0,
            after_cr: false,
        }
    }

    /// Adds `bytes`; every completed line is written to `out` as `guest NAME: <text>\n`.
    pub fn feed(&mut self, name: &str, bytes: &[u8], out: &mut impl Write) {
        for &byte in bytes {
            let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.emit(name, out),
                _ => {
                    if self.escaped + escaped_len(byte) > MAX_LINE {
                        self.emit(name, out);
                    }
                    let _ = self.line.push(byte);
                    self.escaped += escaped_len(byte);
                }
            }
        }
    }

    /// Writes out a partial line (when the guest ends).
    pub fn flush(&mut self, name: &str, out: &mut impl Write) {
        if !self.line.is_empty() {
            self.emit(name, out);
        }
    }

    fn emit(&mut self, name: &str, out: &mut impl Write) {
        let _ = writeln!(out, "guest {name}: {}", Escaped(&self.line));
        self.line.clear();
        self.escaped = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run(chunks: &[&[u8]]) -> String {
        let mut lines = ConsoleLines::new();
        let mut out = String::new();
        for chunk in chunks {
            lines.feed("hello", chunk, &mut out);
        }
        lines.flush("hello", &mut out);
        out
    }

    #[test]
    fn line_ends_and_chunking() {
        assert_eq!(
            run(&[b"one\ntwo\r\nthree\rfour"]),
            "guest hello: one\nguest hello: two\nguest hello: three\nguest hello: four\n"
        );
        // A line split over writes, a CR LF split over writes, an empty line.
        assert_eq!(
            run(&[b"ab", b"c\r", b"\n\n"]),
            "guest hello: abc\nguest hello: \n"
        );
        assert_eq!(run(&[]), "");
    }

    #[test]
    fn non_printable_bytes_are_escaped() {
        assert_eq!(
            run(&[b"\x1b[2J\tok\\ \xff\x00\n"]),
            "guest hello: \\x1b[2J\\x09ok\\ \\xff\\x00\n"
        );
        // Escaped bytes count four towards the cut: 40 of them fill a line.
        let out = run(&[&[0x07; 41]]);
        let lines: std::vec::Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "guest hello: ".to_string() + &"\\x07".repeat(40),
                "guest hello: \\x07".to_string()
            ]
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let text = [b'x'; MAX_LINE + 5];
        let out = run(&[&text]);
        let lines: std::vec::Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "guest hello: ".len() + MAX_LINE);
        assert_eq!(lines[1], "guest hello: xxxxx");
    }

    proptest! {
        #[test]
        fn every_output_line_is_one_prefixed_printable_line(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6)
        ) {
            let refs: std::vec::Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let out = run(&refs);
            for line in out.lines() {
                prop_assert!(line.starts_with("guest hello: "));
                prop_assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{:?}", line);
            }
            prop_assert!(out.is_empty() || out.ends_with('\n'));
        }
    }
}
