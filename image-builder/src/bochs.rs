//! Booting an ISO in Bochs with a FRED CPU model (issue 8 point 8; architecture.md §9).
//!
//! Owns finding `bochs` (`$FREDVISOR_BOCHS`, else `PATH`, else one line saying how to build
//! Bochs 3.1 dev with FRED), the generated `bochsrc` (a pure function of its paths and the
//! memory size), and reading the end of a run. Bochs has no exit-status device: the nucleus
//! (`exit=bochs`) drains COM1 and writes `Shutdown` to port 0x8900, which makes Bochs quit
//! through a panic, so the verdict comes from the serial log ([`outcome`]), not the status.
//! Not in CI (no Bochs there); QEMU stays the boot-test emulator.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::boot::{Boot, Firmware, QemuExit, clean_line};
use crate::image::Iso;
use crate::progress::Step;
use crate::shutdown::OwnedChild;
use crate::stop::StopWhen;
use crate::tools::{self, MissingTool};

/// Environment variable naming the `bochs` executable to use instead of the `PATH` search.
pub const BOCHS_ENV: &str = "FREDVISOR_BOCHS";
/// Bochs' CPU model with FRED and LKGS (fred-facts.md §10).
pub const CPU_MODEL: &str = "wildcat_lake";
/// Guest memory, as for QEMU.
pub const MEMORY_MIB: u32 = 256;
/// Option the nucleus reads to end a Bochs run through the shutdown port.
pub const EXIT_BOCHS_OPTION: &str = "exit=bochs";
/// How to get a Bochs with FRED: the 3.1 development series, built from source
/// (`wildcat_lake` needs AVX; FRED is an experimental configure option; CET as the model has it).
pub const BUILD_HINT: &str = "git clone https://github.com/bochs-emu/Bochs && cd Bochs/bochs && \
     ./configure --enable-x86-64 --enable-avx --enable-fred --enable-cet --with-nogui && \
     make && sudo make install";

/// COM2's capture in the run directory (the binary trace of a `trace=` boot).
pub const COM2_FILE: &str = "com2.raw";

/// How often the process and the serial log are looked at while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Longest path Bochs keeps (`BX_PATHNAME_LEN`).
const BOCHS_PATH_MAX: usize = 511;

/// `bochs`: `override_path` (the value of `$FREDVISOR_BOCHS`) if given, else the first
/// executable `bochs` on `search_path`.
pub fn find_bochs(
    search_path: &OsStr,
    override_path: Option<&OsStr>,
) -> Result<PathBuf, MissingTool> {
    let tool = "bochs (Bochs 3.1 dev with FRED)".to_owned();
    if let Some(path) = override_path.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        // A bare name (`FREDVISOR_BOCHS=bochs-fred`) is searched on the path.
        let found = if path.components().count() > 1 {
            is_executable(&path).then(|| path.clone())
        } else {
            tools::search(search_path, &path.to_string_lossy())
        };
        return found.ok_or_else(|| MissingTool {
            tool,
            looked: format!("at {} (from ${BOCHS_ENV})", path.display()),
            install: BUILD_HINT,
        });
    }
    tools::search(search_path, "bochs").ok_or_else(|| MissingTool {
        tool,
        looked: format!("on PATH and ${BOCHS_ENV} is unset"),
        install: BUILD_HINT,
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A path that cannot go into a `bochsrc` value unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BochsrcError {
    NotUtf8(PathBuf),
    /// A double quote, `$` (Bochs expands variables) or a control character.
    Character {
        path: String,
        character: char,
    },
    TooLong(String),
}

impl fmt::Display for BochsrcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8(path) => write!(f, "Bochs needs UTF-8 paths: {}", path.display()),
            Self::Character { path, character } => write!(
                f,
                "path {path:?} contains {character:?}, which a bochsrc cannot hold"
            ),
            Self::TooLong(path) => write!(
                f,
                "path {path:?} is longer than Bochs' {BOCHS_PATH_MAX} bytes"
            ),
        }
    }
}

impl std::error::Error for BochsrcError {}

