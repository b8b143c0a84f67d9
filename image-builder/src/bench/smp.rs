//! `bench`'s cross-CPU figures (issue 20 point 6), printed under the one-CPU table:
//!
//! * instructions per cross-CPU event: the same benchmark boot again under `-icount`, but on
//!   two CPUs with pv-server on CPU 1 ([`CMDLINE_EXTRA`]) while fred-server and the `bench`
//!   guest (pinned, [`GUEST_CPU`]) stay on CPU 0, so pv-server's `int3` round trip is
//!   pv-server (CPU 1) → nucleus → fred-server's ring and a reschedule IPI → fred-server
//!   (CPU 0) → its reply and an IPI back → pv-server, and the guest's hypercall round trip
//!   crosses the other way. With `-icount` QEMU runs both vCPUs in turn on one virtual clock
//!   that advances per instruction executed by either, and a halted vCPU executes nothing:
//!   so the TSC ticks of a round trip are the instructions of both CPUs together (the idle
//!   loop's `hlt` and the IPI's delivery included), / [`super::TICKS_PER_INSTRUCTION`];
//! * events per second: pv-server's `events=` stress ([`STRESS_EVENTS`] `int3`s from CPU 1
//!   to fred-server on CPU 0) in plain TCG `-smp 2`, where the TSC runs at the host's rate,
//!   so the figure is wall-clock (and depends on the host and its load).
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{ICOUNT_SHIFT, MEASUREMENTS, Measurement, Range, instructions};
use crate::boot::Boot;
use crate::image::Iso;
use crate::qemu::Qemu;

/// The benchmark's command line gets this on two CPUs.
pub const CMDLINE_EXTRA: &str = "server-cpu=pv-server:1";
/// The `bench` guest's CPU in the two-CPU boot.
pub const GUEST_CPU: u8 = 0;
/// `int3` round trips of the event-rate boot.
pub const STRESS_EVENTS: u32 = 20_000;
/// The line pv-server ends its `events=` loop with.
pub const STRESS_DONE: &str = "pv-server: test option: events: ";

/// QEMU options of the two-CPU benchmark boot.
pub fn qemu_args() -> [String; 4] {
    [
        "-icount".into(),
        format!("shift={ICOUNT_SHIFT},align=off,sleep=off"),
        "-smp".into(),
        "2".into(),
    ]
}

/// The event-rate boot's command line.
pub fn stress_cmdline() -> String {
    format!("{CMDLINE_EXTRA} server-args=pv-server:events={STRESS_EVENTS}")
}

/// Fails unless the boot put pv-server on CPU 1 and the guest on [`GUEST_CPU`].
pub fn check_placement(boot: &Boot, with_guest: bool) -> Result<()> {
    let mut lines = vec![
        "nucleus: 2 cpu(s) online".to_owned(),
        "nucleus: pv-server runs on cpu 1 (server-cpu=)".to_owned(),
    ];
    if with_guest {
        lines.push(format!(
            "nucleus: guest bench runs on cpu {GUEST_CPU} (cpu=)"
        ));
    }
    for line in lines {
        if !boot.lines().any(|l| l == line) {
            bail!(
                "{}",
                boot.report(&format!("the two-CPU boot did not say {line:?}"))
            );
        }
    }
    Ok(())
}

/// pv-server's `events=` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub events: u64,
    pub resumed: u64,
    pub ticks_per_event: u64,
    /// Events per second of the TSC's rate, when pv-server knew it.
    pub per_second: Option<u64>,
}

