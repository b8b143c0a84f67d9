//! `bench`: issue 7's measurements, booted under QEMU with an instruction-counting clock.
//!
//! Owns the benchmark boot (the command line that asks the nucleus for its ring round trip
//! and pv-server for its null syscall and `int3` round trip, QEMU's `-icount` options), the
//! parsing of the three `bench:` lines (pure, unit-tested) and the table the CLI prints,
//! with the targets to beat. Under `-icount shift=3` TCG advances the guest TSC by exactly
//! [`TICKS_PER_INSTRUCTION`] per instruction, so ticks / 8 = instructions, on any host. The
//! figures are printed, never asserted (style.md §3).
//!
//! `bench --bochs` (issue 14) boots the same benchmark twice in Bochs' FRED CPU model, once
//! with `fred=on` and once with `fred=off`, and prints both deliveries side by side with their
//! ratio. Bochs' TSC advances one tick per instruction, so its ticks are instructions too.

use std::fmt::{self, Write as _};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::bochs::Bochs;
use crate::boot::Boot;
use crate::commands::BuildOptions;
use crate::compile::workspace_root;
use crate::image::{Image, Iso};
use crate::qemu::Qemu;

/// Nucleus options of the benchmark boot: the nucleus' ring round trip (`bench`) and
/// pv-server's own measurements (`server-args=pv-server:bench`).
pub const CMDLINE: &str = "bench server-args=pv-server:bench";
/// `-icount shift=N`: every instruction advances the virtual clock (and the TSC) by 2^N ns.
pub const ICOUNT_SHIFT: u32 = 3;
/// TSC ticks per guest instruction under [`ICOUNT_SHIFT`].
pub const TICKS_PER_INSTRUCTION: u64 = 1 << ICOUNT_SHIFT;
/// Default deadline of the benchmark boot (icount makes TCG slower).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// QEMU options of the benchmark boot: deterministic instruction clock, one CPU.
pub fn qemu_args() -> [String; 4] {
    [
        "-icount".into(),
        format!("shift={ICOUNT_SHIFT},align=off,sleep=off"),
        "-smp".into(),
        "1".into(),
    ]
}

/// One of the three measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measurement {
    /// pv-server: `nop` syscall, Ring3 → nucleus → Ring3.
    NullSyscall,
    /// pv-server: `int3` → nucleus → fred-server (policy: resume) → nucleus → pv-server.
    Int3Roundtrip,
    /// Nucleus: `Ping` over fred-server's event ring and its `Resume` back.
    RingRoundtrip,
    /// The `bench` guest: `xen_version(0)` → nucleus → pv-server → nucleus → guest.
    HypercallRoundtrip,
    /// The `bench` guest: `ud2` → nucleus → pv-server (bounce frame) → the guest's `#UD`
    /// handler → `iret` hypercall → nucleus → pv-server → back after the `ud2`.
    BounceRoundtrip,
    /// The `bench` guest in user mode: `call far` through a DPL 3 gate → nucleus →
    /// pv-server (call-gate emulation, kernel mode on the `stack_switch` stack) → the gate's
    /// target → `iret` hypercall → nucleus → pv-server → back in user mode after the call.
    CallgateRoundtrip,
}

/// Issue 15 point 8: a hypercall round trip costs at most this many instructions more than
/// the `int3` round trip.
pub const HYPERCALL_OVER_INT3: u64 = 100;
/// How many measurements the benchmark boot takes.
pub const MEASUREMENTS: usize = 6;
/// The guest the benchmark boot ships for [`Measurement::HypercallRoundtrip`].
pub const BENCH_GUEST: &str = "guest-bench";

