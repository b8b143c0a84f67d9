//! The nucleus command line: multiboot2 bytes in, typed `Options` and warnings out.
//!
//! Owns the syntax (whitespace-separated `key` or `key=value` words, architecture.md §2
//! step 4) and the option table. The bytes come from the boot loader and may be anything:
//! not UTF-8, NUL-terminated or not, kilobytes long. So parsing is one pass without
//! allocation, never panics, and every unknown or malformed word becomes one typed
//! [`Warning`]; boot always goes on with the defaults. At most [`MAX_WARNINGS`] warnings are
//! reported, then one [`Warning::Suppressed`] with the count of the rest.
//!
//! New options (e.g. `server-fault=`) are one more arm in `Parser::word` and one more
//! field in [`Options`].

use core::fmt;
use core::marker::PhantomData;

use bitflags::bitflags;

use crate::fred::FredMode;

/// How many warnings are reported before the rest are only counted.
pub const MAX_WARNINGS: usize = 8;
/// Longest stretch of a word a warning echoes; longer words end in `...`.
const ECHO_LIMIT: usize = 48;

/// Console verbosity (`loglvl=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl LogLevel {
    /// The option value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
    /// The option value; Xen's words are read where one of ours means the same (`warning`,
    /// and `all` for the most verbose), so a Xen habit does not cost a warning.
    fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"error" => Some(Self::Error),
            b"warn" | b"warning" => Some(Self::Warn),
            b"info" => Some(Self::Info),
            b"debug" | b"all" => Some(Self::Debug),
            _ => None,
        }
    }
}

/// What the binary trace on COM2 records (`trace=`); the default is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TraceLevel {
    /// Nothing is recorded; each emitter costs one load and one branch.
    #[default]
    Off,
    /// Events delivered, forwarded and replied to; server start, stop and restart.
    Events,
    /// Also context switches and syscalls.
    All,
}

impl TraceLevel {
    /// The option value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Events => "events",
            Self::All => "all",
        }
    }
    fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"off" => Some(Self::Off),
            b"events" => Some(Self::Events),
            b"all" => Some(Self::All),
            _ => None,
        }
    }
}

/// One option as a help text lists it: syntax, one line of meaning, and an example word
/// that sets it (a test parses every example, so the list cannot name an option the
/// parser does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHelp {
    pub syntax: &'static str,
    pub help: &'static str,
    pub example: &'static str,
}

/// Every option the parser knows, in the order of [`Options`]' fields.
pub const OPTIONS: [OptionHelp; 13] = [
    OptionHelp {
        syntax: "fred=on|off|auto",
        help: "event delivery: FRED, the IDT, or FRED when the CPU has FRED and LKGS (auto)",
        example: "fred=off",
    },
    OptionHelp {
        syntax: "pv-shim",
        help: "PV shim mode: no FRED, since PV32 guests need rings 1 and 2",
        example: "pv-shim",
    },
    OptionHelp {
        syntax: "loglvl=error|warn|info|debug",
        help: "console verbosity (info); Xen's warning and all mean warn and debug",
        example: "loglvl=all",
    },
    OptionHelp {
        syntax: "exit=qemu|bochs",
        help: "after `nucleus: ready` or a panic, end the emulator (run adds exit=qemu)",
        example: "exit=bochs",
    },
    OptionHelp {
        syntax: "selftest=NAME[,NAME...]",
        help: "self-tests at boot: `all` (every one after which boot goes on) or names",
        example: "selftest=all",
    },
    OptionHelp {
        syntax: "bench",
        help: "run the measurements after boot (what `image-builder bench` adds)",
        example: "bench",
    },
    OptionHelp {
        syntax: "server-args=NAME:ARG[,ARG...]",
        help: "arguments for server NAME, commas read as spaces (at most 4 servers)",
        example: "server-args=pv-server:selfcheck",
    },
    OptionHelp {
        syntax: "trace=off|events|all",
        help: "binary trace on COM2 (off); `run --trace FILE` decodes it; all adds switches, syscalls",
        example: "trace=events",
    },
    OptionHelp {
        syntax: "cpus=N",
        help: "bring up at most N CPUs, the boot CPU included (default: every CPU the MADT lists)",
        example: "cpus=1",
    },
    OptionHelp {
        syntax: "kexec=reboot-into",
        help: "once the system is ready, fred-server asks for a kexec into the kexec image (tests)",
        example: "kexec=reboot-into",
    },
    OptionHelp {
        syntax: "crashkernel",
        help: "on a nucleus panic or #DF, kexec into the kexec image instead of halting",
        example: "crashkernel",
    },
    OptionHelp {
        syntax: "kexec-generation=N",
        help: "which kexec generation this nucleus is (1 from the boot loader; set by a kexec)",
        example: "kexec-generation=2",
    },
    OptionHelp {
        syntax: "kexec-reason=request|panic|double-fault",
        help: "why the previous generation handed over (set by a kexec)",
        example: "kexec-reason=panic",
    },
];

