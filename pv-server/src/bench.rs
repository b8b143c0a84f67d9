//! The Ring3 side of issue 7's measurements (`bench` option): null syscall and `int3`.
//!
//! Each sample is one `rdtsc` pair around one operation, minus the cost of an empty pair
//! (the smallest of [`CALIBRATION_ROUNDS`] empty pairs), so the figures are the operation's
//! own cost in raw TSC ticks; the host converts (under `-icount shift=3`, ticks / 8 =
//! instructions). Only min and max are printed: figures, not assertions (style.md §3).

/// Samples per measurement.
pub const SAMPLES: u32 = 1000;
/// Empty `rdtsc` pairs timed to find the pair's own cost.
pub const CALIBRATION_ROUNDS: u32 = 64;

/// Smallest and largest sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinMax {
    pub min: u64,
    pub max: u64,
}

/// Collects samples, each corrected by the empty-pair cost.
#[derive(Clone, Copy, Debug)]
pub struct Samples {
    overhead: u64,
    range: Option<MinMax>,
}

impl Samples {
    pub const fn new(overhead: u64) -> Self {
        Self {
            overhead,
            range: None,
        }
    }

    /// Adds the sample `start..end` (a TSC that went backwards counts as 0).
    pub fn add(&mut self, start: u64, end: u64) {
        let ticks = end.saturating_sub(start).saturating_sub(self.overhead);
        self.range = Some(match self.range {
            None => MinMax {
                min: ticks,
                max: ticks,
            },
            Some(MinMax { min, max }) => MinMax {
                min: min.min(ticks),
                max: max.max(ticks),
            },
        });
    }

    pub const fn result(&self) -> Option<MinMax> {
        self.range
    }
}

#[cfg(target_os = "none")]
pub use target::run;

#[cfg(target_os = "none")]
mod target {
    use super::*;
    use ipc::println;
    use ipc::rt::{cpu, sys};

    /// The cost of an empty `rdtsc` pair.
    fn overhead() -> u64 {
        (0..CALIBRATION_ROUNDS)
            .map(|_| {
                let start = cpu::rdtsc();
                let end = cpu::rdtsc();
                end.saturating_sub(start)
            })
            .min()
            .unwrap_or(0)
    }

    fn measure(what: &str, overhead: u64, mut operation: impl FnMut()) {
        let mut samples = Samples::new(overhead);
        for _ in 0..SAMPLES {
            let start = cpu::rdtsc();
            operation();
            let end = cpu::rdtsc();
            samples.add(start, end);
        }
        match samples.result() {
            Some(MinMax { min, max }) => println!("bench: {what} min={min} max={max}"),
            None => println!("bench: {what} no samples"),
        }
    }

    /// Runs both measurements and prints one line each.
    pub fn run() {
        let overhead = overhead();
        println!("bench: {SAMPLES} samples each, rdtsc pair overhead {overhead} ticks subtracted");
        if let Err(error) = sys::nop() {
            println!("bench: null-syscall unavailable: nop -> {error}");
        } else {
            measure("null-syscall", overhead, || {
                let _ = sys::nop();
            });
        }
        measure("int3-roundtrip", overhead, cpu::breakpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_subtract_overhead_and_keep_extremes() {
        let mut samples = Samples::new(10);
        assert_eq!(samples.result(), None);
        samples.add(100, 150);
        samples.add(200, 205); // below the overhead: 0
        samples.add(300, 1300);
        samples.add(500, 400); // TSC went backwards: 0
        assert_eq!(samples.result(), Some(MinMax { min: 0, max: 990 }));
    }
}