impl Measurement {
    pub const ALL: [Self; MEASUREMENTS] = [
        Self::NullSyscall,
        Self::Int3Roundtrip,
        Self::RingRoundtrip,
        Self::HypercallRoundtrip,
        Self::BounceRoundtrip,
        Self::CallgateRoundtrip,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::NullSyscall => "null-syscall",
            Self::Int3Roundtrip => "int3-roundtrip",
            Self::RingRoundtrip => "ring-roundtrip",
            Self::HypercallRoundtrip => "hypercall-roundtrip",
            Self::BounceRoundtrip => "bounce-roundtrip",
            Self::CallgateRoundtrip => "callgate-roundtrip",
        }
    }

    /// The start of the serial line that carries the figures (`min=A max=B` follows).
    pub const fn line_prefix(self) -> &'static str {
        match self {
            Self::NullSyscall => "pv-server: bench: null-syscall ",
            Self::Int3Roundtrip => "pv-server: bench: int3-roundtrip ",
            Self::RingRoundtrip => "bench: ring-roundtrip ",
            Self::HypercallRoundtrip => "guest bench: bench: hypercall-roundtrip ",
            Self::BounceRoundtrip => "guest bench: bench: bounce-roundtrip ",
            Self::CallgateRoundtrip => "guest bench: bench: callgate-roundtrip ",
        }
    }

    /// The target to beat, in instructions (issue 7 point 9), and where it comes from. The
    /// PV goals are relative (issue 15 point 8: the `int3` round trip + 100), so they follow
    /// the `int3` figure of the same run (`ranges`).
    pub fn target(self, ranges: &[Range; MEASUREMENTS]) -> (u64, String) {
        let int3 = ranges[Self::Int3Roundtrip.index()].min / TICKS_PER_INSTRUCTION;
        let hypercall = int3 + HYPERCALL_OVER_INT3;
        match self {
            Self::NullSyscall => (74, "L4Re/Fiasco null syscall".into()),
            Self::Int3Roundtrip => (800, "issue 17 (aim 500)".into()),
            Self::RingRoundtrip => (587, "L4Re/Fiasco one-way IPC".into()),
            Self::HypercallRoundtrip => (
                hypercall,
                format!("issue 15: int3 round trip ({int3}) + {HYPERCALL_OVER_INT3}"),
            ),
            Self::BounceRoundtrip => (2 * hypercall, "issue 16: two hypercall round trips".into()),
            Self::CallgateRoundtrip => (2 * hypercall, "issue 18: as the bounce round trip".into()),
        }
    }

    fn index(self) -> usize {
        match self {
            Self::NullSyscall => 0,
            Self::Int3Roundtrip => 1,
            Self::RingRoundtrip => 2,
            Self::HypercallRoundtrip => 3,
            Self::BounceRoundtrip => 4,
            Self::CallgateRoundtrip => 5,
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Smallest and largest sample of a measurement, in TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

/// Parses one serial line: `<prefix>min=A max=B` (further `key=value` fields such as
/// `rounds=N` are ignored). `None` for any other line, including a malformed `bench:` line
/// (a missing or non-decimal `min`/`max`, or `min > max`).
pub fn parse_line(line: &str) -> Option<(Measurement, Range)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let measurement = Measurement::ALL
        .into_iter()
        .find(|m| line.starts_with(m.line_prefix()))?;
    let fields = &line[measurement.line_prefix().len()..];
    let (mut min, mut max) = (None, None);
    for field in fields.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let slot = match key {
            "min" => &mut min,
            "max" => &mut max,
            _ => continue,
        };
        if slot.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = Some(value.parse::<u64>().ok()?);
    }
    let range = Range {
        min: min?,
        max: max?,
    };
    (range.min <= range.max).then_some((measurement, range))
}

/// The first well-formed line of each measurement in a serial log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Results([Option<Range>; MEASUREMENTS]);

impl Results {
    pub fn parse(serial: &str) -> Self {
        let mut results = Self::default();
        for (measurement, range) in serial.lines().filter_map(parse_line) {
            results.0[measurement.index()].get_or_insert(range);
        }
        results
    }

    pub fn get(&self, measurement: Measurement) -> Option<Range> {
        self.0[measurement.index()]
    }

