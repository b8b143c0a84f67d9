//! PV64 guests on the tools' command line (issue 15 point 1): `--guest NAME=PATH[,mem=MIB]
//! [,cmdline=TEXT][,cpu=N]` ships the guest ELF as boot module `guest NAME mem=MIB [cpu=N]
//! cmdline=TEXT` (pv-server reads that text and boots it, the nucleus places the vCPU on CPU
//! N), and the run's outcome is read from pv-server's summary line once the last guest ended.

use std::path::PathBuf;

use crate::grub;

/// Memory of a guest without `mem=`.
pub const DEFAULT_MIB: u32 = 16;
/// Most memory one guest may ask for here; pv-server refuses what is not free (and more
/// than 64 MiB, its frame list's size) with a `rejected` line.
pub const MAX_MIB: u32 = 65536;
/// The module name every guest module's text starts with.
pub const MODULE_WORD: &str = "guest";
/// The line pv-server prints once every guest ended (after its `pv-server: ` prefix).
pub const ALL_ENDED: &str = "pv-server: guests: all ended";

/// One `--guest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GuestFile {
    pub name: String,
    pub path: PathBuf,
    pub mem_mib: u32,
    /// `cpu=N`: the CPU its vCPU runs on (the nucleus' default placement without it).
    pub cpu: Option<u8>,
    pub cmdline: String,
}

impl GuestFile {
    /// A guest of the default memory and no command line.
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            mem_mib: DEFAULT_MIB,
            cpu: None,
            cmdline: String::new(),
        }
    }

    pub fn mem(mut self, mib: u32) -> Self {
        self.mem_mib = mib;
        self
    }

    pub fn cpu(mut self, cpu: u8) -> Self {
        self.cpu = Some(cpu);
        self
    }

    pub fn cmdline(mut self, text: &str) -> Self {
        self.cmdline = text.into();
        self
    }

    /// The module's text: `guest NAME mem=MIB[ cpu=N][ cmdline=TEXT]`.
    pub fn module_text(&self) -> String {
        let mut text = format!("{MODULE_WORD} {} mem={}", self.name, self.mem_mib);
        if let Some(cpu) = self.cpu {
            text.push_str(&format!(" cpu={cpu}"));
        }
        if !self.cmdline.is_empty() {
            text.push_str(" cmdline=");
            text.push_str(&self.cmdline);
        }
        text
    }

    /// Checks what GRUB and pv-server would refuse, before any build.
    pub fn check(&self) -> Result<(), String> {
        let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if self.name.is_empty() || self.name.len() > 24 || !self.name.chars().all(plain) {
            return Err(format!(
                "guest name {:?} is not 1-24 of A-Z a-z 0-9 . _ -",
                self.name
            ));
        }
        if !(1..=MAX_MIB).contains(&self.mem_mib) {
            return Err(format!(
                "guest {}: mem={} is not between 1 and {MAX_MIB} MiB",
                self.name, self.mem_mib
            ));
        }
        if self.cmdline.len() > 1023 {
            return Err(format!(
                "guest {}: cmdline longer than 1023 bytes",
                self.name
            ));
        }
        grub::check_cmdline(&self.cmdline).map_err(|e| format!("guest {}: {e}", self.name))
    }
}

impl std::str::FromStr for GuestFile {
    type Err = String;

