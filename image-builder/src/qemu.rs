//! Booting an ISO in QEMU (TCG) and waiting for it to end.
//!
//! Owns QEMU's command line (one small function per concern), the firmware choice, the
//! deadline and the guarantee that QEMU never outlives its [`Boot`]: it is killed on
//! timeout, when the awaited marker shows, and on drop (panics included). Waiting polls the
//! process and the serial file against a deadline; it never sleeps for a fixed time to
//! "let output arrive".

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::boot::{Boot, Firmware, QemuExit};
use crate::image::Iso;
use crate::progress::Step;
use crate::shutdown::{OwnedChild, OwnedDir};
use crate::stop::StopWhen;
use crate::tools::{Ovmf, Tool, Toolbox};

/// Guest memory.
pub const MEMORY: &str = "256M";

/// How often the process and the serial log are looked at while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Port of QEMU's GDB server under `-s`.
pub const GDB_PORT: u16 = 1234;

/// QEMU's accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Instruction translation: the same on every host (what the tests use).
    #[default]
    Tcg,
    /// The host CPU through `/dev/kvm`, with `-cpu host`: full speed, and on a FRED host
    /// the way to run the FRED path outside Bochs.
    Kvm,
}

impl Accel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }

    /// Fails with one line unless this accelerator can be used here.
    pub fn check(self) -> Result<()> {
        match self {
            Self::Tcg => Ok(()),
            Self::Kvm => check_kvm(Path::new(KVM_DEVICE)),
        }
    }
}

/// The KVM device QEMU opens for `-accel kvm`.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// `/dev/kvm` must exist and open read-write, as QEMU will open it.
fn check_kvm(device: &Path) -> Result<()> {
    match fs::OpenOptions::new().read(true).write(true).open(device) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "--accel kvm: {} does not exist (no KVM on this host, or the kvm module is not \
             loaded): use --accel tcg",
            device.display()
        ),
        Err(err) => bail!(
            "--accel kvm: cannot open {}: {err} (add yourself to the kvm group, or use --accel tcg)",
            device.display()
        ),
    }
}

/// Where COM1 goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Serial {
    /// The terminal (interactive `run`): nothing is captured; a copy goes to the file if
    /// one is given.
    Stdio(Option<PathBuf>),
    /// A file: this one, or `serial.log` in the run's temporary directory.
    File(Option<PathBuf>),
}

/// A QEMU run of one ISO. Defaults: BIOS, no timeout, serial to a temporary file.
#[derive(Clone, Debug)]
pub struct Qemu {
    iso: PathBuf,
    uefi: bool,
    accel: Accel,
    gdb: bool,
    timeout: Option<Duration>,
    serial: Serial,
    stop: StopWhen,
    com2: Option<PathBuf>,
    tools: Toolbox,
    extra_args: Vec<OsString>,
}

impl Qemu {
    pub fn new(iso: &Iso) -> Self {
        Self::from_path(iso.path())
    }

    /// Boots an ISO file that was built elsewhere.
    pub fn from_path(iso: &Path) -> Self {
        Self {
            iso: iso.to_path_buf(),
            uefi: false,
            accel: Accel::Tcg,
            gdb: false,
            timeout: None,
            serial: Serial::File(None),
            stop: StopWhen::default(),
            com2: None,
            tools: Toolbox::from_env(),
            extra_args: Vec::new(),
        }
    }

    /// Boots with OVMF (UEFI) instead of SeaBIOS.
    pub fn uefi(mut self, uefi: bool) -> Self {
        self.uefi = uefi;
        self
    }

    /// Runs with this accelerator (default TCG).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Starts QEMU's GDB server on port [`GDB_PORT`] and holds the CPU until a debugger
    /// continues it (`-s -S`).
    pub fn gdb(mut self, gdb: bool) -> Self {
        self.gdb = gdb;
        self
    }