    /// Measurements without a well-formed line, in [`Measurement::ALL`] order.
    pub fn missing(&self) -> Vec<Measurement> {
        Measurement::ALL
            .into_iter()
            .filter(|m| self.get(*m).is_none())
            .collect()
    }

    /// Every range, or the missing measurements.
    pub fn complete(&self) -> Result<[Range; MEASUREMENTS], Vec<Measurement>> {
        match self.0 {
            [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] => Ok([a, b, c, d, e, f]),
            _ => Err(self.missing()),
        }
    }
}

/// True once the log has all three lines (the stop condition of the benchmark boot).
pub fn all_lines_present(serial: &str) -> bool {
    Results::parse(serial).missing().is_empty()
}

/// `ticks` as instructions: a whole number, or one decimal when `ticks` is not a multiple
/// of [`TICKS_PER_INSTRUCTION`].
pub fn instructions(ticks: u64) -> String {
    if ticks.is_multiple_of(TICKS_PER_INSTRUCTION) {
        (ticks / TICKS_PER_INSTRUCTION).to_string()
    } else {
        format!("{:.1}", ticks as f64 / TICKS_PER_INSTRUCTION as f64)
    }
}

/// The table `image-builder bench` prints: per measurement min and max in ticks and in
/// instructions, the minimum as a multiple of the target, the target (instructions) and
/// where it comes from.
pub fn table(ranges: &[Range; MEASUREMENTS]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "QEMU TCG, -icount shift={ICOUNT_SHIFT} ({TICKS_PER_INSTRUCTION} TSC ticks = 1 instruction), 1 CPU; \
         instructions = ticks / {TICKS_PER_INSTRUCTION}"
    );
    let _ = writeln!(
        out,
        "{:<19} {:>11} {:>11} {:>11} {:>11} {:>11} {:>7}  source of the target",
        "measurement", "min ticks", "max ticks", "min insns", "max insns", "min/target", "target"
    );
    for (measurement, range) in Measurement::ALL.into_iter().zip(ranges) {
        let (target, source) = measurement.target(ranges);
        let ratio = range.min as f64 / (target * TICKS_PER_INSTRUCTION) as f64;
        let _ = writeln!(
            out,
            "{:<19} {:>11} {:>11} {:>11} {:>11} {:>11} {target:>7}  {source}",
            measurement.name(),
            range.min,
            range.max,
            instructions(range.min),
            instructions(range.max),
            format!("{ratio:.1}x"),
        );
    }
    out
}

/// The line `bench` prints under the table: the benchmark boot's wall-clock time from QEMU's
/// start to `nucleus: ready` (under `-icount`, so slower than a plain TCG boot).
pub fn ready_line(ready_after: Option<Duration>) -> String {
    match ready_after {
        Some(after) => format!(
            "boot to \"{}\": {:.2} s (wall clock, this -icount boot)\n",
            ipc::markers::READY,
            after.as_secs_f64()
        ),
        None => format!("boot to \"{}\": not seen\n", ipc::markers::READY),
    }
}

/// A plain UEFI boot (OVMF, TCG without `-icount`, as `run --uefi` boots): from QEMU's start
/// to `nucleus: ready`, wall clock and QEMU's CPU time (the steadier on a loaded host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UefiBoot {
    pub wall: Duration,
    pub cpu: Option<Duration>,
}

/// Boots `target/fredvisor-bench-uefi.iso` (the default image, no benchmark options) under
/// OVMF until `nucleus: ready`.
fn measure_uefi(timeout: Duration) -> Result<UefiBoot> {
    let output = workspace_root().join("target/fredvisor-bench-uefi.iso");
    Qemu::from_path(&output).uefi(true).check_tools()?;
    let iso = Image::new().output(output).build()?;
    let boot = Qemu::new(&iso)
        .uefi(true)
        .timeout(timeout)
        .until(ipc::markers::READY)
        .run()?;
    match boot.ready_after {
        Some(wall) => Ok(UefiBoot {
            wall,
            cpu: boot.ready_cpu,
        }),
        None => bail!(
            "{}",
            boot.report(&format!("expected {:?}", ipc::markers::READY))
        ),
    }
}