/// `path` as a double-quoted bochsrc value.
fn quoted(path: &Path) -> Result<String, BochsrcError> {
    let text = path
        .to_str()
        .ok_or_else(|| BochsrcError::NotUtf8(path.to_path_buf()))?;
    if let Some(character) = text
        .chars()
        .find(|&c| c == '"' || c == '$' || c.is_control())
    {
        return Err(BochsrcError::Character {
            path: text.to_owned(),
            character,
        });
    }
    if text.len() > BOCHS_PATH_MAX {
        return Err(BochsrcError::TooLong(text.to_owned()));
    }
    Ok(format!("\"{text}\""))
}

/// The whole `bochsrc`: `cpus` CPUs of the Wildcat Lake model (FRED + LKGS; more than one
/// needs a Bochs configured with `--enable-smp`), `memory_mib` of RAM, the ISO
/// as a CD-ROM booted first, COM1 into `serial_log`, Bochs' own log into `bochs_log`, no
/// display, and every panic (the shutdown request included) ending the simulation. The BIOS
/// and VGA BIOS are Bochs' defaults (`$BXSHARE`).
pub fn bochsrc(
    iso: &Path,
    serial_log: &Path,
    bochs_log: &Path,
    memory_mib: u32,
    cpus: u32,
) -> Result<String, BochsrcError> {
    let (iso, serial_log, bochs_log) = (quoted(iso)?, quoted(serial_log)?, quoted(bochs_log)?);
    let mut rc = String::new();
    // `writeln!` into a String cannot fail; the results are ignored through `let _`.
    let _ = writeln!(rc, "# Generated by image-builder; edits are overwritten.");
    let _ = writeln!(rc, "config_interface: textconfig");
    let _ = writeln!(rc, "display_library: nogui");
    // A triple fault ends the run (like QEMU's -no-reboot); unknown MSRs raise #GP.
    let _ = writeln!(
        rc,
        "cpu: model={CPU_MODEL}, count={cpus}, reset_on_triple_fault=0, ignore_bad_msrs=0"
    );
    let _ = writeln!(rc, "memory: guest={memory_mib}, host={memory_mib}");
    let _ = writeln!(rc, "ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14");
    let _ = writeln!(rc, "ata0-master: type=cdrom, path={iso}, status=inserted");
    let _ = writeln!(rc, "boot: cdrom");
    let _ = writeln!(rc, "com1: enabled=1, mode=file, dev={serial_log}");
    let _ = writeln!(rc, "clock: sync=none, time0=local");
    let _ = writeln!(rc, "magic_break: enabled=0");
    let _ = writeln!(rc, "log: {bochs_log}");
    let _ = writeln!(rc, "panic: action=fatal");
    let _ = writeln!(rc, "error: action=report");
    let _ = writeln!(rc, "info: action=report");
    let _ = writeln!(rc, "debug: action=ignore");
    Ok(rc)
}

/// How a Bochs run ended, read from the serial log (`bochs_status` only when the log says
/// nothing): a panic or fatal fault is a failure; otherwise the self-test summary decides
/// (`selftest: N passed, M failed`), else `nucleus: halted` is a failure and
/// `nucleus: ready` a success. Anything else is [`QemuExit::Other`] with Bochs' status.
/// Only the nucleus' lines count: a server's (`<server>: …`, `ipc::console`) never does.
pub fn outcome(serial: &str, bochs_status: Option<i32>) -> QemuExit {
    let lines: Vec<String> = serial
        .lines()
        .map(clean_line)
        .filter(|l| ipc::console::server_of(l).is_none())
        .collect();
    let starts = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    if starts(ipc::markers::PANIC) || starts("nucleus: FATAL") {
        return QemuExit::Failure;
    }
    let failed = lines.iter().find_map(|l| {
        let rest = l.strip_prefix("selftest: ")?;
        let (passed, failed) = rest.strip_suffix(" failed")?.split_once(" passed, ")?;
        passed.parse::<u32>().ok()?;
        failed.parse::<u32>().ok()
    });
    match failed {
        Some(0) => QemuExit::Success,
        Some(_) => QemuExit::Failure,
        None if starts("nucleus: halted") => QemuExit::Failure,
        None if starts(ipc::markers::READY) => QemuExit::Success,
        None => QemuExit::Other(bochs_status.unwrap_or(-1)),
    }
}

