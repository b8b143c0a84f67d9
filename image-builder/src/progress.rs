//! One progress line per pipeline step, with its duration: `build nucleus ... 12.3 s`.
//!
//! Lines go to stderr (the test harness captures them per test and shows them on failure);
//! stdout stays free for the serial console of an interactive `run`.

use std::io::Write as _;
use std::time::{Duration, Instant};

/// A step in progress: its name is printed at once, its duration when it ends.
#[must_use = "a step prints its duration only when finished"]
pub struct Step {
    name: &'static str,
    started: Instant,
    /// The name was printed on a line of its own (other output follows before the end).
    own_line: bool,
}

impl Step {
    pub fn start(name: &'static str) -> Self {
        eprint!("{name} ... ");
        let _ = std::io::stderr().flush();
        Self {
            name,
            started: Instant::now(),
            own_line: false,
        }
    }

    /// For a step whose own output (a serial console) goes to the terminal meanwhile: the
    /// name is announced on its own line and repeated with the duration at the end.
    pub fn start_own_line(name: &'static str, announcement: &str) -> Self {
        eprintln!("{name}: {announcement}");
        Self {
            name,
            started: Instant::now(),
            own_line: true,
        }
    }

    fn prefix(&self) -> String {
        if self.own_line {
            format!("{} ... ", self.name)
        } else {
            String::new()
        }
    }

    /// A step that was skipped because its result is already there.
    pub fn cached(name: &'static str) {
        eprintln!("{name} ... cached");
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the line with the duration and `detail` (e.g. ` (4.1 MiB)`).
    pub fn done(self, detail: &str) -> Duration {
        let elapsed = self.elapsed();
        eprintln!("{}{}{detail}", self.prefix(), format_duration(elapsed));
        elapsed
    }

    pub fn failed(self) {
        eprintln!(
            "{}failed after {}",
            self.prefix(),
            format_duration(self.elapsed())
        );
    }
}

/// `12.3 s`
pub fn format_duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `4.1 MiB`, `812 KiB`, `17 B`
pub fn format_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_short() {
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(format_size(4_299_161), "4.1 MiB");
        assert_eq!(format_size(812 * 1024 + 5), "812 KiB");
        assert_eq!(format_size(17), "17 B");
    }
}
