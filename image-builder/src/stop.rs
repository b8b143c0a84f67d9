//! When a boot that does not end by itself is stopped: the serial lines QEMU and Bochs runs
//! wait for ([`crate::Qemu::until`], [`crate::Bochs::until`] and their `until_serial` /
//! `until_lines`), judged on complete lines only (a marker line still being written, e.g. a
//! server's line cut by its console budget, is not the whole line yet: stopping there lost
//! its end).
use crate::boot::clean_line;

/// What a run waits for in its serial log; nothing by default (the run ends by itself).
#[derive(Clone, Debug, Default)]
pub struct StopWhen {
    marker: Option<String>,
    condition: Option<fn(&str) -> bool>,
    lines: Vec<String>,
}

impl StopWhen {
    /// Stop once `marker` shows in a complete line.
    pub fn marker(&mut self, marker: &str) {
        self.marker = Some(marker.to_owned());
    }

    /// Stop once `done` holds for the log up to its last complete line.
    pub fn condition(&mut self, done: fn(&str) -> bool) {
        self.condition = Some(done);
    }

    /// Stop once each of `lines` is a whole serial line, in any order.
    pub fn lines(&mut self, lines: &[&str]) {
        self.lines = lines.iter().map(|l| (*l).to_owned()).collect();
    }

    /// Whether anything is awaited at all.
    pub fn waits(&self) -> bool {
        self.marker.is_some() || self.condition.is_some() || !self.lines.is_empty()
    }

    /// True once what is awaited shows in `log`'s complete lines.
    pub fn reached(&self, log: &str) -> bool {
        let complete = complete_lines(log);
        self.marker
            .as_ref()
            .is_some_and(|marker| complete.contains(marker.as_str()))
            || self.condition.is_some_and(|done| done(complete))
            || (!self.lines.is_empty() && {
                let lines: Vec<String> = complete.lines().map(clean_line).collect();
                self.lines.iter().all(|want| lines.contains(want))
            })
    }
}

/// `log` up to and including its last newline (a line still being written is left out).
pub fn complete_lines(log: &str) -> &str {
    log.rfind('\n').map_or("", |end| &log[..=end])
}
