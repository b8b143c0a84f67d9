//! The `show_registers` dump: one plain record, one renderer, for the nucleus and servers.
//!
//! The nucleus captures a [`RegisterDump`] (plain integers, no pointers) when it must report
//! a frame: a `#DF`, a crashed server, a self-test. It may render it itself (early boot,
//! `#DF`) or send it to `fred-server`, which renders the identical text from the same
//! `Display` impl (architecture.md §6). The layout follows the spirit of Xen's
//! `show_registers`: RIP with symbol, flags by name, GPRs three per line, control registers,
//! segment bases, the event and the stack it arrived on, then raw stack words.
//!
//! `ipc` cannot see `bsp-x86_64`, so the few tables the renderer needs (RFLAGS names,
//! exception mnemonics, `#PF` and selector error-code bits, SDM vol. 3 §6.13 and §4.7) are
//! small local copies. Every line starts with [`RegisterDump::prefix`], so the console shows
//! who printed it.

use core::fmt::{self, Write as _};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::event::EventKind;

/// Bounded text that travels through postcard as a plain string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text<const N: usize>(pub heapless::String<N>);

impl<const N: usize> Text<N> {
    /// `text`, cut at the last character boundary that fits in `N` bytes.
    pub fn truncated(text: &str) -> Self {
        let mut out = heapless::String::new();
        for c in text.chars() {
            if out.push(c).is_err() {
                break;
            }
        }
        Self(out)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> Serialize for Text<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de, const N: usize> Deserialize<'de> for Text<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for TextVisitor<N> {
            type Value = Text<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {N} bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                let mut out = heapless::String::new();
                // Longer than N: refused, not cut, as any oversized field from a peer is.
                out.push_str(text)
                    .map_err(|_| E::invalid_length(text.len(), &self))?;
                Ok(Text(out))
            }
        }
        deserializer.deserialize_str(TextVisitor::<N>)
    }
}

/// Up to 16 raw stack qwords.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackWords(pub heapless::Vec<u64, 16>);

impl Serialize for StackWords {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for word in &self.0 {
            seq.serialize_element(word)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for StackWords {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordsVisitor;
        impl<'de> Visitor<'de> for WordsVisitor {
            type Value = StackWords;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("at most 16 stack words")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut words = heapless::Vec::new();
                while let Some(word) = seq.next_element::<u64>()? {
                    words
                        .push(word)
                        .map_err(|_| de::Error::invalid_length(17, &self))?;
                }
                Ok(StackWords(words))
            }
        }
        deserializer.deserialize_seq(WordsVisitor)
    }
}

/// How the event reached the nucleus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    #[default]
    Idt,
    Fred,
}

/// Which stack the event frame is on (bsp-x86_64's stack block pages, or user memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StackName {
    Primary,
    DoubleFault,
    Debug,
    Nmi,
    MachineCheck,
    /// Not in the nucleus' stack block: a Ring3 stack.
    User,
    #[default]
    Unknown,
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Primary => "primary",
            Self::DoubleFault => "#DF",
            Self::Debug => "#DB",
            Self::Nmi => "NMI",
            Self::MachineCheck => "#MC",
            Self::User => "user",
            Self::Unknown => "unknown",
        })
    }
}

/// The symbol RIP falls in, as the nucleus' symbol table names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: Text<48>,
    pub offset: u64,
}

/// The general-purpose registers (RSP is in [`RegisterDump::rsp`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GprValues {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// One captured frame with the CPU state around it. `Display` renders the dump.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterDump {
    /// Owner of the console lines, e.g. `nucleus` or `fred-server`.
    pub prefix: Text<16>,
    pub cpu: u16,
    pub delivery: Delivery,
    pub stack: StackName,
    /// FRED: the stack level of the frame (CS qword bits 17:16 of the handler's own frame,
    /// i.e. CSL after delivery). IDT: the IST index used, 0 for none.
    pub stack_level: u8,
    /// Raw FRED event type and vector (as in the frame, also when they did not decode).
    pub event_type: u8,
    pub vector: u8,
    pub error_code: u64,
    pub event_data: u64,
    /// The decoded event; `None` if the frame did not decode.
    pub event: Option<EventKind>,
    pub rip: u64,
    pub symbol: Option<Symbol>,
    pub cs: u16,
    pub ss: u16,
    pub rflags: u64,
    pub rsp: u64,
    pub gprs: GprValues,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    /// Qwords from `rsp + stack_skipped` upwards.
    pub stack_words: StackWords,
    /// Bytes between RSP and the first of `stack_words`: 0, or the distance to the first
    /// readable page when RSP points into an unmapped guard page (a stack overflow's `#DF`).
    pub stack_skipped: u16,
}