    /// Kills QEMU after `timeout` ([`QemuExit::Timeout`]). `Duration::ZERO` means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Writes COM1 to `path` (kept after the run) instead of a temporary file.
    pub fn serial_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial = Serial::File(Some(path.into()));
        self
    }

    /// Sends COM1 to the terminal and lets the user type into it (nothing is captured).
    /// Escape sequences that would clear the terminal are filtered out
    /// ([`crate::console`]).
    pub fn serial_stdio(mut self) -> Self {
        self.serial = Serial::Stdio(None);
        self
    }

    /// Like [`Qemu::serial_stdio`], and QEMU also writes COM1 to `path`.
    pub fn serial_stdio_logged(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial = Serial::Stdio(Some(path.into()));
        self
    }

    /// Stops QEMU as soon as the serial log contains `marker` ([`QemuExit::Stopped`]),
    /// for boots that do not end by themselves.
    pub fn until(mut self, marker: &str) -> Self {
        self.stop.marker(marker);
        self
    }

    /// Stops QEMU as soon as `done` holds for the serial log up to its last complete line
    /// ([`QemuExit::Stopped`]): for ends that one marker cannot express (several lines in
    /// any order, a line after another), and so that no line is cut in the middle.
    pub fn until_serial(mut self, done: fn(&str) -> bool) -> Self {
        self.stop.condition(done);
        self
    }

    /// Stops QEMU as soon as each of `lines` is a whole serial line ([`QemuExit::Stopped`]):
    /// for lines that servers print, which may come after `nucleus: ready` and so after an
    /// `exit=qemu` end.
    pub fn until_lines(mut self, lines: &[&str]) -> Self {
        self.stop.lines(lines);
        self
    }

    /// Writes COM2 (the nucleus' binary trace, `trace=`) to `path`, byte for byte.
    pub fn com2_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.com2 = Some(path.into());
        self
    }

    pub fn tools(mut self, tools: Toolbox) -> Self {
        self.tools = tools;
        self
    }

    /// Appends raw QEMU arguments (e.g. `-cpu max`, `-smp 2`).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    fn firmware(&self) -> Firmware {
        if self.uefi {
            Firmware::Uefi
        } else {
            Firmware::Bios
        }
    }

    /// Checks that QEMU (and OVMF for UEFI) are installed, without running anything.
    pub fn check_tools(&self) -> Result<()> {
        self.tools.find(Tool::QemuSystem)?;
        if self.uefi {
            Ovmf::find()?;
        }
        self.accel.check()
    }

    /// Boots and waits until QEMU exits, the marker shows, or the deadline passes.
    pub fn run(&self) -> Result<Boot> {
        let qemu = self.tools.find(Tool::QemuSystem)?;
        let ovmf = if self.uefi { Some(Ovmf::find()?) } else { None };
        let dir = OwnedDir::new("fredvisor-qemu-").context("cannot create a run directory")?;
        let serial_path = match &self.serial {
            Serial::Stdio(_) => None,
            Serial::File(Some(path)) => Some(path.clone()),
            Serial::File(None) => Some(dir.path().join("serial.log")),
        };
        if let Some(path) = &serial_path {
            // QEMU appends to nothing stale, and polling never sees a previous run.
            fs::write(path, "").with_context(|| format!("cannot create {}", path.display()))?;
        }
        let stderr_path = dir.path().join("qemu.stderr");
        // What `until` watches: the serial file, or the log of a console on the terminal.
        let watched = match &self.serial {
            Serial::Stdio(Some(log)) => {
                fs::write(log, "").with_context(|| format!("cannot create {}", log.display()))?;
                Some(log.clone())
            }
            _ => serial_path.clone(),
        };

        let mut command = Command::new(&qemu);
        self.accel.check()?;
        command.args(machine_args(self.accel));
        match &ovmf {
            Some(ovmf) => command
                .args(uefi_boot_args(&self.iso)?)
                .args(firmware_args(ovmf, dir.path())?)
                .args(uefi_cpu_args(self.accel)),
            None => command
                .args(boot_args(&self.iso)?)
                .args(bios_display_args()),
        };
        match &self.serial {
            Serial::Stdio(log) => command.args(stdio_serial_args(log.as_deref())?),
            Serial::File(_) => command.args(serial_args(serial_path.as_deref())?),
        };
        if let Some(com2) = &self.com2 {
            fs::write(com2, "").with_context(|| format!("cannot create {}", com2.display()))?;
            // The second -serial is COM2.
            command.args(serial_args(Some(com2))?);
        }
        if self.gdb {
            command.args(["-s", "-S"]);
        }
        command.args(&self.extra_args);
        if serial_path.is_none() {
            // The console goes through the filter; the keyboard goes straight to QEMU.
            command.stdout(Stdio::piped());
        } else {
            let stderr = fs::File::create(&stderr_path)
                .with_context(|| format!("cannot create {}", stderr_path.display()))?;
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
        }

        let step = match serial_path {
            Some(_) => Step::start("boot"),
            None => Step::start_own_line(
                "boot",
                &format!("{}, serial console follows", self.firmware()),
            ),
        };
        let started = Instant::now();
        let guard = OwnedChild::spawn(&mut command)
            .with_context(|| format!("cannot start {}", qemu.display()))?;
        let console = guard.take_stdout().map(|out| {
            thread::spawn(move || crate::console::copy_filtered(out, std::io::stdout().lock()))
        });
        let deadline = self.timeout.map(|t| started + t);
        let mut ready_after = None;
        let mut ready_cpu = None;
        let exit = loop {
            if let Some(status) = guard.try_wait().context("cannot wait for QEMU")? {
                use std::os::unix::process::ExitStatusExt;
                break QemuExit::from_status(status.code(), status.signal());
            }
            let awaits = self.stop.waits();
            if let Some(path) = &watched
                && (awaits || ready_after.is_none())
                && let Ok(log) = fs::read(path)
            {
                let log = String::from_utf8_lossy(&log);
                if ready_after.is_none() && log.contains(ipc::markers::READY) {
                    ready_after = Some(started.elapsed());
                    ready_cpu = cpu_time(guard.pid());
                }
                if awaits && self.stop.reached(&log) {
                    guard.kill();
                    break QemuExit::Stopped;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                guard.kill();
                break QemuExit::Timeout;
            }
            thread::sleep(POLL_INTERVAL);
        };
        drop(guard);
        if let Some(console) = console {
            // QEMU is gone, so its end of the pipe is closed and the copy ends.
            let _ = console.join();
        }
        let elapsed = started.elapsed();
        step.done(&format!(" ({}, {exit})", self.firmware()));

        let read = |path: &Path| fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
        let serial = match &serial_path {
            Some(path) => read(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => String::new(),
        };
        let qemu_stderr = read(&stderr_path).unwrap_or_default();
        if let QemuExit::Other(1) = exit
            && serial.is_empty()
            && !qemu_stderr.is_empty()
        {
            // QEMU refused to start (bad option, unreadable image): that is not a boot.
            bail!(
                "{} failed to start: {}",
                qemu.display(),
                qemu_stderr.trim_end()
            );
        }
        Ok(Boot {
            exit,
            serial,
            qemu_stderr,
            firmware: self.firmware(),
            elapsed,
            ready_after,
            ready_cpu,
            serial_path,
            _dir: Some(dir),
        })
    }
}

/// Machine: the accelerator (KVM with the host's CPU model), no display, no network card
/// (its option ROM and OVMF's network drivers cost every boot time, and nothing uses it),
/// no reboot on triple fault, the debug-exit device.
fn machine_args(accel: Accel) -> Vec<OsString> {
    let exit_device = format!(
        "isa-debug-exit,iobase={:#x},iosize=0x04",
        ipc::markers::QEMU_EXIT_PORT
    );
    let cpu: &[&str] = match accel {
        Accel::Tcg => &[],
        Accel::Kvm => &["-cpu", "host"],
    };
    ["-accel", accel.as_str()]
        .iter()
        .chain(cpu)
        .chain(&[
            "-m",
            MEMORY,
            "-display",
            "none",
            "-nic",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-device",
            &exit_device,
        ])
        .map(OsString::from)
        .collect()
}

/// The ISO as a CD-ROM, booted first.
fn boot_args(iso: &Path) -> Result<Vec<OsString>> {
    Ok(vec![
        "-drive".into(),
        drive_option("media=cdrom,readonly=on", iso)?,
        "-boot".into(),
        "order=d".into(),
    ])
}

/// Under OVMF the CD sits on an AHCI controller, first in the boot order: OVMF and GRUB read
/// it by DMA. On the IDE channel every 2 KiB sector was 1024 port reads, each a trip
/// through QEMU (~0.5 s of a TCG boot's CPU for GRUB's EFI image, its modules and the
/// nucleus).
fn uefi_boot_args(iso: &Path) -> Result<Vec<OsString>> {
    Ok(vec![
        "-device".into(),
        "ahci,id=ahci".into(),
        "-drive".into(),
        drive_option("if=none,id=cd,media=cdrom,readonly=on", iso)?,
        "-device".into(),
        "ide-cd,bus=ahci.0,drive=cd,bootindex=0".into(),
    ])
}

/// Under OVMF and TCG the CPU model has 1 GiB pages (`pdpe1gb`): OVMF's DXE loader then maps
/// the address space with 1 GiB pages instead of 2 MiB ones, and its CPU driver walks 64
/// entries instead of 32768 (~0.2 s of CPU). KVM's `-cpu host` has them where the host has.
fn uefi_cpu_args(accel: Accel) -> Vec<OsString> {
    match accel {
        Accel::Tcg => vec!["-cpu".into(), "qemu64,+pdpe1gb".into()],
        Accel::Kvm => Vec::new(),
    }
}

/// Under SeaBIOS, no graphics card: nothing looks at a screen (`-display none`; GRUB's
/// console goes nowhere, COM1 stays the nucleus'), and without one SeaBIOS runs no VGA
/// option ROM and GRUB sets no mode (~20 ms of QEMU's CPU per boot). OVMF keeps its card:
/// with none GRUB writes its errors and banners to the firmware console, which OVMF mirrors
/// to COM1.
fn bios_display_args() -> Vec<OsString> {
    vec!["-vga".into(), "none".into()]
}

/// The lowest address of OVMF's ROM: the TPM's MMIO window (TIS and CRB, 0xFED40000-0xFED44FFF).
/// QEMU reads an address no device claims as 0, and OVMF's TPM probe takes a 0 there for a
/// TPM that never grants it a locality: it polls twice for 750 ms of 30 µs steps, 1.5-2 s of
/// a TCG boot. The ROM reaches down to it, so the window reads 0xFF as on a board without a
/// TPM and the probe gives up at once. The ROM stops short of the HPET (0xFED00000); the
/// local APIC's page (0xFEE00000) lies above its start, and QEMU's APIC region covers it.
pub const FIRMWARE_ROM_BASE: u64 = 0xFED4_0000;

/// The size of OVMF's ROM: from [`FIRMWARE_ROM_BASE`] to the top of the 32-bit space.
pub const FIRMWARE_ROM_SIZE: u64 = (1 << 32) - FIRMWARE_ROM_BASE;

/// OVMF as one read-only image (`-bios`): the variable store template and the code (or a
/// combined image) at the top, 0xFF below them down to [`FIRMWARE_ROM_BASE`], written into
/// the run's directory. A ROM and not flash: OVMF finds no writable variable flash and keeps
/// its variables in RAM, so no boot writes the store; on flash every write is a synchronous
/// write of QEMU's backing file (0.3-0.9 s of a TCG boot, every boot: the console variables
/// are rewritten each time). Each boot starts from the template (nothing persists, as with
/// the private copy of the store before).
fn firmware_args(ovmf: &Ovmf, run_dir: &Path) -> Result<Vec<OsString>> {
    let mut firmware = Vec::new();
    for part in ovmf.vars.iter().chain([&ovmf.code]) {
        let bytes = fs::read(part).with_context(|| format!("cannot read {}", part.display()))?;
        firmware.extend_from_slice(&bytes);
    }
    let rom = firmware_rom(firmware);
    let path = run_dir.join("OVMF.rom");
    fs::write(&path, rom).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(vec!["-bios".into(), path.into()])
}

/// `firmware` at the end of a [`FIRMWARE_ROM_SIZE`] image filled with 0xFF; a firmware that
/// is larger stays as it is.
fn firmware_rom(firmware: Vec<u8>) -> Vec<u8> {
    let size = usize::try_from(FIRMWARE_ROM_SIZE).unwrap_or(usize::MAX);
    if firmware.len() >= size {
        return firmware;
    }
    let mut rom = vec![0xFF; size - firmware.len()];
    rom.extend_from_slice(&firmware);
    rom
}

/// The CPU time QEMU's threads have used so far (Linux: `/proc/PID/task/*/schedstat`, in
/// nanoseconds; a thread that ends while they are read is left out); `None` where that
/// cannot be read.
fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total: u64 = 0;
    let mut read_any = false;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        total = total.saturating_add(ns);
        read_any = true;
    }
    read_any.then(|| Duration::from_nanos(total))
}