/// When fred-server asks for a kexec (`kexec=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KexecWhen {
    /// Only when something asks (nothing does yet).
    #[default]
    OnRequest,
    /// Once the system is ready (`kexec=reboot-into`).
    RebootInto,
}

/// Why the previous nucleus handed the machine over (`kexec-reason=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KexecReason {
    /// fred-server asked for it.
    Request,
    /// `crashkernel`: the nucleus panicked.
    Panic,
    /// `crashkernel`: an unrecoverable `#DF`.
    DoubleFault,
}

impl KexecReason {
    /// The option value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Panic => "panic",
            Self::DoubleFault => "double-fault",
        }
    }

    /// What the new generation says about it.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Request => "fred-server asked for it",
            Self::Panic => "crashkernel: the previous nucleus panicked",
            Self::DoubleFault => "crashkernel: the previous nucleus took an unrecoverable #DF",
        }
    }

    fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"request" => Some(Self::Request),
            b"panic" => Some(Self::Panic),
            b"double-fault" => Some(Self::DoubleFault),
            _ => None,
        }
    }
}

/// How a test run ends (`exit=`): through QEMU's `isa-debug-exit` or Bochs' shutdown port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestExit {
    Qemu,
    Bochs,
}

impl TestExit {
    /// The option value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Bochs => "bochs",
        }
    }
    fn from_bytes(value: &[u8]) -> Option<Self> {
        match value {
            b"qemu" => Some(Self::Qemu),
            b"bochs" => Some(Self::Bochs),
            _ => None,
        }
    }
}

bitflags! {
    /// Self-tests to run at boot (`selftest=name[,name…]`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SelfTests: u32 {
        /// `int3`: breakpoint, reported and resumed.
        const INT3 = 1 << 0;
        /// `ud2`: invalid opcode, reported and skipped.
        const UD2 = 1 << 1;
        /// `pf-unmapped`: read of an unmapped page.
        const PF_UNMAPPED = 1 << 2;
        /// `pf-nx`: fetch from a no-execute page.
        const PF_NX = 1 << 3;
        /// `gp-selector`: load of a bad selector, `#GP` with a selector error code.
        const GP_SELECTOR = 1 << 4;
        /// `df-recursion`: stack overflow escalating to `#DF` (terminal).
        const DF_RECURSION = 1 << 5;
        /// `early-fault`: a fault before the command line is parsed (terminal).
        const EARLY_FAULT = 1 << 6;
        /// `panic`: the panic handler (terminal).
        const PANIC = 1 << 7;
        /// `nested-tick`: a timer tick taken inside nucleus code returns to it (issue 14).
        const NESTED_TICK = 1 << 8;
        /// `console-nested`: an event nested in a console write prints and returns.
        const CONSOLE_NESTED = 1 << 9;
        /// `fred-nested`: a ring-0 event comes in at the entry +256 on the current stack.
        const FRED_NESTED = 1 << 10;
        /// `fred-event-data`: `#PF` event data is CR2, `#DB`'s is DR6 in FRED polarity.
        const FRED_EVENT_DATA = 1 << 11;
        /// `fred-erets`: ERETS from an SL3 event returns to stack level 0.
        const FRED_ERETS = 1 << 12;
        /// `fred-ring3`: a server's event comes in at the base entry on SL0, user GS kept.
        const FRED_RING3 = 1 << 13;
        /// `fred-sl1-df`: a `#PF` configured for SL1 escalates to `#DF` on SL3 (terminal).
        const FRED_SL1_DF = 1 << 14;
        /// `fred-sl2-df`: the same for SL2 (terminal).
        const FRED_SL2_DF = 1 << 15;
        /// `cpu-df`: each AP overflows its primary stack; its `#DF` must arrive on its own
        /// `#DF` stack (terminal for that AP only, which parks).
        const CPU_DF = 1 << 16;
        /// `cpu-ipi`: every AP's local APIC timer ticks, and it answers a reschedule IPI, a
        /// TLB shootdown and an NMI to all but self.
        const CPU_IPI = 1 << 17;
    }
}

