//! What the CLI's subcommands do, given already-parsed options.
//!
//! Owns the defaults a human gets (`run` ends by itself, where the ISO goes) and the
//! mapping from outcomes to process exit codes. Parsing is `main.rs`'s job.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::bochs::{Bochs, EXIT_BOCHS_OPTION};
use crate::boot::QemuExit;
use crate::compile::workspace_root;
use crate::guest::{GuestFile, GuestsEnded};
use crate::image::{Image, Iso, NamedFile, default_iso_path};
use crate::nucleus_options;
use crate::qemu::{Accel, GDB_PORT, Qemu};

/// Exit code for errors before or around the boot (missing tool, failed build, bad input).
pub const EXIT_ERROR: u8 = 2;

/// Option the nucleus reads to end a QEMU run through `isa-debug-exit`.
pub const EXIT_QEMU_OPTION: &str = "exit=qemu";

/// Options of `build` (and the build part of `run`).
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Appended to the nucleus command line of every menu entry.
    pub cmdline: String,
    pub modules: Vec<NamedFile>,
    pub servers: Vec<NamedFile>,
    /// PV64 guests started at boot (`--guest`).
    pub guests: Vec<GuestFile>,
    /// A nucleus ELF to ship instead of building one.
    pub nucleus: Option<PathBuf>,
    /// The multiboot2 ELF shipped as the kexec image (default: the nucleus ELF).
    pub kexec_image: Option<PathBuf>,
    /// Default: `target/fredvisor.iso` (`target/fredvisor-run.iso` for `run`).
    pub output: Option<PathBuf>,
    pub verbose: bool,
    /// Pass options the nucleus does not know (or bad values) through to its own warnings
    /// instead of refusing them before the build.
    pub allow_unknown_options: bool,
}

impl BuildOptions {
    /// The user's command line, parsed as the nucleus will (unless unknown options are
    /// allowed): a typo costs one line and no build.
    pub fn check_cmdline(&self) -> Result<()> {
        if !self.allow_unknown_options {
            nucleus_options::check(&self.cmdline)?;
        }
        Ok(())
    }

    pub(crate) fn image(&self, extra_cmdline: &str, default_output: PathBuf) -> Image {
        let mut image = Image::new()
            .cmdline(&self.cmdline)
            .cmdline(extra_cmdline)
            .output(self.output.clone().unwrap_or(default_output))
            .verbose(self.verbose);
        for module in &self.modules {
            image = image.module(&module.name, &module.path);
        }
        if let Some(nucleus) = &self.nucleus {
            image = image.nucleus(nucleus);
        }
        if let Some(kexec) = &self.kexec_image {
            image = image.kexec_image(kexec);
        }
        for server in &self.servers {
            image = image.server(&server.name, &server.path);
        }
        for guest in &self.guests {
            image = image.guest(guest.clone());
        }
        image
    }
}

/// `build`: the ISO at `target/fredvisor.iso` (or `--output`), as written to a USB stick.
pub fn build(options: &BuildOptions) -> Result<Iso> {
    options.check_cmdline()?;
    // The bare-metal ISO: GRUB's menu stays, to choose fred=off or fred=on.
    let iso = options
        .image("", default_iso_path())
        .menu(crate::grub::Menu::Shown)
        .build()?;
    eprintln!("wrote {}", iso.path().display());
    eprintln!("boot it: cargo fv run (= cargo run -p image-builder -- run); more: cargo fv --help");
    Ok(iso)
}

/// Options of `run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub build: BuildOptions,
    pub uefi: bool,
    /// `Duration::ZERO`: no deadline.
    pub timeout: Duration,
    /// Do not add `exit=qemu`: the nucleus halts after `nucleus: ready` until Ctrl-C.
    pub stay: bool,
    /// Boot in Bochs (Wildcat Lake model, FRED) instead of QEMU, with `exit=bochs`.
    pub bochs: bool,
    /// Bochs' CPU count (`cpu: count=`; 0 or 1: one CPU).
    pub bochs_cpus: u32,
    /// QEMU's accelerator.
    pub accel: Accel,
    /// QEMU waits for GDB on [`GDB_PORT`] before the first instruction.
    pub gdb: bool,
    /// A copy of COM1 (the terminal still shows it).
    pub serial_log: Option<PathBuf>,
    /// Appended to QEMU's command line as they are.
    pub qemu_args: Vec<OsString>,
    /// Capture COM2 and write the decoded binary trace here (adds `trace=events` unless the
    /// command line sets `trace=`).
    pub trace: Option<PathBuf>,
}