/// The line `bench` prints for the UEFI boot (`target/fredvisor-bench-uefi.iso` under OVMF),
/// or why it is missing.
pub fn uefi_line(uefi: &Result<UefiBoot, String>) -> String {
    match uefi {
        Ok(UefiBoot { wall, cpu }) => {
            let cpu = match cpu {
                Some(cpu) => format!(", {:.2} s of QEMU's CPU", cpu.as_secs_f64()),
                None => String::new(),
            };
            format!(
                "UEFI boot to \"{}\": {:.2} s (wall clock{cpu}; OVMF, TCG without -icount)\n",
                ipc::markers::READY,
                wall.as_secs_f64()
            )
        }
        Err(why) => format!("UEFI boot: not measured: {why}\n"),
    }
}

/// The figures as JSON (`bench --json FILE`), for comparing a later change with this one:
/// per measurement min and max in ticks and in instructions and the target; the boot time;
/// the UEFI boot's time ([`UefiBoot`]), wall clock and CPU.
pub fn json(
    ranges: &[Range; MEASUREMENTS],
    ready_after: Option<Duration>,
    uefi: Option<UefiBoot>,
) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(
        out,
        "  \"clock\": \"qemu-tcg-icount-shift-{ICOUNT_SHIFT}\",\n  \"ticks_per_instruction\": {TICKS_PER_INSTRUCTION},"
    );
    match ready_after {
        Some(after) => {
            let _ = writeln!(out, "  \"boot_to_ready_s\": {:.3},", after.as_secs_f64());
        }
        None => out.push_str("  \"boot_to_ready_s\": null,\n"),
    }
    let seconds = |d: Option<Duration>| match d {
        Some(d) => format!("{:.3}", d.as_secs_f64()),
        None => "null".to_owned(),
    };
    let _ = writeln!(
        out,
        "  \"uefi_boot_to_ready_s\": {},\n  \"uefi_boot_to_ready_cpu_s\": {},",
        seconds(uefi.map(|u| u.wall)),
        seconds(uefi.and_then(|u| u.cpu))
    );
    out.push_str("  \"measurements\": {\n");
    for (i, (measurement, range)) in Measurement::ALL.into_iter().zip(ranges).enumerate() {
        let comma = if i + 1 < MEASUREMENTS { "," } else { "" };
        let _ = writeln!(
            out,
            "    \"{}\": {{\"min_ticks\": {}, \"max_ticks\": {}, \"min_insns\": {}, \"max_insns\": {}, \"target_insns\": {}}}{comma}",
            measurement.name(),
            range.min,
            range.max,
            instructions(range.min),
            instructions(range.max),
            measurement.target(ranges).0,
        );
    }
    out.push_str("  }\n}\n");
    out
}

/// The first line of [`table`], which also marks the table's fenced block in README.md.
const TABLE_HEAD: &str = "QEMU TCG, -icount shift=";

/// The byte range of the table inside README.md's fenced block that starts with
/// [`TABLE_HEAD`] (the lines between the fences).
fn readme_table_range(readme: &str) -> Option<std::ops::Range<usize>> {
    let start = readme.find(&format!("```\n{TABLE_HEAD}"))? + "```\n".len();
    let len = readme[start..].find("```")?;
    Some(start..start + len)
}

/// The table as README.md shows it.
pub fn readme_table(readme: &str) -> Option<&str> {
    readme_table_range(readme).map(|range| &readme[range])
}

/// README.md with `table` in place of the one it shows.
pub fn readme_with_table(readme: &str, table: &str) -> Result<String> {
    let Some(range) = readme_table_range(readme) else {
        bail!("README.md has no fenced block starting with {TABLE_HEAD:?}");
    };
    Ok(format!(
        "{}{table}{}",
        &readme[..range.start],
        &readme[range.end..]
    ))
}