impl SelfTests {
    /// What `all` selects: every test after which boot goes on.
    pub const ALL_RESUMABLE: Self = Self::INT3
        .union(Self::UD2)
        .union(Self::PF_UNMAPPED)
        .union(Self::PF_NX)
        .union(Self::GP_SELECTOR);

    /// Test names as spelled on the command line, in the order they run.
    pub const NAMES: [(&'static str, Self); 18] = [
        ("int3", Self::INT3),
        ("ud2", Self::UD2),
        ("pf-unmapped", Self::PF_UNMAPPED),
        ("pf-nx", Self::PF_NX),
        ("gp-selector", Self::GP_SELECTOR),
        ("nested-tick", Self::NESTED_TICK),
        ("console-nested", Self::CONSOLE_NESTED),
        ("fred-nested", Self::FRED_NESTED),
        ("fred-event-data", Self::FRED_EVENT_DATA),
        ("fred-erets", Self::FRED_ERETS),
        ("fred-ring3", Self::FRED_RING3),
        ("fred-sl1-df", Self::FRED_SL1_DF),
        ("fred-sl2-df", Self::FRED_SL2_DF),
        ("df-recursion", Self::DF_RECURSION),
        ("cpu-df", Self::CPU_DF),
        ("cpu-ipi", Self::CPU_IPI),
        ("early-fault", Self::EARLY_FAULT),
        ("panic", Self::PANIC),
    ];

    fn from_option_name(name: &[u8]) -> Option<Self> {
        if name == b"all" {
            return Some(Self::ALL_RESUMABLE);
        }
        Self::NAMES
            .iter()
            .find(|(known, _)| known.as_bytes() == name)
            .map(|&(_, test)| test)
    }
}

/// Everything the command line can set; `Default` is an empty command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub fred: FredMode,
    pub pv_shim: bool,
    pub loglvl: LogLevel,
    pub exit: Option<TestExit>,
    pub selftests: SelfTests,
    /// `bench`: run the measurement build's benchmarks after boot.
    pub bench: bool,
    /// `server-args=NAME:ARG[,ARG…]`: options handed to one server in its start page.
    pub server_args: ServerArgsTable,
    /// `trace=off|events|all`: what the binary trace on COM2 records.
    pub trace: TraceLevel,
    /// `cpus=N`: at most N CPUs online (N >= 1); `None` is every CPU found.
    pub cpus: Option<u16>,
    /// `server-cpu=NAME:N`: the CPU (by bring-up number) server NAME runs on; the boot CPU
    /// otherwise. Stored as `ServerArgs` whose argument is the number ([`Options::server_cpu`]).
    pub server_cpu: ServerArgsTable,
    /// `kexec=reboot-into`: fred-server asks for a kexec once the system is ready.
    pub kexec: KexecWhen,
    /// `crashkernel`: a panic or `#DF` kexecs into the kexec image instead of halting.
    pub crashkernel: bool,
    /// `kexec-generation=N`: 1 when started by the boot loader, N+1 after a kexec from N.
    pub generation: Generation,
    /// `kexec-reason=`: why the previous generation handed over (none on a first boot).
    pub kexec_reason: Option<KexecReason>,
}

