//! A `fmt::Write` that starts every line with `NAME: ` (style.md: every server line names
//! its server), over the runtime's console on the target or a `String` in tests.

use core::fmt::{self, Write};

pub struct Prefixed<'n, W> {
    name: &'n str,
    inner: W,
    at_line_start: bool,
}

impl<'n, W: Write> Prefixed<'n, W> {
    pub fn new(name: &'n str, inner: W) -> Self {
        Self {
            name,
            inner,
            at_line_start: true,
        }
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Prefixed<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for piece in s.split_inclusive('\n') {
            if self.at_line_start {
                self.inner.write_str(self.name)?;
                self.inner.write_str(": ")?;
            }
            self.inner.write_str(piece)?;
            self.at_line_start = piece.ends_with('\n');
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_the_prefix_once() {
        let mut out = Prefixed::new("pv-server", String::new());
        write!(out, "a").unwrap();
        write!(out, "b\nc\n").unwrap();
        writeln!(out, "d").unwrap();
        assert_eq!(
            out.into_inner(),
            "pv-server: ab\npv-server: c\npv-server: d\n"
        );
    }
}
