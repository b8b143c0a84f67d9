//! How a server's console bytes become lines the nucleus prints (issue 13, findings 3 and 4).
//!
//! Every line a server writes is printed by the nucleus as `<name>: <text>`: the nucleus adds
//! the prefix unless the line already starts with exactly it (the runtime's `println!` writes
//! it itself), escapes every byte that is not printable ASCII as `\xNN` (so CR, ESC and the
//! like cannot move the cursor or forge a line), and ends every piece it prints with a
//! newline of its own. So no server can print a line that starts like the nucleus', a test
//! verdict or another server's, and [`server_of`] tells server lines apart.
//!
//! Printing happens with interrupts off and the UART is slow (115200 baud is ~115 bytes per
//! 10 ms tick), so output is budgeted on its *escaped* length: each server has a [`Budget`]
//! that the timer tick refills with [`SERVER_BYTES_PER_TICK`], one write prints at most
//! [`WRITE_BYTES_MAX`], and a write made while the budget is spent prints nothing and
//! returns 0 (the runtime yields and tries again). A line that would not fit into one
//! write is cut into pieces, each printed as a line of its own.

/// Module strings that name servers, in slot order (the nucleus starts them in this order).
pub const SERVER_NAMES: [&str; 2] = ["fred-server", "pv-server"];

/// Escaped bytes a server may print per timer tick, on average.
pub const SERVER_BYTES_PER_TICK: i32 = 64;

/// The most one console write (or one `Log` message) prints, prefix and newline included.
pub const WRITE_BYTES_MAX: usize = 256;

/// The server whose line `line` is, if it starts with `<server name>: `.
pub fn server_of(line: &str) -> Option<&'static str> {
    SERVER_NAMES.into_iter().find(|name| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(": "))
    })
}

/// Bytes `byte` takes on the console: 1 if printable ASCII, else 4 (`\xNN`).
pub const fn escaped_len(byte: u8) -> usize {
    if is_printable(byte) { 1 } else { 4 }
}

const fn is_printable(byte: u8) -> bool {
    byte >= 0x20 && byte < 0x7f
}

/// Displays bytes from a server: printable ASCII as is, anything else as `\xNN`.
pub struct Escaped<'a>(pub &'a [u8]);

impl core::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        for &b in self.0 {
            if is_printable(b) {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A server's console allowance: refilled by the tick, spent by what it prints. It may go
/// negative by one write's worth (a write that starts with budget left is printed whole,
/// up to [`WRITE_BYTES_MAX`]), which the next ticks pay back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    balance: i32,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    /// A full tick's worth.
    pub const fn new() -> Self {
        Self {
            balance: SERVER_BYTES_PER_TICK,
        }
    }

    /// One timer tick passed.
    pub fn tick(&mut self) {
        self.balance = (self.balance + SERVER_BYTES_PER_TICK).min(SERVER_BYTES_PER_TICK);
    }

    /// Whether anything may be printed now.
    pub const fn available(&self) -> bool {
        self.balance > 0
    }

    fn spend(&mut self, bytes: usize) {
        self.balance = self.balance.saturating_sub(bytes as i32);
    }

    pub const fn balance(&self) -> i32 {
        self.balance
    }
}

/// One line to print: `<name>: ` if `prefix`, then `text` escaped, then a newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub prefix: bool,
    pub text: &'a [u8],
}

/// Decides what of server `name`'s console write `bytes` is printed now: calls `print` for
/// each line, in order, and returns how many bytes of `bytes` they consumed (0 when the
/// budget is spent). Every line is charged to `budget` with its escaped length.
pub fn write<'a>(
    name: &str,
    bytes: &'a [u8],
    budget: &mut Budget,
    mut print: impl FnMut(Line<'a>),
) -> usize {
    let mut consumed = 0;
    let mut printed = 0;
    while consumed < bytes.len() && budget.available() {
        let rest = &bytes[consumed..];
        let (line, newline) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], true),
            None => (rest, false),
        };
        let prefix = !has_prefix(line, name);
        let fixed = if prefix { name.len() + 2 } else { 0 } + 1;
        let room = WRITE_BYTES_MAX.saturating_sub(printed + fixed);
        let (take, cost) = fit(line, room);
        let whole = take == line.len();
        // Nothing fits, or a line would be cut although a later write could print it whole.
        if (take == 0 && !line.is_empty()) || (!whole && printed > 0) {
            break;
        }
        print(Line {
            prefix,
            text: &line[..take],
        });
        printed += fixed + cost;
        budget.spend(fixed + cost);
        consumed += take + usize::from(whole && newline);
    }
    consumed
}