impl Options {
    /// The CPU `server-cpu=` names for server `name`.
    pub fn server_cpu(&self, name: &[u8]) -> Option<u8> {
        self.server_cpu
            .get(name)
            .and_then(|a| parse_cpu_number(a.args()))
    }
}

/// A `server-cpu=` number: decimal, 0-255.
fn parse_cpu_number(text: &[u8]) -> Option<u8> {
    core::str::from_utf8(text).ok()?.parse::<u8>().ok()
}

/// A kexec generation (`kexec-generation=`): 1 unless a kexec set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

impl Default for Generation {
    fn default() -> Self {
        Self(1)
    }
}

/// Longest server name in `server-args=` (the start page holds 32 bytes).
pub const SERVER_NAME_MAX: usize = 31;
/// Longest argument string in `server-args=` (the start page holds 128 bytes).
pub const SERVER_ARGS_MAX: usize = 127;
/// How many servers can get `server-args=`.
pub const SERVER_ARGS_SLOTS: usize = 4;

/// One `server-args=NAME:ARGS` option: ARGS with commas turned into spaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerArgs {
    name: [u8; SERVER_NAME_MAX],
    name_len: u8,
    args: [u8; SERVER_ARGS_MAX],
    args_len: u8,
}

impl ServerArgs {
    /// Parses `NAME:ARG[,ARG…]`; `None` if it is not of that form or too long.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let colon = value.iter().position(|&b| b == b':')?;
        let (name, args) = (&value[..colon], &value[colon + 1..]);
        if name.is_empty() || name.len() > SERVER_NAME_MAX || args.len() > SERVER_ARGS_MAX {
            return None;
        }
        let mut this = Self {
            name: [0; SERVER_NAME_MAX],
            name_len: name.len() as u8,
            args: [0; SERVER_ARGS_MAX],
            args_len: args.len() as u8,
        };
        this.name[..name.len()].copy_from_slice(name);
        for (slot, &b) in this.args.iter_mut().zip(args) {
            *slot = if b == b',' { b' ' } else { b };
        }
        Some(this)
    }

    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }

    /// Space-separated arguments as the server sees them.
    pub fn args(&self) -> &[u8] {
        &self.args[..usize::from(self.args_len)]
    }
}

impl fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Echo(self.name()), Echo(self.args()))
    }
}

/// The `server-args=` options, one per server name (a later option for the same server
/// replaces the earlier one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerArgsTable {
    slots: [Option<ServerArgs>; SERVER_ARGS_SLOTS],
}

impl ServerArgsTable {
    /// Adds or replaces; `false` if the table is full.
    pub fn insert(&mut self, args: ServerArgs) -> bool {
        if let Some(slot) = self
            .slots
            .iter_mut()
            .flatten()
            .find(|s| s.name() == args.name())
        {
            *slot = args;
            return true;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(args);
                true
            }
            None => false,
        }
    }

    /// The arguments for server `name`.
    pub fn get(&self, name: &[u8]) -> Option<&ServerArgs> {
        self.slots.iter().flatten().find(|s| s.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ServerArgs> {
        self.slots.iter().flatten()
    }
}

/// Renders the options as a command line that parses back to them (defaults included,
/// except absent flags), e.g. for the image builder's GRUB config.
impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fred={} loglvl={}", self.fred, self.loglvl.as_str())?;
        if self.pv_shim {
            f.write_str(" pv-shim")?;
        }
        if let Some(exit) = self.exit {
            write!(f, " exit={}", exit.as_str())?;
        }
        if self.bench {
            f.write_str(" bench")?;
        }
        for args in self.server_args.iter() {
            write!(f, " server-args={}:", Echo(args.name()))?;
            for &b in args.args() {
                let b = if b == b' ' { b',' } else { b };
                write!(f, "{}", Echo(&[b]))?;
            }
        }
        if self.trace != TraceLevel::Off {
            write!(f, " trace={}", self.trace.as_str())?;
        }
        if let Some(cpus) = self.cpus {
            write!(f, " cpus={cpus}")?;
        }
        for pin in self.server_cpu.iter() {
            write!(f, " server-cpu={}:{}", Echo(pin.name()), Echo(pin.args()))?;
        }
        if self.kexec == KexecWhen::RebootInto {
            f.write_str(" kexec=reboot-into")?;
        }
        if self.crashkernel {
            f.write_str(" crashkernel")?;
        }
        if self.generation != Generation::default() {
            write!(f, " kexec-generation={}", self.generation.0)?;
        }
        if let Some(reason) = self.kexec_reason {
            write!(f, " kexec-reason={}", reason.as_str())?;
        }
        let mut separator = " selftest=";
        for (name, test) in SelfTests::NAMES {
            if self.selftests.contains(test) {
                write!(f, "{separator}{name}")?;
                separator = ",";
            }
        }
        Ok(())
    }
}

