//! The interactive serial console: COM1's bytes on the terminal, without the escape
//! sequences that would clear or redraw it.
//!
//! Under UEFI, OVMF mirrors its text console on COM1 and starts by clearing the screen and
//! moving the cursor home (`ESC [2J`, `ESC [01;01H`, `ESC [=3h`): written to the user's
//! terminal, that wipes the build output above. [`TerminalFilter`] keeps text and colours
//! (SGR, `ESC [ … m`) and drops every other escape sequence, also when one is split across
//! two reads.

use std::io::{self, Read, Write};

/// Where the filter is inside an escape sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Text,
    /// After `ESC`.
    Escape,
    /// Inside `ESC [`, with the bytes so far (parameters and intermediates).
    Csi,
}

/// A streaming filter of terminal output: feed it chunks, get the bytes to show.
#[derive(Clone, Debug, Default)]
pub struct TerminalFilter {
    state: State,
    /// The pending `ESC [ …` of a CSI sequence whose final byte has not come yet.
    pending: Vec<u8>,
}

/// Longest CSI sequence kept pending; a longer one is not a sequence and is dropped.
const MAX_CSI: usize = 32;

impl TerminalFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of `input` to write to the terminal.
    pub fn filter(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            match self.state {
                State::Text if byte == 0x1b => self.state = State::Escape,
                State::Text => out.push(byte),
                State::Escape if byte == b'[' => {
                    self.state = State::Csi;
                    self.pending.clear();
                    self.pending.extend_from_slice(b"\x1b[");
                }
                // Any other escape (reset `ESC c`, charset, keypad mode) is two bytes.
                State::Escape => self.state = State::Text,
                State::Csi => {
                    self.pending.push(byte);
                    if (0x40..=0x7e).contains(&byte) {
                        // Final byte: only colours pass, and only without private markers.
                        let params = &self.pending[2..self.pending.len() - 1];
                        let plain = params.iter().all(|b| b.is_ascii_digit() || *b == b';');
                        if byte == b'm' && plain {
                            out.extend_from_slice(&self.pending);
                        }
                        self.state = State::Text;
                    } else if self.pending.len() > MAX_CSI {
                        self.state = State::Text;
                    }
                }
            }
        }
        out
    }
}

/// Copies `from` to `to` through a [`TerminalFilter`] until `from` ends (QEMU exited),
/// flushing after every read so typed characters echo at once.
pub fn copy_filtered(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut filter = TerminalFilter::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        to.write_all(&filter.filter(&buffer[..n]))?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_screen_clearing_is_dropped_and_colours_kept() {
        let ovmf = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: x\r\n\x1b[0m\x1b[37m\x1b[40mfredvisor 0.1.0\r\n";
        assert_eq!(
            TerminalFilter::new().filter(ovmf),
            b"BdsDxe: x\r\n\x1b[0m\x1b[37m\x1b[40mfredvisor 0.1.0\r\n"
        );
    }

    #[test]
    fn other_sequences_are_dropped() {
        let mut filter = TerminalFilter::new();
        assert_eq!(
            filter.filter(b"a\x1bcb\x1b[?1049hc\x1b[Kd\x1b[?25le"),
            b"abcde"
        );
    }

    #[test]
    fn a_sequence_split_across_reads_is_still_recognised() {
        let mut filter = TerminalFilter::new();
        let mut out = filter.filter(b"x\x1b");
        out.extend(filter.filter(b"[2"));
        out.extend(filter.filter(b"Jy\x1b[3"));
        out.extend(filter.filter(b"1mz"));
        assert_eq!(out, b"xy\x1b[31mz");
    }

    #[test]
    fn an_endless_sequence_does_not_swallow_the_console() {
        let mut filter = TerminalFilter::new();
        let mut input = b"\x1b[".to_vec();
        input.extend([b'1'; 40]);
        input.extend(b"text");
        assert_eq!(filter.filter(&input), b"111111111text");
    }

    #[test]
    fn copy_ends_with_the_input() {
        let mut out = Vec::new();
        copy_filtered(&b"ready\x1b[2J\r\n"[..], &mut out).unwrap();
        assert_eq!(out, b"ready\r\n");
    }
}