/// RFLAGS bits by name (SDM vol. 1 §3.4.3); IOPL is printed as a number.
const RFLAGS_NAMES: [(u32, &str); 16] = [
    (0, "CF"),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
    (19, "VIF"),
    (20, "VIP"),
    (21, "ID"),
];

/// `#PF` error-code bits (SDM vol. 3 §4.7).
const PF_ERROR_NAMES: [(u32, &str); 8] = [
    (0, "P"),
    (1, "W"),
    (2, "U"),
    (3, "RSVD"),
    (4, "I"),
    (5, "PK"),
    (6, "SS"),
    (15, "SGX"),
];

/// Exception mnemonics by vector.
const EXCEPTION_NAMES: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

/// FRED event type names (fred-facts.md §3.6).
fn event_type_name(event_type: u8) -> &'static str {
    match event_type {
        0 => "external interrupt",
        2 => "NMI",
        3 => "HW exception",
        4 => "software interrupt",
        5 => "privileged SW exception",
        6 => "SW exception",
        7 => "other",
        _ => "reserved",
    }
}

/// Writes the names of the set bits of `value` among `names`, space-separated.
fn bit_names(f: &mut fmt::Formatter<'_>, value: u64, names: &[(u32, &str)]) -> fmt::Result {
    let mut separator = "";
    for &(bit, name) in names {
        if value & (1 << bit) != 0 {
            write!(f, "{separator}{name}")?;
            separator = " ";
        }
    }
    Ok(())
}

/// What the event data holds, by event (fred-facts.md §3.7).
fn event_data_label(kind: Option<EventKind>) -> &'static str {
    match kind {
        Some(EventKind::Exception { vector: 14, .. }) => "CR2",
        Some(EventKind::Exception { vector: 1, .. })
        | Some(EventKind::PrivilegedSoftwareException) => "DR6",
        Some(EventKind::Exception { vector: 7, .. }) => "XFD_ERR",
        Some(EventKind::Nmi { .. }) => "NMI sources",
        _ => "raw",
    }
}

impl RegisterDump {
    fn event_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what: &str = match self.event {
            Some(EventKind::Exception { vector, .. }) => EXCEPTION_NAMES[usize::from(vector & 31)],
            Some(EventKind::Interrupt { .. }) => "interrupt",
            Some(EventKind::Nmi { .. }) => "NMI",
            Some(EventKind::SoftwareInterrupt { .. }) => "INT n",
            Some(EventKind::PrivilegedSoftwareException) => "INT1",
            Some(EventKind::SoftwareException { vector: 4 }) => "INTO",
            Some(EventKind::SoftwareException { .. }) => "INT3",
            Some(EventKind::Syscall) => "SYSCALL",
            Some(EventKind::Sysenter) => "SYSENTER",
            None => "undecodable",
        };
        write!(
            f,
            "event: {what} (type {} {}, vector {})",
            self.event_type,
            event_type_name(self.event_type),
            self.vector
        )?;
        let vector = match self.event {
            Some(EventKind::Exception { vector, .. }) => Some(vector),
            _ => None,
        };
        if vector.is_some() || self.error_code != 0 {
            write!(f, " error {:#x}", self.error_code)?;
            match vector {
                Some(14) => {
                    f.write_str(" [")?;
                    bit_names(f, self.error_code, &PF_ERROR_NAMES)?;
                    f.write_str("]")?;
                }
                Some(10..=13) if self.error_code != 0 => {
                    // Selector error code: EXT (0), IDT (1), TI (2), index (15:3).
                    let table = match self.error_code & 0b110 {
                        0b000 => "GDT",
                        0b100 => "LDT",
                        _ => "IDT",
                    };
                    let ext = if self.error_code & 1 != 0 { " EXT" } else { "" };
                    write!(
                        f,
                        " [{table} index {}{ext}]",
                        (self.error_code >> 3) & 0x1fff
                    )?;
                }
                _ => {}
            }
        }
        if self.event_data != 0 || matches!(vector, Some(14)) {
            write!(
                f,
                " data ({}) {:#x}",
                event_data_label(self.event),
                self.event_data
            )?;
        }
        Ok(())
    }

    fn delivery_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.delivery {
            Delivery::Fred => write!(
                f,
                "delivery: FRED, stack level {} ({})",
                self.stack_level, self.stack
            ),
            Delivery::Idt if self.stack_level == 0 => {
                write!(f, "delivery: IDT, stack: {}", self.stack)
            }
            Delivery::Idt => write!(
                f,
                "delivery: IDT, stack: {} (IST{})",
                self.stack, self.stack_level
            ),
        }
    }
}