/// A Bochs run of one ISO. Defaults: no timeout, files in a temporary directory, quiet.
#[derive(Clone, Debug)]
pub struct Bochs {
    iso: PathBuf,
    timeout: Option<Duration>,
    run_dir: Option<PathBuf>,
    echo: bool,
    stop: StopWhen,
    search_path: OsString,
    override_path: Option<OsString>,
    cpus: u32,
}

impl Bochs {
    pub fn new(iso: &Iso) -> Self {
        Self::from_path(iso.path())
    }

    /// Boots an ISO file that was built elsewhere; finds Bochs through `$FREDVISOR_BOCHS`
    /// and `PATH`.
    pub fn from_path(iso: &Path) -> Self {
        Self {
            iso: iso.to_path_buf(),
            timeout: None,
            run_dir: None,
            echo: false,
            stop: StopWhen::default(),
            search_path: std::env::var_os("PATH").unwrap_or_default(),
            override_path: std::env::var_os(BOCHS_ENV),
            cpus: 1,
        }
    }

    /// Simulates `cpus` CPUs (`cpu: count=`; default 1). More than one needs a Bochs
    /// configured with `--enable-smp`, which refuses the bochsrc otherwise.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// Kills Bochs after `timeout` ([`QemuExit::Timeout`]). `Duration::ZERO` means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Keeps `bochsrc`, `serial.log`, `bochs.log` and `bochs.out` in `dir` after the run.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Stops Bochs as soon as the serial log contains `marker` ([`QemuExit::Stopped`]), for
    /// boots that do not end by themselves (as [`crate::Qemu::until`]).
    pub fn until(mut self, marker: &str) -> Self {
        self.stop.marker(marker);
        self
    }

    /// Stops Bochs once `done` holds for the serial log up to its last complete line
    /// ([`QemuExit::Stopped`]; as [`crate::Qemu::until_serial`]).
    pub fn until_serial(mut self, done: fn(&str) -> bool) -> Self {
        self.stop.condition(done);
        self
    }

    /// Stops Bochs once each of `lines` is a whole serial line ([`QemuExit::Stopped`]; as
    /// [`crate::Qemu::until_lines`]).
    pub fn until_lines(mut self, lines: &[&str]) -> Self {
        self.stop.lines(lines);
        self
    }