/// Reads `test option: events: N int3 event(s) raised, R resumed, T TSC ticks (P per
/// event[, E events/s])` from a serial log.
pub fn parse_rate(serial: &str) -> Option<Rate> {
    let line = serial.lines().find(|l| l.starts_with(STRESS_DONE))?;
    let numbers: Vec<u64> = line[STRESS_DONE.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // N, 3 (of int3), R, T, P[, E]
    match numbers[..] {
        [events, 3, resumed, _ticks, per] => Some(Rate {
            events,
            resumed,
            ticks_per_event: per,
            per_second: None,
        }),
        [events, 3, resumed, _ticks, per, rate] => Some(Rate {
            events,
            resumed,
            ticks_per_event: per,
            per_second: Some(rate),
        }),
        _ => None,
    }
}

/// Boots the event-rate ISO in plain TCG on two CPUs until pv-server's result.
pub fn measure_rate(iso: &Iso, timeout: Duration) -> Result<Rate> {
    let boot = Qemu::new(iso)
        .arg("-smp")
        .arg("2")
        .timeout(timeout)
        .until(STRESS_DONE)
        .run()?;
    check_placement(&boot, false)?;
    let Some(rate) = parse_rate(&boot.serial) else {
        bail!(
            "{}",
            boot.report("the event-rate boot printed no events= result")
        );
    };
    if rate.resumed != rate.events {
        bail!("{}", boot.report("events were lost in the event-rate boot"));
    }
    Ok(rate)
}

/// The cross-CPU table: per measurement the one-CPU and the two-CPU minimum (instructions)
/// and what crossing CPUs adds, then the event rate.
pub fn table(
    one: &[Range; MEASUREMENTS],
    two: &[Range; MEASUREMENTS],
    rate: Option<Rate>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nTwo CPUs (QEMU TCG -icount, -smp 2): pv-server on cpu 1; fred-server, the bench guest on cpu {GUEST_CPU}; \
         insns = both CPUs' together"
    );
    let _ = writeln!(
        out,
        "{:<19} {:>11} {:>11} {:>11}  path",
        "measurement", "1-cpu insns", "2-cpu insns", "added"
    );
    for ((measurement, a), b) in Measurement::ALL.into_iter().zip(one).zip(two) {
        let path = match measurement {
            Measurement::Int3Roundtrip => "cross-CPU: cpu 1 -> fred-server on cpu 0 -> back",
            Measurement::HypercallRoundtrip
            | Measurement::BounceRoundtrip
            | Measurement::CallgateRoundtrip => {
                "cross-CPU: guest on cpu 0 -> pv-server on cpu 1 -> back"
            }
            Measurement::NullSyscall => "one CPU (cpu 1), the table lock shared",
            Measurement::RingRoundtrip => "one CPU (cpu 0)",
        };
        let added = b.min as i64 - a.min as i64;
        let sign = if added < 0 { "-" } else { "+" };
        let _ = writeln!(
            out,
            "{:<19} {:>11} {:>11} {:>11}  {path}",
            measurement.name(),
            instructions(a.min),
            instructions(b.min),
            format!("{sign}{}", instructions(added.unsigned_abs())),
        );
    }
    match rate {
        Some(rate) => {
            let per_second = rate
                .per_second
                .map_or("? events/s (TSC rate unknown)".to_owned(), |r| {
                    format!("{r} events/s")
                });
            let _ = writeln!(
                out,
                "cross-CPU event rate (pv-server events={} on cpu 1 -> fred-server on cpu 0, plain TCG -smp 2, \
                 wall clock): {per_second}, {} TSC ticks per round trip",
                rate.events, rate.ticks_per_event
            );
        }
        None => out.push_str("cross-CPU event rate: not measured\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_rate_line_is_read_with_or_without_its_rate() {
        let old = "pv-server: test option: events: 100000 int3 event(s) raised, 100000 resumed, 13400000000 TSC ticks (134000 per event)";
        assert_eq!(
            parse_rate(old),
            Some(Rate {
                events: 100000,
                resumed: 100000,
                ticks_per_event: 134000,
                per_second: None
            })
        );
        let new = "x\npv-server: test option: events: 20000 int3 event(s) raised, 19999 resumed, 2000 TSC ticks (100 per event, 7400 events/s)\n";
        let rate = parse_rate(new).unwrap();
        assert_eq!((rate.resumed, rate.per_second), (19999, Some(7400)));
        assert_eq!(parse_rate("pv-server: test option: events: lots"), None);
        assert_eq!(parse_rate("nothing"), None);
    }

    #[test]
    fn the_table_says_what_crossing_cpus_adds() {
        let one = [Range { min: 800, max: 900 }; MEASUREMENTS];
        let mut two = [Range {
            min: 1600,
            max: 2000,
        }; MEASUREMENTS];
        two[0] = Range { min: 796, max: 800 };
        let rate = Rate {
            events: 20000,
            resumed: 20000,
            ticks_per_event: 100_000,
            per_second: Some(30_000),
        };
        let table = table(&one, &two, Some(rate));
        assert!(
            table.contains("null-syscall                100        99.5        -0.5"),
            "{table}"
        );
        assert!(
            table.contains("int3-roundtrip              100         200        +100  cross-CPU"),
            "{table}"
        );
        assert!(
            table.contains(": 30000 events/s, 100000 TSC ticks per round trip"),
            "{table}"
        );
    }
}