/// COM1 to a file or to the terminal.
fn serial_args(path: Option<&Path>) -> Result<Vec<OsString>> {
    let target = match path {
        None => OsString::from("stdio"),
        Some(path) => {
            let mut target = OsString::from("file:");
            target.push(qemu_path(path)?);
            target
        }
    };
    Ok(vec!["-serial".into(), target])
}

/// COM1 to the terminal (a chardev, so QEMU can also log it to `log`). `signal=on`: Ctrl-C
/// on the terminal still ends QEMU.
fn stdio_serial_args(log: Option<&Path>) -> Result<Vec<OsString>> {
    let mut chardev = OsString::from("stdio,id=com1,signal=on");
    if let Some(log) = log {
        chardev.push(",logfile=");
        chardev.push(qemu_path(log)?.replace(',', ",,"));
    }
    Ok(vec![
        "-chardev".into(),
        chardev,
        "-serial".into(),
        "chardev:com1".into(),
    ])
}

/// `-drive` value: `options,format=raw,file=<path>` with QEMU's comma escaping.
fn drive_option(options: &str, path: &Path) -> Result<OsString> {
    let mut value = OsString::from(format!("{options},format=raw,file="));
    value.push(qemu_path(path)?.replace(',', ",,"));
    Ok(value)
}

fn qemu_path(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(s) => Ok(s.to_owned()),
        None => bail!("QEMU needs UTF-8 paths: {}", path.display()),
    }
}

#[cfg(test)]
mod tests;