/// The minimum ticks per measurement in a table (as [`table`] prints it), for comparing the
/// README's figures with a new run.
pub fn table_minimums(table: &str) -> Vec<(Measurement, Option<u64>)> {
    Measurement::ALL
        .into_iter()
        .map(|m| {
            let min = table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(m.name()))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok());
            (m, min)
        })
        .collect()
}

/// Boots `iso` (built with [`CMDLINE`]) under `-icount` and stops once all three lines are
/// in. Fails with the missing measurements (and the serial log) otherwise, or on a panic.
pub fn measure(iso: &Iso, timeout: Duration) -> Result<([Range; MEASUREMENTS], Boot)> {
    measure_with(iso, timeout, qemu_args())
}

/// [`measure`] with these QEMU options (the two-CPU boot: [`smp::qemu_args`]).
pub fn measure_with(
    iso: &Iso,
    timeout: Duration,
    args: [String; 4],
) -> Result<([Range; MEASUREMENTS], Boot)> {
    let mut qemu = Qemu::new(iso)
        .timeout(timeout)
        .until_serial(all_lines_present);
    for arg in args {
        qemu = qemu.arg(arg);
    }
    let boot = qemu.run()?;
    if boot.serial.contains(ipc::markers::PANIC) {
        bail!(
            "{}",
            boot.report("the nucleus panicked during the benchmark")
        );
    }
    match Results::parse(&boot.serial).complete() {
        Ok(ranges) => Ok((ranges, boot)),
        Err(missing) => {
            let lines: Vec<String> = missing
                .iter()
                .map(|m| format!("{} (`{}min=… max=…`)", m.name(), m.line_prefix()))
                .collect();
            bail!(
                "{}",
                boot.report(&format!(
                    "bench: no {} line before the boot ended",
                    lines.join(", ")
                ))
            )
        }
    }
}

/// Fails unless the benchmark boot's FRED decision is `decision` (so a column says which
/// delivery it really measured), or on a panic; else the three ranges.
fn bench_ranges(boot: &Boot, decision: &str) -> Result<[Range; MEASUREMENTS]> {
    if boot.serial.contains(ipc::markers::PANIC) {
        bail!(
            "{}",
            boot.report("the nucleus panicked during the benchmark")
        );
    }
    if !boot.lines().any(|l| l == decision) {
        bail!(
            "{}",
            boot.report(&format!("the benchmark boot did not decide {decision:?}"))
        );
    }
    Results::parse(&boot.serial).complete().map_err(|missing| {
        let names: Vec<&str> = missing.iter().map(|m| m.name()).collect();
        anyhow::anyhow!(
            "{}",
            boot.report(&format!(
                "bench: no {} line before the boot ended",
                names.join(", ")
            ))
        )
    })
}

/// The FRED decision lines of the two Bochs benchmark boots.
pub const BOCHS_FRED_DECISION: &str = "fred: enabled (cpu has FRED+LKGS)";
pub const BOCHS_IDT_DECISION: &str = "fred: disabled (fred=off)";

/// Boots `iso` in Bochs and stops once all three lines are in; checks the decision line.
pub fn measure_bochs(
    iso: &Iso,
    timeout: Duration,
    decision: &str,
) -> Result<([Range; MEASUREMENTS], Boot)> {
    let boot = Bochs::new(iso)
        .timeout(timeout)
        .until_serial(all_lines_present)
        .run()?;
    let ranges = bench_ranges(&boot, decision)?;
    Ok((ranges, boot))
}

/// The table of `bench --bochs`: per measurement FRED's and the IDT's min and max (ticks =
/// instructions) and FRED's minimum as a fraction of the IDT's.
pub fn bochs_table(fred: &[Range; MEASUREMENTS], idt: &[Range; MEASUREMENTS]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Bochs {} (FRED+LKGS), 1 CPU, TSC = 1 tick per instruction; FRED: fred=on, IDT: fred=off",
        crate::bochs::CPU_MODEL
    );
    let _ = writeln!(
        out,
        "{:<19} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "FRED min", "FRED max", "IDT min", "IDT max", "FRED/IDT"
    );
    for ((measurement, f), i) in Measurement::ALL.into_iter().zip(fred).zip(idt) {
        let ratio = f.min as f64 / i.min.max(1) as f64;
        let _ = writeln!(
            out,
            "{:<19} {:>9} {:>9} {:>9} {:>9} {:>9}",
            measurement.name(),
            f.min,
            f.max,
            i.min,
            i.max,
            format!("{ratio:.2}"),
        );
    }
    out
}