/// What `run --trace` adds when the command line does not choose a trace level.
pub const TRACE_DEFAULT_OPTION: &str = "trace=events";

/// `trace=events` unless the user's command line already has a `trace=` word.
fn trace_option(cmdline: &str) -> &'static str {
    if cmdline.split_whitespace().any(|w| w.starts_with("trace=")) {
        ""
    } else {
        TRACE_DEFAULT_OPTION
    }
}

/// Where `run --trace FILE` keeps COM2's raw bytes: `FILE.raw` (`image-builder trace` decodes
/// it again).
pub fn raw_trace_path(decoded: &std::path::Path) -> PathBuf {
    let mut raw = decoded.as_os_str().to_owned();
    raw.push(".raw");
    PathBuf::from(raw)
}

/// `run`: builds `target/fredvisor-run.iso` (so the bare-metal ISO never carries
/// `exit=qemu`), boots it with COM1 on the terminal and returns how it ended.
pub fn run(options: &RunOptions) -> Result<QemuExit> {
    options.build.check_cmdline()?;
    if options.bochs {
        return run_bochs(options);
    }
    // QEMU, OVMF and KVM are checked before the (long) build.
    let default_output = workspace_root().join("target/fredvisor-run.iso");
    let probe = Qemu::from_path(&default_output)
        .uefi(options.uefi)
        .accel(options.accel);
    probe.check_tools()?;
    if let Some(trace) = &options.trace {
        crate::trace::check_output(trace)?;
    }
    // With guests the run ends at pv-server's summary line, not at `nucleus: ready`.
    let guests = !options.build.guests.is_empty();
    let exit = if options.stay || guests {
        ""
    } else {
        EXIT_QEMU_OPTION
    };
    let trace = match options.trace {
        Some(_) => trace_option(&options.build.cmdline),
        None => "",
    };
    let extra = crate::grub::join_cmdline([exit, trace]);
    let iso = options.build.image(&extra, default_output).build()?;
    if options.stay {
        eprintln!("note: the nucleus halts after it is ready; stop QEMU with Ctrl-C");
    }
    if options.gdb {
        eprintln!(
            "note: QEMU waits for a debugger on port {GDB_PORT}; in another terminal: \
             gdb {} -ex 'target remote localhost:{GDB_PORT}'",
            iso.nucleus_elf().display()
        );
    }
    let mut qemu = Qemu::new(&iso)
        .uefi(options.uefi)
        .accel(options.accel)
        .gdb(options.gdb)
        .timeout(options.timeout);
    // Guests: the console is also logged, so the run can stop at the summary line.
    let guest_log = guests.then(|| {
        options
            .serial_log
            .clone()
            .unwrap_or_else(|| workspace_root().join("target/fredvisor-run-serial.log"))
    });
    qemu = match (&options.serial_log, &guest_log) {
        (Some(path), _) | (None, Some(path)) => qemu.serial_stdio_logged(path),
        (None, None) => qemu.serial_stdio(),
    };
    if guests && !options.stay {
        qemu = qemu.until(crate::guest::ALL_ENDED);
    }
    for arg in &options.qemu_args {
        qemu = qemu.arg(arg);
    }
    if let Some(trace) = &options.trace {
        qemu = qemu.com2_file(raw_trace_path(trace));
    }
    let boot = qemu.run()?;
    if let Some(path) = &options.serial_log {
        eprintln!("note: the serial log is in {}", path.display());
    }
    if let Some(trace) = &options.trace {
        write_trace(trace, &raw_trace_path(trace), &iso)?;
    }
    if let (Some(path), QemuExit::Stopped) = (&guest_log, boot.exit) {
        let serial = std::fs::read_to_string(path).unwrap_or_default();
        return Ok(match GuestsEnded::from_serial(&serial) {
            Some(ended) if ended.all_powered_off() => QemuExit::Success,
            _ => QemuExit::Failure,
        });
    }
    Ok(boot.exit)
}

