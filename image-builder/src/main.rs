//! image-builder CLI: parses arguments and calls `image_builder::commands`.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use image_builder::bench::{self, BenchOptions};
use image_builder::commands::{self, BuildOptions, EXIT_ERROR, RunOptions};
use image_builder::guest::GuestFile;
use image_builder::qemu::Accel;
use image_builder::trace::{self, Elfs};
use image_builder::{NamedFile, nucleus_options, shutdown};

/// Build fredvisor's hybrid BIOS+UEFI ISO and boot it in QEMU.
///
/// Without a subcommand, `build` runs. The build options may come before or after the
/// subcommand. From anywhere in the repository, `cargo fv ARGS` is
/// `cargo run -p image-builder -- ARGS`.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: BuildArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build the nucleus (and servers) and write target/fredvisor.iso (the default).
    ///
    /// The ISO boots under BIOS and UEFI; write it to a USB stick with dd. GRUB's menu has
    /// three entries: default (fred=auto), fred=off and fred=on.
    Build,
    /// Build, then boot in QEMU (TCG) or Bochs (--bochs) with COM1 on this terminal.
    ///
    /// Adds `exit=qemu` to the nucleus command line so the run ends by itself after
    /// `nucleus: ready` (or a panic); --stay keeps the nucleus halted instead. With
    /// --guest, the run ends when the last guest ended (see --guest). The image is
    /// target/fredvisor-run.iso, so target/fredvisor.iso stays free of `exit=qemu`.
    ///
    /// Exit status: 0 success, 1 the nucleus reported failure (panic), 2 error before the
    /// boot (missing tool, build failure, bad option), 3 QEMU ended otherwise (e.g. triple
    /// fault), 124 timeout, 128 + N when image-builder got signal N (QEMU is ended first).
    /// Under --bochs, 0 and 1 come from the serial log (see --bochs).
    Run(RunArgs),
    /// Build with `bench server-args=pv-server:bench`, boot in QEMU with a deterministic
    /// instruction clock and print issue 7's measurements as a table.
    ///
    /// QEMU runs with `-icount shift=3,align=off,sleep=off -smp 1`: the guest TSC advances
    /// exactly 8 ticks per instruction, so instructions = ticks / 8 on any host. Prints min
    /// and max of the null syscall, the int3 round trip and the ring round trip, in ticks and
    /// in instructions, with the targets to beat (L4Re/Fiasco). The image is
    /// target/fredvisor-bench.iso.
    ///
    /// Exit status: 0 with the table, 2 on an error (missing tool, build failure, a
    /// measurement line missing at the deadline, a panic).
    Bench(BenchArgs),
    /// Decode a raw binary trace (COM2 of a `trace=` boot, e.g. the FILE.raw that
    /// `run --trace FILE` keeps) with the nucleus' and servers' ELFs; prints one line per
    /// record, timestamp (TSC) first.
    ///
    /// The ELFs are the last build's under target/ (unstripped), or --nucleus/--server. A
    /// truncated or corrupt stream is decoded up to the damage and one line says where it
    /// stopped; the exit status is then 1.
    Trace(TraceArgs),
}

#[derive(Args)]
struct TraceArgs {
    /// The raw COM2 capture.
    #[arg(value_name = "RAW")]
    raw: PathBuf,
}