/// Options of the CLI's `bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Build inputs; [`CMDLINE`] is appended to the command line. Default ISO:
    /// `target/fredvisor-bench.iso`.
    pub build: BuildOptions,
    pub timeout: Duration,
    /// Also write the table into README.md (its `## Measuring` block).
    pub update_readme: bool,
    /// Boot in Bochs twice (`fred=on`, `fred=off`) instead of QEMU.
    pub bochs: bool,
    /// Also write the figures as JSON ([`json`]) to this file.
    pub json: Option<std::path::PathBuf>,
    /// Follow one sample of this measurement instruction by instruction instead
    /// ([`crate::profile`]): the sample-th (1-based).
    pub profile: Option<(crate::profile::Target, u32)>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            build: BuildOptions::default(),
            timeout: DEFAULT_TIMEOUT,
            update_readme: false,
            bochs: false,
            json: None,
            profile: None,
        }
    }
}

/// `image` with the `bench` guest (built here) for the hypercall round trip.
pub fn with_bench_guest(image: crate::image::Image, verbose: bool) -> Result<crate::image::Image> {
    with_bench_guest_on(image, verbose, None)
}

/// [`with_bench_guest`], the guest pinned to `cpu` if given.
pub fn with_bench_guest_on(
    image: crate::image::Image,
    verbose: bool,
    cpu: Option<u8>,
) -> Result<crate::image::Image> {
    let built = crate::compile::build_target(
        &crate::tools::Toolbox::from_env(),
        &workspace_root(),
        crate::compile::SERVER_BUILD,
        &[BENCH_GUEST],
        verbose,
    )?;
    let Some(path) = built.into_iter().next() else {
        bail!("cargo built no {BENCH_GUEST}");
    };
    let guest = crate::guest::GuestFile::new("bench", path).mem(4);
    Ok(image.guest(match cpu {
        Some(cpu) => guest.cpu(cpu),
        None => guest,
    }))
}

/// The benchmark image: the build options, `extra` on the command line, the `bench` guest.
fn bench_image(
    options: &BenchOptions,
    extra: &str,
    output: std::path::PathBuf,
) -> Result<crate::image::Image> {
    with_bench_guest(options.build.image(extra, output), options.build.verbose)
}

/// `bench --bochs`: the benchmark ISO with `fred=on` and with `fred=off`, each booted in
/// Bochs; the side-by-side table.
fn run_bochs(options: &BenchOptions) -> Result<String> {
    if options.update_readme {
        bail!("--update-readme writes the QEMU table; run it without --bochs");
    }
    let target = workspace_root().join("target");
    Bochs::from_path(&target.join("fredvisor-bench-fred.iso")).check_tools()?;
    let mut ranges = Vec::new();
    for (fred, decision, iso) in [
        ("fred=on", BOCHS_FRED_DECISION, "fredvisor-bench-fred.iso"),
        ("fred=off", BOCHS_IDT_DECISION, "fredvisor-bench-idt.iso"),
    ] {
        let image = bench_image(options, &format!("{CMDLINE} {fred}"), target.join(iso))?;
        let iso = image.build()?;
        let (range, _boot) = measure_bochs(&iso, options.timeout, decision)?;
        ranges.push(range);
    }
    Ok(bochs_table(&ranges[0], &ranges[1]))
}

