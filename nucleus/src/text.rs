//! Text from outside the nucleus (boot modules, the command line, servers' console
//! writes), shown so that it cannot drive the terminal.
use core::fmt;

/// Displays bytes from outside the nucleus: printable ASCII as is, anything else escaped.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use core::fmt::Write;
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// One line of thread `name`'s: the prefix where `ipc::console` says it is missing, the text
/// escaped, the nucleus' own newline.
pub fn print_server_line(name: &str, line: ipc::console::Line<'_>) {
    if line.prefix {
        println!("{name}: {}", Escaped(line.text));
    } else {
        println!("{}", Escaped(line.text));
    }
}