/// Build options: accepted before or after the subcommand.
#[derive(Args, Default)]
struct BuildArgs {
    /// Options appended to the nucleus command line of every menu entry (listed in
    /// `run --help`); checked with the nucleus' own parser before the build.
    #[arg(long, value_name = "OPTIONS", default_value = "", global = true)]
    cmdline: String,
    /// Boot anyway with options the nucleus does not know or values it refuses (it then
    /// warns on its console and uses its defaults).
    #[arg(long, global = true)]
    allow_unknown_options: bool,
    /// Extra boot module `module2 /boot/modules/NAME NAME` (repeatable).
    #[arg(long = "module", value_name = "NAME=PATH", global = true)]
    modules: Vec<NamedFile>,
    /// Ship the ELF at PATH as server NAME instead of building it (repeatable).
    #[arg(long = "server", value_name = "NAME=PATH", global = true)]
    servers: Vec<NamedFile>,
    /// Start the Xen PV64 guest kernel ELF at PATH as guest NAME at boot (repeatable), with
    /// MIB MiB of memory (default 16; pv-server boots up to 64), its vCPU on CPU N (cpu=N; an
    /// N that is not online gets one line and the default: the online CPU with the fewest
    /// threads, lowest number first) and TEXT as its command line (cmdline= goes
    /// last and takes the rest). pv-server prints `pv-server: guest NAME: started (...)`,
    /// the guest's console as `guest NAME: ...`, and how it ended. `run` with guests ends when
    /// the last guest ends: status 0 if every guest shut down with reason poweroff, 1
    /// otherwise (crash, reboot, watchdog, rejected image).
    #[arg(
        long = "guest",
        value_name = "NAME=PATH[,mem=MIB][,cpu=N][,cmdline=TEXT]",
        global = true
    )]
    guests: Vec<GuestFile>,
    /// Ship this nucleus ELF instead of building one.
    #[arg(long, value_name = "PATH", global = true)]
    nucleus: Option<PathBuf>,
    /// Ship this multiboot2 ELF as boot module `kexec-image`, the image a kexec hands the
    /// machine to (`kexec=reboot-into`, `crashkernel`); default: the nucleus ELF itself.
    #[arg(long, value_name = "PATH", global = true)]
    kexec_image: Option<PathBuf>,
    /// Where to write the ISO.
    #[arg(long, short, value_name = "PATH", global = true)]
    output: Option<PathBuf>,
    /// Show cargo's output while building (always when stderr is a terminal).
    #[arg(long, short, global = true)]
    verbose: bool,
}

/// `--accel`.
#[derive(Clone, Copy, Default, ValueEnum)]
enum AccelArg {
    /// Translation, the same on every host.
    #[default]
    Tcg,
    /// The host CPU (`-cpu host`) through /dev/kvm.
    Kvm,
}

#[derive(Args)]
struct RunArgs {
    /// Boot with UEFI firmware (OVMF) instead of BIOS.
    #[arg(long)]
    uefi: bool,
    /// Kill QEMU after this many seconds (0: never).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    timeout: f64,
    /// Do not add `exit=qemu`: the nucleus stays halted after boot until Ctrl-C.
    #[arg(long)]
    stay: bool,
    /// Boot in Bochs (CPU model wildcat_lake, with FRED) instead of QEMU.
    ///
    /// Uses $FREDVISOR_BOCHS, else `bochs` on PATH (Bochs 3.1 dev built with --enable-fred).
    /// Adds `exit=bochs` instead of `exit=qemu`; the verdict is read from the serial log.
    /// Files of the run: target/bochs/ (bochsrc, serial.log, bochs.log).
    #[arg(long, conflicts_with_all = ["uefi", "gdb", "accel", "serial_log", "qemu_args"])]
    bochs: bool,
    /// Bochs simulates N CPUs (`cpu: count=N`); more than one needs a Bochs configured with
    /// --enable-smp. QEMU's count is `-- -smp N`.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "bochs")]
    bochs_cpus: u32,
    /// QEMU's accelerator; kvm runs the host CPU (`-cpu host`) and needs a usable /dev/kvm.
    #[arg(long, value_enum, default_value_t = AccelArg::Tcg)]
    accel: AccelArg,
    /// QEMU waits for GDB on localhost:1234 before the first instruction (`-s -S`); the
    /// exact gdb command, with the unstripped nucleus ELF, is printed.
    #[arg(long)]
    gdb: bool,
    /// Also write COM1 to FILE (the terminal still shows it).
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,
    /// Capture COM2 and write the decoded binary trace to FILE (COM2's raw bytes stay in
    /// FILE.raw); adds `trace=events` unless --cmdline sets `trace=`.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Extra QEMU arguments, after `--` (e.g. `-- -smp 2 -d int`).
    #[arg(last = true, value_name = "QEMU ARGS")]
    qemu_args: Vec<OsString>,
}