/// Adapter that starts every line with the owner prefix.
struct Prefixed<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    prefix: &'a str,
}

impl Prefixed<'_, '_> {
    fn line(&mut self, body: impl FnOnce(&mut fmt::Formatter<'_>) -> fmt::Result) -> fmt::Result {
        write!(self.f, "{}: ", self.prefix)?;
        body(self.f)?;
        self.f.write_char('\n')
    }
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.prefix.as_str().is_empty() {
            "dump"
        } else {
            self.prefix.as_str()
        };
        let mut out = Prefixed { f, prefix };
        let ring = self.cs & 3;
        out.line(|f| {
            write!(
                f,
                "----[ register dump, cpu {}, ring {ring} ]----",
                self.cpu
            )
        })?;
        out.line(|f| self.event_line(f))?;
        out.line(|f| self.delivery_line(f))?;
        out.line(|f| {
            write!(f, "RIP:    {:04x}:{:016x}", self.cs, self.rip)?;
            match &self.symbol {
                Some(symbol) => write!(f, " <{}+{:#x}>", symbol.name.as_str(), symbol.offset),
                None => Ok(()),
            }
        })?;
        out.line(|f| {
            write!(f, "RFLAGS: {:016x} [", self.rflags)?;
            bit_names(f, self.rflags, &RFLAGS_NAMES)?;
            let iopl = (self.rflags >> 12) & 3;
            if iopl != 0 {
                write!(f, " IOPL={iopl}")?;
            }
            f.write_str("]")
        })?;
        out.line(|f| {
            write!(
                f,
                "CS: {:04x}   SS: {:04x}   RSP: {:016x}",
                self.cs, self.ss, self.rsp
            )
        })?;
        let g = &self.gprs;
        let rows: [[(&str, u64); 3]; 5] = [
            [("rax", g.rax), ("rbx", g.rbx), ("rcx", g.rcx)],
            [("rdx", g.rdx), ("rsi", g.rsi), ("rdi", g.rdi)],
            [("rbp", g.rbp), ("r8 ", g.r8), ("r9 ", g.r9)],
            [("r10", g.r10), ("r11", g.r11), ("r12", g.r12)],
            [("r13", g.r13), ("r14", g.r14), ("r15", g.r15)],
        ];
        for row in rows {
            out.line(|f| {
                let [(n0, v0), (n1, v1), (n2, v2)] = row;
                write!(f, "{n0}: {v0:016x}   {n1}: {v1:016x}   {n2}: {v2:016x}")
            })?;
        }
        out.line(|f| {
            write!(
                f,
                "cr0: {:016x}   cr2: {:016x}   cr3: {:016x}",
                self.cr0, self.cr2, self.cr3
            )
        })?;
        out.line(|f| write!(f, "cr4: {:016x}   efer: {:016x}", self.cr4, self.efer))?;
        out.line(|f| {
            write!(
                f,
                "fs_base: {:016x}   gs_base: {:016x}",
                self.fs_base, self.gs_base
            )
        })?;
        out.line(|f| write!(f, "kernel_gs_base: {:016x}", self.kernel_gs_base))?;
        let words = self.stack_words.0.len();
        let from = self.rsp.wrapping_add(u64::from(self.stack_skipped));
        out.line(|f| match (words, self.stack_skipped) {
            (0, _) => write!(f, "stack: nothing readable at RSP"),
            (_, 0) => write!(f, "stack ({words} words from RSP):"),
            (_, skipped) => write!(
                f,
                "stack ({words} words from RSP+{skipped:#x}, the first mapped address above \
                 RSP):"
            ),
        })?;
        for (row, words) in self.stack_words.0.chunks(4).enumerate() {
            out.line(|f| {
                let address = from.wrapping_add(row as u64 * 32);
                write!(f, "  {address:016x}:")?;
                for word in words {
                    write!(f, " {word:016x}")?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RegisterDump {
        RegisterDump {
            prefix: Text::truncated("nucleus"),
            cpu: 1,
            delivery: Delivery::Fred,
            stack: StackName::DoubleFault,
            stack_level: 3,
            event_type: 3,
            vector: 14,
            error_code: 0x2,
            event_data: 0xdead_0000_beef,
            event: Some(EventKind::Exception {
                vector: 14,
                error_code: 0x2,
            }),
            rip: 0xffff_ffff_8010_2345,
            symbol: Some(Symbol {
                name: Text::truncated("nucleus::selftest::pf_unmapped"),
                offset: 0x1c,
            }),
            cs: 0x08,
            ss: 0x10,
            rflags: 0x10246,
            rsp: 0xffff_8000_0010_4fc0,
            gprs: GprValues {
                rax: 0x1111,
                r15: 0xf15,
                ..GprValues::default()
            },
            cr0: 0x8005_0033,
            cr2: 0xdead_0000_beef,
            cr3: 0x0010_3000,
            cr4: 0x0001_0000_06a0,
            efer: 0xd01,
            fs_base: 0,
            gs_base: 0xffff_8000_0010_7fc0,
            kernel_gs_base: 0x7000_0000,
            stack_words: StackWords((1..=6).collect()),
            stack_skipped: 0,
        }
    }

    #[test]
    fn a_stack_above_a_guard_page_and_none_at_all_say_where_they_stand() {
        let mut dump = sample();
        dump.stack_skipped = 0x40;
        let text = dump.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[15],
            "nucleus: stack (6 words from RSP+0x40, the first mapped address above RSP):"
        );
        assert_eq!(
            lines[16],
            "nucleus:   ffff800000105000: 0000000000000001 0000000000000002 0000000000000003 0000000000000004"
        );
        dump.stack_words.0.clear();
        let text = dump.to_string();
        assert!(
            text.ends_with("nucleus: stack: nothing readable at RSP\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_key_lines() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().all(|line| line.starts_with("nucleus: ")),
            "{text}"
        );
        assert_eq!(
            lines[0],
            "nucleus: ----[ register dump, cpu 1, ring 0 ]----"
        );
        assert_eq!(
            lines[1],
            "nucleus: event: #PF (type 3 HW exception, vector 14) error 0x2 [W] data (CR2) 0xdead0000beef"
        );
        assert_eq!(lines[2], "nucleus: delivery: FRED, stack level 3 (#DF)");
        assert_eq!(
            lines[3],
            "nucleus: RIP:    0008:ffffffff80102345 <nucleus::selftest::pf_unmapped+0x1c>"
        );
        assert_eq!(lines[4], "nucleus: RFLAGS: 0000000000010246 [PF ZF IF RF]");
        assert_eq!(
            lines[5],
            "nucleus: CS: 0008   SS: 0010   RSP: ffff800000104fc0"
        );
        assert_eq!(
            lines[6],
            "nucleus: rax: 0000000000001111   rbx: 0000000000000000   rcx: 0000000000000000"
        );
        assert_eq!(
            lines[10],
            "nucleus: r13: 0000000000000000   r14: 0000000000000000   r15: 0000000000000f15"
        );
        assert_eq!(
            lines[11],
            "nucleus: cr0: 0000000080050033   cr2: 0000dead0000beef   cr3: 0000000000103000"
        );
        assert_eq!(
            lines[12],
            "nucleus: cr4: 00000001000006a0   efer: 0000000000000d01"
        );
        assert_eq!(
            lines[13],
            "nucleus: fs_base: 0000000000000000   gs_base: ffff800000107fc0"
        );
        assert_eq!(lines[14], "nucleus: kernel_gs_base: 0000000070000000");
        assert_eq!(lines[15], "nucleus: stack (6 words from RSP):");
        assert_eq!(
            lines[16],
            "nucleus:   ffff800000104fc0: 0000000000000001 0000000000000002 0000000000000003 0000000000000004"
        );
        assert_eq!(
            lines[17],
            "nucleus:   ffff800000104fe0: 0000000000000005 0000000000000006"
        );
        assert_eq!(lines.len(), 18);
    }

    #[test]
    fn idt_and_other_events() {
        let mut dump = sample();
        dump.prefix = Text::truncated("fred-server");
        dump.delivery = Delivery::Idt;
        dump.stack_level = 1;
        dump.event = Some(EventKind::Exception {
            vector: 13,
            error_code: 0x1a,
        });
        dump.event_type = 3;
        dump.vector = 13;
        dump.error_code = 0x1a;
        dump.event_data = 0;
        dump.rflags = 0x3202;
        dump.cs = 0x2b;
        dump.symbol = None;
        let text = dump.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "fred-server: ----[ register dump, cpu 1, ring 3 ]----"
        );
        assert_eq!(
            lines[1],
            "fred-server: event: #GP (type 3 HW exception, vector 13) error 0x1a [IDT index 3]"
        );
        assert_eq!(lines[2], "fred-server: delivery: IDT, stack: #DF (IST1)");
        assert_eq!(lines[3], "fred-server: RIP:    002b:ffffffff80102345");
        assert_eq!(
            lines[4],
            "fred-server: RFLAGS: 0000000000003202 [IF IOPL=3]"
        );

        dump.event = Some(EventKind::Exception {
            vector: 13,
            error_code: 0x18,
        });
        dump.error_code = 0x18;
        dump.stack_level = 0;
        dump.stack = StackName::Primary;
        let text = dump.to_string();
        assert!(text.contains("error 0x18 [GDT index 3]\n"), "{text}");
        assert!(
            text.contains("fred-server: delivery: IDT, stack: primary\n"),
            "{text}"
        );

        dump.event = Some(EventKind::Syscall);
        dump.event_type = 7;
        dump.vector = 1;
        dump.error_code = 0;
        assert!(
            dump.to_string()
                .contains("fred-server: event: SYSCALL (type 7 other, vector 1)\n")
        );

        dump.event = None;
        dump.event_type = 1;
        dump.vector = 9;
        assert!(
            dump.to_string()
                .contains("fred-server: event: undecodable (type 1 reserved, vector 9)\n")
        );

        dump.event = Some(EventKind::Interrupt { vector: 0x30 });
        dump.event_type = 0;
        dump.vector = 0x30;
        assert!(
            dump.to_string()
                .contains("event: interrupt (type 0 external interrupt, vector 48)\n")
        );
    }

    #[test]
    fn postcard_round_trip() {
        let dump = sample();
        let mut buffer = [0u8; 512];
        let bytes = postcard::to_slice(&dump, &mut buffer).unwrap();
        let back: RegisterDump = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, dump);
        assert_eq!(back.to_string(), dump.to_string());
    }

    #[test]
    fn oversized_fields_are_refused() {
        // A peer's string longer than the field is an error, not a silent cut.
        let mut buffer = [0u8; 64];
        let bytes = postcard::to_slice("a-very-long-prefix-indeed", &mut buffer).unwrap();
        assert!(postcard::from_bytes::<Text<16>>(bytes).is_err());
        let words = [0u64; 17];
        let mut buffer = [0u8; 64];
        let bytes = postcard::to_slice(&words[..], &mut buffer).unwrap();
        assert!(postcard::from_bytes::<StackWords>(bytes).is_err());
        assert_eq!(Text::<3>::truncated("nucléus").as_str(), "nuc");
        assert_eq!(Text::<5>::truncated("nucléus").as_str(), "nucl");
    }
}