    /// `NAME=PATH[,mem=MIB][,cpu=N][,cmdline=TEXT]`; `cmdline=` is last and takes the rest
    /// (commas included).
    fn from_str(arg: &str) -> Result<Self, String> {
        let (name, rest) = arg.split_once('=').ok_or_else(|| {
            format!("expected NAME=PATH[,mem=MIB][,cpu=N][,cmdline=TEXT], got {arg:?}")
        })?;
        let (before_cmdline, cmdline) = match rest.split_once(",cmdline=") {
            Some((before, cmdline)) => (before, cmdline),
            None => (rest, ""),
        };
        let mut parts = before_cmdline.split(',');
        let path = parts.next().unwrap_or("");
        if path.is_empty() {
            return Err(format!("expected NAME=PATH, got {arg:?} (empty path)"));
        }
        let mut guest = GuestFile::new(name, path).cmdline(cmdline);
        for part in parts {
            if let Some(mib) = part.strip_prefix("mem=") {
                guest.mem_mib = mib
                    .parse()
                    .map_err(|_| format!("guest {name}: mem={mib} is not a number of MiB"))?
            } else if let Some(cpu) = part.strip_prefix("cpu=") {
                guest.cpu =
                    Some(cpu.parse().map_err(|_| {
                        format!("guest {name}: cpu={cpu} is not a CPU number 0-255")
                    })?)
            } else {
                return Err(format!(
                    "guest {name}: unknown option {part:?} (mem=, cpu=, cmdline=)"
                ));
            }
        }
        guest.check()?;
        Ok(guest)
    }
}

/// pv-server's summary: how many guests powered off out of how many, free KiB after and
/// before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestsEnded {
    pub powered_off: u32,
    pub total: u32,
    pub free_after_kib: u64,
    pub free_before_kib: u64,
}

impl GuestsEnded {
    /// Reads the summary line from a serial log.
    pub fn from_serial(serial: &str) -> Option<Self> {
        let line = serial.lines().find(|l| l.starts_with(ALL_ENDED))?;
        let numbers: Vec<u64> = line[ALL_ENDED.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        let [powered_off, total, after, before] = numbers[..] else {
            return None;
        };
        Some(Self {
            powered_off: powered_off as u32,
            total: total as u32,
            free_after_kib: after,
            free_before_kib: before,
        })
    }

    /// Every guest powered off.
    pub fn all_powered_off(&self) -> bool {
        self.total > 0 && self.powered_off == self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_arguments_parse_with_defaults() {
        let g: GuestFile = "hello=target/hello".parse().unwrap();
        assert_eq!(g, GuestFile::new("hello", "target/hello"));
        assert_eq!(g.module_text(), "guest hello mem=16");
        let g: GuestFile = "pt=/x/pt,mem=8,cmdline=a=1,b c".parse().unwrap();
        assert_eq!(g.mem_mib, 8);
        assert_eq!(g.cmdline, "a=1,b c");
        assert_eq!(g.module_text(), "guest pt mem=8 cmdline=a=1,b c");
        assert!("x".parse::<GuestFile>().is_err());
        assert!("x=".parse::<GuestFile>().is_err());
        assert!("x=p,mem=0".parse::<GuestFile>().is_err());
        assert!("x=p,mem=65537".parse::<GuestFile>().is_err());
        assert!("x=p,mem=lots".parse::<GuestFile>().is_err());
        assert!("x=p,cpus=2".parse::<GuestFile>().is_err());
        let g: GuestFile = "h=/x/h,cpu=3,mem=4,cmdline=a,cpu=1".parse().unwrap();
        assert_eq!(g.cpu, Some(3));
        assert_eq!(g.cmdline, "a,cpu=1");
        assert_eq!(g.module_text(), "guest h mem=4 cpu=3 cmdline=a,cpu=1");
        assert!("x=p,cpu=256".parse::<GuestFile>().is_err());
        assert!("x=p,cpu=one".parse::<GuestFile>().is_err());
        assert!("a b=p".parse::<GuestFile>().is_err());
        assert!("x=p,cmdline=$evil".parse::<GuestFile>().is_err());
    }

    #[test]
    fn the_summary_line_is_read_back() {
        let log = "nucleus: ready\npv-server: guests: all ended (1 of 2 powered off; free memory 100 KiB, 120 KiB before the first)\n";
        let ended = GuestsEnded::from_serial(log).unwrap();
        assert_eq!(
            ended,
            GuestsEnded {
                powered_off: 1,
                total: 2,
                free_after_kib: 100,
                free_before_kib: 120
            }
        );
        assert!(!ended.all_powered_off());
        assert!(GuestsEnded::from_serial("nothing").is_none());
    }
}