/// Bytes from the command line, echoed safely: printable ASCII as is, everything else (and
/// `'` and `\`) as `\xNN`, cut after a few dozen bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a>(pub &'a [u8]);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0.iter().take(ECHO_LIMIT) {
            if (0x20..0x7f).contains(&byte) && byte != b'\'' && byte != b'\\' {
                write!(f, "{}", byte as char)?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        if self.0.len() > ECHO_LIMIT {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

/// One problem with the command line; `Display` is the console line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    /// A word that names no option.
    UnknownOption { word: Echo<'a> },
    /// A word that is not UTF-8.
    NotUtf8 { word: Echo<'a> },
    /// `key=value` with a value the option does not take; `kept` is what stays in effect.
    BadValue {
        key: &'static str,
        value: Echo<'a>,
        expected: &'static str,
        kept: &'static str,
    },
    /// `key` alone for an option that needs a value.
    MissingValue {
        key: &'static str,
        expected: &'static str,
        kept: &'static str,
    },
    /// `key=value` for a flag that takes no value; the word is ignored.
    UnexpectedValue { key: &'static str, value: Echo<'a> },
    /// A name in `selftest=` that names no test; the other names still count.
    UnknownSelfTest { name: Echo<'a> },
    /// This many further warnings were not reported.
    Suppressed { count: usize },
}

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOption { word } => write!(f, "cmdline: unknown option '{word}' ignored"),
            Self::NotUtf8 { word } => write!(f, "cmdline: option '{word}' is not UTF-8, ignored"),
            Self::BadValue {
                key,
                value,
                expected,
                kept,
            } => {
                write!(
                    f,
                    "cmdline: {key}={value}: expected {expected}, using {kept}"
                )
            }
            Self::MissingValue {
                key,
                expected,
                kept,
            } => {
                write!(f, "cmdline: {key}: expected {key}={expected}, using {kept}")
            }
            Self::UnexpectedValue { key, value } => {
                write!(f, "cmdline: {key}={value}: {key} takes no value, ignored")
            }
            Self::UnknownSelfTest { name } => {
                write!(
                    f,
                    "cmdline: selftest: unknown test '{name}' ignored (known: all"
                )?;
                for (known, _) in SelfTests::NAMES {
                    write!(f, ", {known}")?;
                }
                f.write_str(")")
            }
            Self::Suppressed { count } => write!(f, "cmdline: {count} more warnings suppressed"),
        }
    }
}

/// Bytes that separate words (besides NUL, which ends the command line).
const fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

struct Parser<'a, F: FnMut(Warning<'a>)> {
    options: Options,
    reported: usize,
    suppressed: usize,
    sink: F,
    line: PhantomData<&'a [u8]>,
}

