//! Fault reports: who faulted, the event line, and the full `show_registers` dump.
//!
//! The dump is rendered with `ipc::dump::RegisterDump`'s `Display`, the very code the
//! nucleus uses on its own fatal path, with the prefix changed to `fred-server`, so a report
//! looks the same whoever prints it. Owners are named from `ServerStarted` messages
//! ([`OwnerNames`]); an owner we were not told about is printed as `owner N`.
//! Everything is written to a `fmt::Write` sink: the console on the target, a `String` in
//! the host tests.

use core::fmt::{self, Write};

use heapless::Vec;
use ipc::dump::{RegisterDump, Text};
use ipc::message::{DumpReason, DumpRecord, ServerName};
use ipc::{Event, EventKind};

/// Prefix of every line fred-server prints.
pub const PREFIX: &str = "fred-server";
/// Owners whose names are remembered.
pub const MAX_NAMED_OWNERS: usize = 16;
/// `int3` reports printed per owner before the rest are only counted.
pub const INT3_REPORTS: u32 = 3;
/// Every this many `int3`s from one owner, one line with the count (the cross-CPU event
/// stress checks that none was lost).
pub const INT3_MILESTONE: u32 = 25_000;

/// Owner ids and the names of the servers behind them.
#[derive(Debug, Default)]
pub struct OwnerNames {
    names: Vec<(u32, ServerName), MAX_NAMED_OWNERS>,
}

impl OwnerNames {
    pub const fn new() -> Self {
        Self { names: Vec::new() }
    }

    /// Records (or renames) `owner`. Returns false if the table is full.
    pub fn set(&mut self, owner: u32, name: ServerName) -> bool {
        if let Some(entry) = self.names.iter_mut().find(|(o, _)| *o == owner) {
            entry.1 = name;
            return true;
        }
        self.names.push((owner, name)).is_ok()
    }

    pub fn label(&self, owner: u32) -> OwnerLabel<'_> {
        OwnerLabel {
            owner,
            name: self.names.iter().find(|(o, _)| *o == owner).map(|(_, n)| n),
        }
    }
}

/// `pv-server (owner 2)`, or `owner 2` when the name is unknown.
#[derive(Clone, Copy, Debug)]
pub struct OwnerLabel<'a> {
    pub owner: u32,
    pub name: Option<&'a ServerName>,
}

impl OwnerLabel<'_> {
    /// Just the name (`pv-server`), or `owner 2`.
    pub fn short(&self) -> ShortLabel<'_> {
        ShortLabel(self)
    }
}

impl fmt::Display for OwnerLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "{name} (owner {})", self.owner),
            None => write!(f, "owner {}", self.owner),
        }
    }
}

/// See [`OwnerLabel::short`].
pub struct ShortLabel<'a>(&'a OwnerLabel<'a>);

impl fmt::Display for ShortLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.name {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "owner {}", self.0.owner),
        }
    }
}

/// Exception mnemonics (SDM vol. 3 §6.3.1; the same spelling as the dump's event line).
fn exception_name(vector: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
        "#26", "#27", "#HV", "#VC", "#SX", "#31",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("#??")
}

/// What happened, in a few words: `#PF at 0x401000 (error 0x6, address 0x0)`.
pub struct EventSummary<'a>(pub &'a Event);

impl fmt::Display for EventSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.0;
        match event.kind {
            EventKind::Exception {
                vector: 14,
                error_code,
            } => write!(
                f,
                "#PF at {:#x} (error {error_code:#x}, address {:#x})",
                event.rip, event.event_data
            ),
            EventKind::Exception { vector, error_code } => {
                write!(
                    f,
                    "{} at {:#x} (error {error_code:#x})",
                    exception_name(vector),
                    event.rip
                )
            }
            EventKind::SoftwareException { vector: 3 } => write!(f, "int3 at {:#x}", event.rip),
            kind => write!(f, "{kind:?} at {:#x}", event.rip),
        }
    }
}