#[derive(Args)]
struct BenchArgs {
    /// Kill QEMU after this many seconds if a measurement line is still missing.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = bench::DEFAULT_TIMEOUT.as_secs_f64(),
        allow_negative_numbers = true
    )]
    timeout: f64,
    /// Also write the table into README.md (the block under "Measuring").
    #[arg(long)]
    update_readme: bool,
    /// Boot in Bochs' FRED CPU model instead, twice (fred=on, fred=off), and print FRED's
    /// and the IDT's figures side by side with their ratio (Bochs: 1 TSC tick = 1 instruction).
    #[arg(long)]
    bochs: bool,
    /// Instead of the table: follow one sample of MEASUREMENT (null-syscall, int3-roundtrip,
    /// ring-roundtrip, hypercall-roundtrip; or null, int3, ring, hypercall) instruction by
    /// instruction through QEMU's GDB server and print its phases and functions.
    #[arg(long, value_name = "MEASUREMENT", conflicts_with_all = ["bochs", "update_readme"])]
    profile: Option<String>,
    /// Also write the figures as JSON to FILE (to compare a later change with this one).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["bochs", "profile"])]
    json: Option<PathBuf>,
    /// With --profile: which sample (1-based; later ones are warm).
    #[arg(long, default_value_t = 100, requires = "profile")]
    sample: u32,
}

impl From<BuildArgs> for BuildOptions {
    fn from(args: BuildArgs) -> Self {
        Self {
            cmdline: args.cmdline,
            modules: args.modules,
            servers: args.servers,
            guests: args.guests,
            nucleus: args.nucleus,
            kexec_image: args.kexec_image,
            output: args.output,
            // On a terminal a first build is minutes: show cargo's progress.
            verbose: args.verbose || std::io::stderr().is_terminal(),
            allow_unknown_options: args.allow_unknown_options,
        }
    }
}

/// `bench`'s options from its arguments; a bad --timeout or --profile is an error.
fn bench_options(build: BuildOptions, args: &BenchArgs) -> anyhow::Result<BenchOptions> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--timeout must be a number of seconds > 0"))?;
    let profile = match args.profile.as_deref() {
        None => None,
        Some(name) => Some((
            image_builder::profile::Target::from_name(name)
                .ok_or_else(|| anyhow::anyhow!("--profile: no measurement {name:?}"))?,
            args.sample.max(1),
        )),
    };
    Ok(BenchOptions {
        build,
        timeout,
        update_readme: args.update_readme,
        bochs: args.bochs,
        json: args.json.clone(),
        profile,
    })
}

/// The CLI with the nucleus' options listed under `run --help` and `build --help`.
fn parse() -> Cli {
    let options = nucleus_options::help();
    let command = Cli::command()
        .mut_subcommand("run", |run| run.after_help(options.clone()))
        .mut_subcommand("build", |build| build.after_help(options.clone()));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

fn main() -> ExitCode {
    if let Err(err) = shutdown::handle_signals() {
        eprintln!("warning: cannot handle signals ({err}): Ctrl-C may leave QEMU running");
    }
    let cli = parse();
    let build: BuildOptions = cli.build.into();
    let result = match cli.command.unwrap_or(Command::Build) {
        Command::Build => commands::build(&build).map(|_| 0),
        Command::Bench(args) => bench_options(build, &args).and_then(|options| {
            bench::run(&options).map(|table| {
                print!("{table}");
                0
            })
        }),
        Command::Trace(args) => {
            let elfs = Elfs::built(build.nucleus.as_deref(), &build.servers);
            trace::decode_file(&args.raw, &elfs, None)
                .map(|decoded| u8::from(decoded.stopped.is_some()))
        }
        Command::Run(args) => match Duration::try_from_secs_f64(args.timeout) {
            Ok(timeout) => {
                let options = RunOptions {
                    build,
                    uefi: args.uefi,
                    timeout,
                    stay: args.stay,
                    bochs: args.bochs,
                    bochs_cpus: args.bochs_cpus,
                    accel: match args.accel {
                        AccelArg::Tcg => Accel::Tcg,
                        AccelArg::Kvm => Accel::Kvm,
                    },
                    gdb: args.gdb,
                    serial_log: args.serial_log,
                    qemu_args: args.qemu_args,
                    trace: args.trace,
                };
                commands::run(&options).map(|exit| exit.cli_exit_code())
            }
            Err(_) => Err(anyhow::anyhow!(
                "--timeout must be a number of seconds >= 0"
            )),
        },
    };
    match result {
        Ok(code) => ExitCode::from(shutdown::exit_code(code)),
        Err(err) => {
            let code = shutdown::exit_code(EXIT_ERROR);
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}