/// One `Log` message of server `name`: `text` as a single line (its newlines escaped),
/// cut to what one write may print. `None` if the budget is spent (the caller counts it).
pub fn log_line<'a>(name: &str, text: &'a [u8], budget: &mut Budget) -> Option<Line<'a>> {
    if !budget.available() {
        return None;
    }
    let prefix = !has_prefix(text, name);
    let fixed = if prefix { name.len() + 2 } else { 0 } + 1;
    let (take, cost) = fit(text, WRITE_BYTES_MAX.saturating_sub(fixed));
    budget.spend(fixed + cost);
    Some(Line {
        prefix,
        text: &text[..take],
    })
}

fn has_prefix(line: &[u8], name: &str) -> bool {
    line.strip_prefix(name.as_bytes())
        .is_some_and(|rest| rest.starts_with(b": "))
}

/// The longest prefix of `line` whose escaped length is at most `room`: (bytes, cost).
fn fit(line: &[u8], room: usize) -> (usize, usize) {
    let mut cost = 0;
    for (i, &b) in line.iter().enumerate() {
        let c = escaped_len(b);
        if cost + c > room {
            return (i, cost);
        }
        cost += c;
    }
    (line.len(), cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    /// What the nucleus would print for `bytes`, and how much it consumed.
    fn render(name: &str, bytes: &[u8], budget: &mut Budget) -> (String, usize) {
        let mut out = String::new();
        let consumed = write(name, bytes, budget, |line| {
            if line.prefix {
                out += &format!("{name}: ");
            }
            out += &format!("{}\n", Escaped(line.text));
        });
        (out, consumed)
    }

    #[test]
    fn every_line_gets_the_prefix_and_every_unprintable_byte_is_escaped() {
        let mut budget = Budget::new();
        let (out, consumed) = render(
            "pv-server",
            b"nucleus: ready\n\x1b[2Jx\r\npv-server: own",
            &mut budget,
        );
        assert_eq!(consumed, 36);
        assert_eq!(
            out,
            "pv-server: nucleus: ready\npv-server: \\x1b[2Jx\\x0d\npv-server: own\n"
        );
        for line in out.lines() {
            assert_eq!(server_of(line), Some("pv-server"));
        }
    }

    #[test]
    fn another_servers_prefix_is_not_ours() {
        let mut budget = Budget::new();
        let (out, _) = render("pv-server", b"fred-server: restarting x\n", &mut budget);
        assert_eq!(out, "pv-server: fred-server: restarting x\n");
        assert_eq!(server_of("pv-server:x"), None);
        assert_eq!(server_of("nucleus: ready"), None);
        assert_eq!(server_of("fred-server: a"), Some("fred-server"));
    }

    #[test]
    fn a_write_prints_at_most_its_limit_and_a_spent_budget_prints_nothing() {
        let mut budget = Budget::new();
        let junk = [1u8; 1024];
        let (out, consumed) = render("pv-server", &junk, &mut budget);
        assert_eq!(consumed, (WRITE_BYTES_MAX - 12) / 4);
        assert!(out.len() <= WRITE_BYTES_MAX);
        assert!(!budget.available());
        assert_eq!(render("pv-server", &junk, &mut budget), (String::new(), 0));
        // The ticks pay the overdraft back, then one more write goes through.
        let mut ticks = 0;
        while !budget.available() {
            budget.tick();
            ticks += 1;
        }
        assert_eq!(
            ticks,
            (WRITE_BYTES_MAX as i32 / SERVER_BYTES_PER_TICK) as usize
        );
        assert!(render("pv-server", &junk, &mut budget).1 > 0);
    }

    #[test]
    fn a_line_is_not_cut_when_a_later_write_can_print_it_whole() {
        let mut budget = Budget::new();
        let long: Vec<u8> = core::iter::repeat_n(b'a', 240).collect();
        let mut bytes = b"short\n".to_vec();
        bytes.extend_from_slice(&long);
        let (out, consumed) = render("pv-server", &bytes, &mut budget);
        assert_eq!((out.as_str(), consumed), ("pv-server: short\n", 6));
        let (out, consumed) = render("pv-server", &bytes[6..], &mut budget);
        assert_eq!(consumed, 240);
        assert_eq!(out.len(), 11 + 240 + 1);
    }

    #[test]
    fn log_lines_escape_their_newlines_and_are_dropped_when_spent() {
        let mut budget = Budget::new();
        let line = log_line("pv-server", b"a\nnucleus: FATAL", &mut budget).unwrap();
        assert!(line.prefix);
        assert_eq!(format!("{}", Escaped(line.text)), "a\\x0anucleus: FATAL");
        let big = [0u8; 160];
        assert!(log_line("pv-server", &big, &mut budget).is_some());
        assert_eq!(log_line("pv-server", &big, &mut budget), None);
    }

    #[test]
    fn empty_lines_and_a_bare_newline_are_printed_prefixed() {
        let mut budget = Budget::new();
        let (out, consumed) = render("fred-server", b"\n\n", &mut budget);
        assert_eq!(
            (out.as_str(), consumed),
            ("fred-server: \nfred-server: \n", 2)
        );
    }
}