/// `bench --profile`: the benchmark boot held by QEMU's GDB server while one sample is
/// single-stepped ([`crate::profile::follow`]); the per-phase, per-function report.
fn run_profile(
    options: &BenchOptions,
    target: crate::profile::Target,
    sample: u32,
) -> Result<String> {
    let output = workspace_root().join("target/fredvisor-bench.iso");
    Qemu::from_path(&output).check_tools()?;
    let iso = bench_image(options, CMDLINE, output)?.build()?;
    let elfs = crate::profile::Elfs {
        nucleus: iso.nucleus_elf().to_path_buf(),
        users: iso
            .server_elfs()
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .chain([(
                crate::profile::HYPERCALL_GUEST.to_owned(),
                workspace_root()
                    .join("target")
                    .join(crate::compile::SERVER_BUILD.target_dir)
                    .join(crate::tools::KERNEL_TARGET)
                    .join("release")
                    .join(BENCH_GUEST),
            )])
            .collect(),
    };
    // A free port: bound by the OS, released for QEMU.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut qemu = Qemu::new(&iso)
        .timeout(options.timeout.max(Duration::from_secs(600)))
        .until_serial(all_lines_present)
        .arg("-gdb")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("-S");
    for arg in qemu_args() {
        qemu = qemu.arg(arg);
    }
    let boot = std::thread::spawn(move || qemu.run());
    let followed = crate::profile::follow(port, &elfs, target, sample);
    let boot = boot
        .join()
        .map_err(|_| anyhow::anyhow!("the QEMU thread panicked"))?;
    let phases = followed?;
    boot?;
    Ok(crate::profile::report(target, sample, &phases))
}

/// `bench`: builds the benchmark ISO, boots it and returns the table to print.
pub fn run(options: &BenchOptions) -> Result<String> {
    options.build.check_cmdline()?;
    if options.bochs {
        return run_bochs(options);
    }
    if let Some((target, sample)) = options.profile {
        return run_profile(options, target, sample);
    }
    let default_output = workspace_root().join("target/fredvisor-bench.iso");
    Qemu::from_path(&default_output).check_tools()?;
    let iso = bench_image(options, CMDLINE, default_output)?.build()?;
    let (ranges, boot) = measure(&iso, options.timeout)?;
    let table = table(&ranges);
    let uefi = measure_uefi(options.timeout).map_err(|e| {
        let first = e.to_string();
        first.lines().next().unwrap_or_default().to_owned()
    });
    if let Some(path) = &options.json {
        std::fs::write(path, json(&ranges, boot.ready_after, uefi.clone().ok()))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote the figures into {}", path.display());
    }
    if options.update_readme {
        let path = workspace_root().join("README.md");
        let readme = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        std::fs::write(&path, readme_with_table(&readme, &table)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote the table into {}", path.display());
    }
    let two_cpus = match measure_two_cpus(options, &ranges) {
        Ok(table) => table,
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            format!("\nTwo CPUs: not measured: {first}\n")
        }
    };
    Ok(table + &ready_line(boot.ready_after) + &uefi_line(&uefi) + &two_cpus)
}

/// The two-CPU benchmark boot and the event-rate boot ([`smp`]): their table.
fn measure_two_cpus(options: &BenchOptions, one: &[Range; MEASUREMENTS]) -> Result<String> {
    let target = workspace_root().join("target");
    let image = with_bench_guest_on(
        options.build.image(
            &format!("{CMDLINE} {}", smp::CMDLINE_EXTRA),
            target.join("fredvisor-bench-smp.iso"),
        ),
        options.build.verbose,
        Some(smp::GUEST_CPU),
    )?;
    let (two, boot) = measure_with(&image.build()?, options.timeout, smp::qemu_args())?;
    smp::check_placement(&boot, true)?;
    let rate_image = options.build.image(
        &smp::stress_cmdline(),
        target.join("fredvisor-bench-rate.iso"),
    );
    let rate = smp::measure_rate(&rate_image.build()?, options.timeout)?;
    Ok(smp::table(one, &two, Some(rate)))
}

pub mod smp;

#[cfg(test)]
mod tests;
