//! image-builder CLI: parses arguments and calls `image_builder::commands`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use image_builder::NamedFile;
use image_builder::bench::{self, BenchOptions};
use image_builder::commands::{self, BuildOptions, EXIT_ERROR, RunOptions};

/// Build fredvisor's hybrid BIOS+UEFI ISO and boot it in QEMU.
///
/// Without a subcommand, `build` runs.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
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
    Build(BuildArgs),
    /// Build, then boot in QEMU (TCG) or Bochs (--bochs) with COM1 on this terminal.
    ///
    /// Adds `exit=qemu` to the nucleus command line so the run ends by itself after
    /// `nucleus: ready` (or a panic); --stay keeps the nucleus halted instead. The image is
    /// target/fredvisor-run.iso, so target/fredvisor.iso stays free of `exit=qemu`.
    ///
    /// Exit status: 0 success, 1 the nucleus reported failure (panic), 2 error before the
    /// boot (missing tool, build failure), 3 QEMU ended otherwise (e.g. triple fault),
    /// 124 timeout. Under --bochs, 0 and 1 come from the serial log (see --bochs).
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
}

#[derive(Args, Default)]
struct BuildArgs {
    /// Options appended to the nucleus command line of every menu entry.
    #[arg(long, value_name = "OPTIONS", default_value = "")]
    cmdline: String,
    /// Extra boot module `module2 /boot/modules/NAME NAME` (repeatable).
    #[arg(long = "module", value_name = "NAME=PATH")]
    modules: Vec<NamedFile>,
    /// Ship the ELF at PATH as server NAME instead of building it (repeatable).
    #[arg(long = "server", value_name = "NAME=PATH")]
    servers: Vec<NamedFile>,
    /// Ship this nucleus ELF instead of building one.
    #[arg(long, value_name = "PATH")]
    nucleus: Option<PathBuf>,
    /// Where to write the ISO.
    #[arg(long, short, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Show cargo's output while building.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Boot with UEFI firmware (OVMF) instead of BIOS.
    #[arg(long)]
    uefi: bool,
    /// Kill QEMU after this many seconds (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    timeout: f64,
    /// Do not add `exit=qemu`: the nucleus stays halted after boot until Ctrl-C.
    #[arg(long)]
    stay: bool,
    /// Boot in Bochs (CPU model wildcat_lake, with FRED) instead of QEMU.
    ///
    /// Uses $FREDVISOR_BOCHS, else `bochs` on PATH (Bochs 3.1 dev built with --enable-fred).
    /// Adds `exit=bochs` instead of `exit=qemu`; the verdict is read from the serial log.
    /// Files of the run: target/bochs/ (bochsrc, serial.log, bochs.log).
    #[arg(long, conflicts_with = "uefi")]
    bochs: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Kill QEMU after this many seconds if a measurement line is still missing.
    #[arg(long, value_name = "SECONDS", default_value_t = bench::DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

impl From<BuildArgs> for BuildOptions {
    fn from(args: BuildArgs) -> Self {
        Self {
            cmdline: args.cmdline,
            modules: args.modules,
            servers: args.servers,
            nucleus: args.nucleus,
            output: args.output,
            verbose: args.verbose,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Build(cli.build)) {
        Command::Build(args) => commands::build(&args.into()).map(|_| 0),
        Command::Bench(args) => match Duration::try_from_secs_f64(args.timeout) {
            Ok(timeout) if !timeout.is_zero() => {
                let options = BenchOptions {
                    build: args.build.into(),
                    timeout,
                };
                bench::run(&options).map(|table| {
                    print!("{table}");
                    0
                })
            }
            _ => Err(anyhow::anyhow!("--timeout must be a number of seconds > 0")),
        },
        Command::Run(args) => match Duration::try_from_secs_f64(args.timeout) {
            Ok(timeout) => {
                let options = RunOptions {
                    build: args.build.into(),
                    uefi: args.uefi,
                    timeout,
                    stay: args.stay,
                    bochs: args.bochs,
                };
                commands::run(&options).map(|exit| exit.cli_exit_code())
            }
            Err(_) => Err(anyhow::anyhow!(
                "--timeout must be a number of seconds >= 0"
            )),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