/// `fred-server: pv-server (owner 2) faulted: #PF at …`
pub fn fault_line(out: &mut impl Write, label: OwnerLabel<'_>, event: &Event) -> fmt::Result {
    writeln!(out, "{PREFIX}: {label} faulted: {}", EventSummary(event))
}

/// Renders `dump` as fred-server's (the nucleus' `show_registers` text, our prefix).
pub fn render_dump(out: &mut impl Write, dump: &mut RegisterDump) -> fmt::Result {
    dump.prefix = Text::truncated(PREFIX);
    write!(out, "{dump}")
}

fn reason_name(reason: DumpReason) -> &'static str {
    match reason {
        DumpReason::DoubleFault => "#DF",
        DumpReason::MachineCheck => "#MC",
        DumpReason::Nmi => "NMI",
        DumpReason::ServerCrash => "server crash",
    }
}

/// A dump the nucleus captured about itself (`#DF` and friends), with a header line.
pub fn render_nucleus_dump(
    out: &mut impl Write,
    reason: DumpReason,
    cpu: u16,
    dump: &mut RegisterDump,
) -> fmt::Result {
    writeln!(
        out,
        "{PREFIX}: nucleus {} dump from cpu {cpu}:",
        reason_name(reason)
    )?;
    render_dump(out, dump)
}

/// A raw dump record: its words, four per line.
pub fn render_record(out: &mut impl Write, record: &DumpRecord) -> fmt::Result {
    writeln!(
        out,
        "{PREFIX}: nucleus {} record from cpu {}, part {} of {} ({} words):",
        reason_name(record.reason),
        record.cpu,
        u16::from(record.part) + 1,
        record.parts,
        record.words.len()
    )?;
    for words in record.words.chunks(4) {
        write!(out, "{PREFIX}: ")?;
        for word in words {
            write!(out, " {word:016x}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Counts `int3` reports per owner, so a benchmark's thousand breakpoints print 3 lines.
#[derive(Debug, Default)]
pub struct Int3Reports {
    counts: Vec<(u32, u32), MAX_NAMED_OWNERS>,
}

/// Whether to print an `int3` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int3Verdict {
    Print,
    /// The last one printed: say that the rest are suppressed.
    PrintLast,
    /// Not printed, but the count reached a multiple of [`INT3_MILESTONE`]: say how many.
    Milestone(u32),
    Quiet,
}

impl Int3Reports {
    pub const fn new() -> Self {
        Self { counts: Vec::new() }
    }

    pub fn note(&mut self, owner: u32) -> Int3Verdict {
        let count = match self.counts.iter_mut().find(|(o, _)| *o == owner) {
            Some(entry) => {
                entry.1 = entry.1.saturating_add(1);
                entry.1
            }
            None => match self.counts.push((owner, 1)) {
                Ok(()) => 1,
                Err(_) => return Int3Verdict::Quiet,
            },
        };
        Self::verdict(count)
    }

    /// [`Int3Reports::note`] if its verdict would be `Quiet` (then the `int3` is counted);
    /// false, with nothing counted, if it would be anything else.
    #[inline(always)]
    pub fn note_if_quiet(&mut self, owner: u32) -> bool {
        let Some(entry) = self.counts.iter_mut().find(|(o, _)| *o == owner) else {
            // A new owner's first report is printed; a full table's is quiet, but rare.
            return false;
        };
        let count = entry.1.saturating_add(1);
        if Self::verdict(count) != Int3Verdict::Quiet {
            return false;
        }
        entry.1 = count;
        true
    }

    #[inline(always)]
    fn verdict(count: u32) -> Int3Verdict {
        match count {
            c if c < INT3_REPORTS => Int3Verdict::Print,
            c if c == INT3_REPORTS => Int3Verdict::PrintLast,
            c if c % INT3_MILESTONE == 0 => Int3Verdict::Milestone(c),
            _ => Int3Verdict::Quiet,
        }
    }
}