    /// Copies COM1 to this process's stdout while the run goes on.
    pub fn echo_serial(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Looks for `bochs` on `search_path` only, with `override_path` standing for
    /// `$FREDVISOR_BOCHS` (tests use this to hide or fake Bochs).
    pub fn search(
        mut self,
        search_path: impl Into<OsString>,
        override_path: Option<OsString>,
    ) -> Self {
        self.search_path = search_path.into();
        self.override_path = override_path;
        self
    }

    /// The `bochs` this run would use, or the one-line [`MissingTool`] error.
    pub fn check_tools(&self) -> Result<PathBuf, MissingTool> {
        find_bochs(&self.search_path, self.override_path.as_deref())
    }

    /// Boots and waits until Bochs exits or the deadline passes.
    pub fn run(&self) -> Result<Boot> {
        let bochs = self.check_tools()?;
        if !self.iso.is_file() {
            bail!("no ISO at {}", self.iso.display());
        }
        let (temp, dir) = match &self.run_dir {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                (None, dir.clone())
            }
            None => {
                let temp = crate::shutdown::OwnedDir::new("fredvisor-bochs-")
                    .context("cannot create a run directory")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let iso = fs::canonicalize(&self.iso)
            .with_context(|| format!("cannot resolve {}", self.iso.display()))?;
        let dir =
            fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
        let serial_path = dir.join("serial.log");
        let rc_path = dir.join("bochsrc");
        let out_path = dir.join("bochs.out");
        let mut rc = bochsrc(
            &iso,
            &serial_path,
            &dir.join("bochs.log"),
            MEMORY_MIB,
            self.cpus,
        )?;
        // COM2: the binary trace (`trace=`), raw, for `run --bochs --trace`.
        let com2_path = dir.join(COM2_FILE);
        fs::write(&com2_path, "")
            .with_context(|| format!("cannot create {}", com2_path.display()))?;
        let _ = writeln!(
            rc,
            "com2: enabled=1, mode=file, dev={}",
            quoted(&com2_path)?
        );
        fs::write(&rc_path, rc).with_context(|| format!("cannot write {}", rc_path.display()))?;
        // Bochs appends to nothing stale, and polling never sees a previous run.
        fs::write(&serial_path, "")
            .with_context(|| format!("cannot create {}", serial_path.display()))?;
        let out = fs::File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot reopen {}", out_path.display()))?;

        let mut command = Command::new(&bochs);
        command
            .arg("-q")
            .arg("-f")
            .arg(&rc_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let step = if self.echo {
            Step::start_own_line(
                "boot",
                &format!("Bochs ({CPU_MODEL}), serial console follows"),
            )
        } else {
            Step::start("boot")
        };
        let started = Instant::now();
        let guard = OwnedChild::spawn(&mut command)
            .with_context(|| format!("cannot start {}", bochs.display()))?;
        let deadline = self.timeout.map(|t| started + t);
        let mut echoed = 0;
        let waits_for_a_line = self.stop.waits();
        let status = loop {
            if self.echo {
                echoed = echo_new_bytes(&serial_path, echoed);
            }
            if let Some(status) = guard.try_wait().context("cannot wait for Bochs")? {
                break End::Exited(status);
            }
            if waits_for_a_line
                && fs::read(&serial_path)
                    .is_ok_and(|log| self.stop.reached(&String::from_utf8_lossy(&log)))
            {
                guard.kill();
                break End::Stopped;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                guard.kill();
                break End::Timeout;
            }
            thread::sleep(POLL_INTERVAL);
        };
        drop(guard);
        if self.echo {
            echo_new_bytes(&serial_path, echoed);
        }
        let elapsed = started.elapsed();
        let read = |path: &Path| fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
        let serial =
            read(&serial_path).with_context(|| format!("cannot read {}", serial_path.display()))?;
        let bochs_output = read(&out_path).unwrap_or_default();
        let exit = match status {
            End::Timeout => QemuExit::Timeout,
            End::Stopped => QemuExit::Stopped,
            End::Exited(status) => {
                use std::os::unix::process::ExitStatusExt;
                let code = status.code().or(status.signal().map(|s| 128 + s));
                outcome(&serial, code)
            }
        };
        step.done(&format!(" (Bochs, {})", describe(exit)));
        if serial.is_empty() && matches!(exit, QemuExit::Other(_)) && !bochs_output.is_empty() {
            // Bochs refused the configuration (unknown CPU model, missing BIOS): not a boot.
            let last = bochs_output.lines().rev().find(|l| !l.trim().is_empty());
            bail!(
                "{} failed to start: {} (see {})",
                bochs.display(),
                last.unwrap_or_default().trim(),
                out_path.display()
            );
        }
        Ok(Boot {
            ready_after: None,
            ready_cpu: None,
            exit,
            serial,
            qemu_stderr: bochs_output,
            firmware: Firmware::Bios,
            elapsed,
            serial_path: Some(serial_path),
            _dir: temp,
        })
    }
}

/// Why the wait for Bochs ended.
enum End {
    Exited(std::process::ExitStatus),
    Stopped,
    Timeout,
}

/// `exit` in Bochs' terms (`QemuExit`'s own text names QEMU's debug-exit device).
pub fn describe(exit: QemuExit) -> String {
    match exit {
        QemuExit::Success => "success (serial log)".into(),
        QemuExit::Failure => "failure (serial log)".into(),
        QemuExit::Timeout => "timeout (Bochs killed)".into(),
        QemuExit::Stopped => "stopped after the awaited line".into(),
        QemuExit::Other(code) => format!("no verdict in the serial log, Bochs status {code}"),
    }
}

/// Writes what `path` gained since `from` to stdout; returns the new length.
fn echo_new_bytes(path: &Path, from: usize) -> usize {
    let Ok(bytes) = fs::read(path) else {
        return from;
    };
    if let Some(new) = bytes.get(from..).filter(|new| !new.is_empty()) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(new);
        let _ = stdout.flush();
    }
    bytes.len().max(from)
}

#[cfg(test)]
mod tests;