impl<'a, F: FnMut(Warning<'a>)> Parser<'a, F> {
    fn warn(&mut self, warning: Warning<'a>) {
        if self.reported < MAX_WARNINGS {
            self.reported += 1;
            (self.sink)(warning);
        } else {
            self.suppressed += 1;
        }
    }

    fn word(&mut self, word: &'a [u8]) {
        if core::str::from_utf8(word).is_err() {
            return self.warn(Warning::NotUtf8 { word: Echo(word) });
        }
        let (key, value) = match word.iter().position(|&b| b == b'=') {
            Some(at) => (&word[..at], Some(&word[at + 1..])),
            None => (word, None),
        };
        match key {
            b"fred" => {
                let kept = self.options.fred.as_str();
                match value.map(|v| (v, FredMode::from_bytes(v))) {
                    Some((_, Some(mode))) => self.options.fred = mode,
                    Some((value, None)) => self.warn(Warning::BadValue {
                        key: "fred",
                        value: Echo(value),
                        expected: "on|off|auto",
                        kept,
                    }),
                    None => self.warn(Warning::MissingValue {
                        key: "fred",
                        expected: "on|off|auto",
                        kept,
                    }),
                }
            }
            b"pv-shim" => match value {
                None => self.options.pv_shim = true,
                Some(value) => self.warn(Warning::UnexpectedValue {
                    key: "pv-shim",
                    value: Echo(value),
                }),
            },
            b"loglvl" => {
                let kept = self.options.loglvl.as_str();
                let expected = "error|warn|info|debug";
                match value.map(|v| (v, LogLevel::from_bytes(v))) {
                    Some((_, Some(level))) => self.options.loglvl = level,
                    Some((value, None)) => self.warn(Warning::BadValue {
                        key: "loglvl",
                        value: Echo(value),
                        expected,
                        kept,
                    }),
                    None => self.warn(Warning::MissingValue {
                        key: "loglvl",
                        expected,
                        kept,
                    }),
                }
            }
            b"exit" => {
                let kept = match self.options.exit {
                    Some(exit) => exit.as_str(),
                    None => "none",
                };
                match value.map(|v| (v, TestExit::from_bytes(v))) {
                    Some((_, Some(exit))) => self.options.exit = Some(exit),
                    Some((value, None)) => self.warn(Warning::BadValue {
                        key: "exit",
                        value: Echo(value),
                        expected: "qemu|bochs",
                        kept,
                    }),
                    None => self.warn(Warning::MissingValue {
                        key: "exit",
                        expected: "qemu|bochs",
                        kept,
                    }),
                }
            }
            b"selftest" => match value {
                Some(list) if !list.is_empty() => {
                    for name in list.split(|&b| b == b',').filter(|name| !name.is_empty()) {
                        match SelfTests::from_option_name(name) {
                            Some(test) => self.options.selftests |= test,
                            None => self.warn(Warning::UnknownSelfTest { name: Echo(name) }),
                        }
                    }
                }
                _ => self.warn(Warning::MissingValue {
                    key: "selftest",
                    expected: "name[,name...]",
                    kept: "none",
                }),
            },
            b"bench" => match value {
                None => self.options.bench = true,
                Some(value) => self.warn(Warning::UnexpectedValue {
                    key: "bench",
                    value: Echo(value),
                }),
            },
            b"server-args" => match value.map(|v| (v, ServerArgs::parse(v))) {
                Some((value, Some(args))) => {
                    if !self.options.server_args.insert(args) {
                        self.warn(Warning::BadValue {
                            key: "server-args",
                            value: Echo(value),
                            expected: "at most 4 servers",
                            kept: "the first 4",
                        });
                    }
                }
                Some((value, None)) => self.warn(Warning::BadValue {
                    key: "server-args",
                    value: Echo(value),
                    expected: "NAME:ARG[,ARG...] (name <= 31, args <= 127 bytes)",
                    kept: "none",
                }),
                None => self.warn(Warning::MissingValue {
                    key: "server-args",
                    expected: "NAME:ARG[,ARG...]",
                    kept: "none",
                }),
            },
            b"server-cpu" => {
                let pin = value
                    .and_then(ServerArgs::parse)
                    .filter(|a| parse_cpu_number(a.args()).is_some());
                match (value, pin) {
                    (Some(value), Some(pin)) => {
                        if !self.options.server_cpu.insert(pin) {
                            self.warn(Warning::BadValue {
                                key: "server-cpu",
                                value: Echo(value),
                                expected: "at most 4 servers",
                                kept: "the first 4",
                            });
                        }
                    }
                    (Some(value), None) => self.warn(Warning::BadValue {
                        key: "server-cpu",
                        value: Echo(value),
                        expected: "NAME:N (N a CPU number 0-255)",
                        kept: "the boot CPU",
                    }),
                    (None, _) => self.warn(Warning::MissingValue {
                        key: "server-cpu",
                        expected: "NAME:N",
                        kept: "the boot CPU",
                    }),
                }
            }
            b"trace" => {
                let kept = self.options.trace.as_str();
                let expected = "off|events|all";
                match value.map(|v| (v, TraceLevel::from_bytes(v))) {
                    Some((_, Some(level))) => self.options.trace = level,
                    Some((value, None)) => self.warn(Warning::BadValue {
                        key: "trace",
                        value: Echo(value),
                        expected,
                        kept,
                    }),
                    None => self.warn(Warning::MissingValue {
                        key: "trace",
                        expected,
                        kept,
                    }),
                }
            }
            b"cpus" => {
                let count = value
                    .and_then(|v| core::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|&n| n >= 1);
                match (value, count) {
                    (_, Some(n)) => self.options.cpus = Some(n),
                    (Some(value), None) => self.warn(Warning::BadValue {
                        key: "cpus",
                        value: Echo(value),
                        expected: "a count from 1 to 65535",
                        kept: "every CPU",
                    }),
                    (None, None) => self.warn(Warning::MissingValue {
                        key: "cpus",
                        expected: "N",
                        kept: "every CPU",
                    }),
                }
            }
            b"kexec" => match value {
                Some(b"reboot-into") => self.options.kexec = KexecWhen::RebootInto,
                Some(value) => self.warn(Warning::BadValue {
                    key: "kexec",
                    value: Echo(value),
                    expected: "reboot-into",
                    kept: "on request",
                }),
                None => self.warn(Warning::MissingValue {
                    key: "kexec",
                    expected: "reboot-into",
                    kept: "on request",
                }),
            },
            b"crashkernel" => match value {
                None => self.options.crashkernel = true,
                Some(value) => self.warn(Warning::UnexpectedValue {
                    key: "crashkernel",
                    value: Echo(value),
                }),
            },
            b"kexec-generation" => {
                let n = value
                    .and_then(|v| core::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|&n| n >= 1);
                match (value, n) {
                    (_, Some(n)) => self.options.generation = Generation(n),
                    (Some(value), None) => self.warn(Warning::BadValue {
                        key: "kexec-generation",
                        value: Echo(value),
                        expected: "a generation from 1",
                        kept: "1",
                    }),
                    (None, None) => self.warn(Warning::MissingValue {
                        key: "kexec-generation",
                        expected: "N",
                        kept: "1",
                    }),
                }
            }
            b"kexec-reason" => match value.map(|v| (v, KexecReason::from_bytes(v))) {
                Some((_, Some(reason))) => self.options.kexec_reason = Some(reason),
                Some((value, None)) => self.warn(Warning::BadValue {
                    key: "kexec-reason",
                    value: Echo(value),
                    expected: "request|panic|double-fault",
                    kept: "none",
                }),
                None => self.warn(Warning::MissingValue {
                    key: "kexec-reason",
                    expected: "request|panic|double-fault",
                    kept: "none",
                }),
            },
            _ => self.warn(Warning::UnknownOption { word: Echo(word) }),
        }
    }
}

/// Parses a command line. Stops at the first NUL; a first word starting with `/` is the
/// kernel's path (some boot loaders pass it) and is skipped. Later words win over earlier
/// ones. `warn` receives at most [`MAX_WARNINGS`] + 1 warnings.
pub fn parse<'a>(line: &'a [u8], warn: impl FnMut(Warning<'a>)) -> Options {
    let line = match line.iter().position(|&b| b == 0) {
        Some(end) => &line[..end],
        None => line,
    };
    let mut parser = Parser {
        options: Options::default(),
        reported: 0,
        suppressed: 0,
        sink: warn,
        line: PhantomData,
    };
    for (index, word) in line
        .split(|&b| is_space(b))
        .filter(|word| !word.is_empty())
        .enumerate()
    {
        if index == 0 && word.first() == Some(&b'/') {
            continue;
        }
        parser.word(word);
    }
    if parser.suppressed > 0 {
        (parser.sink)(Warning::Suppressed {
            count: parser.suppressed,
        });
    }
    parser.options
}

#[cfg(test)]
mod tests;