/// Decodes the raw capture of a `run --trace` boot into `trace` and says where both are.
fn write_trace(trace: &std::path::Path, raw: &std::path::Path, iso: &Iso) -> Result<()> {
    let decoded = crate::trace::decode_file(raw, &crate::trace::Elfs::of(iso), Some(trace))?;
    eprintln!(
        "note: {} trace records in {} (raw: {}){}",
        decoded.records,
        trace.display(),
        raw.display(),
        decoded
            .stopped
            .as_deref()
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Where `run --bochs` keeps its `bochsrc`, serial log and Bochs' own log.
pub fn bochs_run_dir() -> PathBuf {
    workspace_root().join("target/bochs")
}

/// `run --bochs`: builds `target/fredvisor-bochs.iso` with `exit=bochs` (unless staying) and
/// boots it in Bochs, copying COM1 to the terminal. Bochs is looked for before the build.
fn run_bochs(options: &RunOptions) -> Result<QemuExit> {
    let default_output = workspace_root().join("target/fredvisor-bochs.iso");
    Bochs::from_path(&default_output).check_tools()?;
    if let Some(trace) = &options.trace {
        crate::trace::check_output(trace)?;
    }
    let guests = !options.build.guests.is_empty();
    let exit = if options.stay || guests {
        ""
    } else {
        EXIT_BOCHS_OPTION
    };
    let trace = match options.trace {
        Some(_) => trace_option(&options.build.cmdline),
        None => "",
    };
    let extra = crate::grub::join_cmdline([exit, trace]);
    let iso = options.build.image(&extra, default_output).build()?;
    let run_dir = bochs_run_dir();
    if options.stay {
        eprintln!("note: the nucleus halts after it is ready; stop Bochs with Ctrl-C");
    }
    let mut bochs = Bochs::new(&iso)
        .cpus(options.bochs_cpus)
        .timeout(options.timeout)
        .run_dir(&run_dir)
        .echo_serial(true);
    if guests && !options.stay {
        bochs = bochs.until(crate::guest::ALL_ENDED);
    }
    let mut boot = bochs.run()?;
    if guests && boot.exit == QemuExit::Stopped {
        boot.exit = match GuestsEnded::from_serial(&boot.serial) {
            Some(ended) if ended.all_powered_off() => QemuExit::Success,
            _ => QemuExit::Failure,
        };
    }
    if boot.exit != QemuExit::Success {
        eprintln!(
            "note: bochsrc, serial.log and bochs.log are in {}",
            run_dir.display()
        );
    }
    if let Some(trace) = &options.trace {
        let raw = raw_trace_path(trace);
        let captured = run_dir.join(crate::bochs::COM2_FILE);
        std::fs::copy(&captured, &raw)
            .with_context(|| format!("cannot copy {} to {}", captured.display(), raw.display()))?;
        write_trace(trace, &raw, &iso)?;
    }
    Ok(boot.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_adds_exit_qemu_after_user_options_unless_staying() {
        let options = BuildOptions {
            cmdline: "loglvl=3".into(),
            ..Default::default()
        };
        assert_eq!(
            options
                .image(EXIT_QEMU_OPTION, "x.iso".into())
                .get_cmdline(),
            "loglvl=3 exit=qemu"
        );
        assert_eq!(options.image("", "x.iso".into()).get_cmdline(), "loglvl=3");
    }

    #[test]
    fn run_trace_adds_trace_events_unless_a_level_is_given() {
        assert_eq!(trace_option("selftest=all"), TRACE_DEFAULT_OPTION);
        assert_eq!(trace_option("selftest=all trace=all"), "");
        assert_eq!(
            raw_trace_path(std::path::Path::new("/t/trace.txt")),
            std::path::Path::new("/t/trace.txt.raw")
        );
    }

    #[test]
    fn run_bochs_adds_exit_bochs_after_user_options() {
        let options = BuildOptions {
            cmdline: "selftest=all".into(),
            ..Default::default()
        };
        assert_eq!(
            options
                .image(EXIT_BOCHS_OPTION, "x.iso".into())
                .get_cmdline(),
            "selftest=all exit=bochs"
        );
    }
}
