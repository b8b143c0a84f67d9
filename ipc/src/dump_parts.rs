//! A full register dump over the ring, in parts: [`DumpPart`], [`split`], [`DumpAssembler`].
//!
//! A [`RegisterDump`] encodes to up to ~560 bytes (28 `u64` registers, 16 stack words, a
//! symbol name), more than one ring record ([`crate::codec::MAX_MESSAGE`], 256 bytes) can
//! carry. Rather than widen every record (and halve how many fit in a 4 KiB ring page), the
//! nucleus encodes the dump once with `postcard` and sends the bytes as up to
//! [`DUMP_PARTS_MAX`] [`DumpPart`] messages of [`DUMP_PART_BYTES`] each; `fred-server`
//! collects them in order and decodes the whole only when the last part arrived.
//!
//! The parts are allegations like any record: the assembler accepts only the next part of
//! the dump it is collecting (same token, reason, cpu and part count, `part` = next), never
//! more than [`DUMP_BYTES_MAX`] bytes, and decodes the result strictly (no trailing bytes).
//! Any mismatch drops what was collected and is reported as a typed [`DumpPartError`]; a
//! part 0 always starts afresh, so one lost part costs one dump, not the stream.

use core::fmt;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::dump::RegisterDump;
use crate::message::{DumpReason, Token};

/// Payload bytes per part: a part encodes to at most ~180 bytes, inside one record.
pub const DUMP_PART_BYTES: usize = 160;
/// Most parts of one dump.
pub const DUMP_PARTS_MAX: usize = 4;
/// Largest encoded [`RegisterDump`] that can be sent (the worst case is below it: tested).
pub const DUMP_BYTES_MAX: usize = DUMP_PART_BYTES * DUMP_PARTS_MAX;

/// One piece of a postcard-encoded [`RegisterDump`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpPart {
    /// For [`DumpReason::ServerCrash`]: the token of the `Event` that follows the dump. For
    /// nucleus captures (`#DF`): a number that only has to differ from the previous dump's.
    pub token: Token,
    pub reason: DumpReason,
    pub cpu: u16,
    /// 0-based index of this part, below `parts`.
    pub part: u8,
    /// Number of parts of the whole dump, 1..=[`DUMP_PARTS_MAX`].
    pub parts: u8,
    pub bytes: Vec<u8, DUMP_PART_BYTES>,
}

/// Why a dump could not be split for sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpTooLarge;

impl fmt::Display for DumpTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "register dump encodes to more than {DUMP_BYTES_MAX} bytes"
        )
    }
}

/// Encodes `dump` into `buf` and returns the parts to send, in order (nucleus side).
pub fn split<'b>(
    dump: &RegisterDump,
    token: Token,
    reason: DumpReason,
    cpu: u16,
    buf: &'b mut [u8; DUMP_BYTES_MAX],
) -> Result<impl Iterator<Item = DumpPart> + 'b, DumpTooLarge> {
    let encoded: &'b [u8] = postcard::to_slice(dump, buf).map_err(|_| DumpTooLarge)?;
    let parts = encoded.len().div_ceil(DUMP_PART_BYTES).max(1);
    // `encoded.len() <= DUMP_BYTES_MAX`, so `parts <= DUMP_PARTS_MAX` fits a u8.
    let parts = parts as u8;
    Ok((0..parts).map(move |part| {
        let start = usize::from(part) * DUMP_PART_BYTES;
        let end = (start + DUMP_PART_BYTES).min(encoded.len());
        let mut bytes = Vec::new();
        // `end - start <= DUMP_PART_BYTES`: always fits.
        let _ = bytes.extend_from_slice(&encoded[start..end]);
        DumpPart {
            token,
            reason,
            cpu,
            part,
            parts,
            bytes,
        }
    }))
}

/// Why a part was refused (what was collected so far is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpPartError {
    /// `parts` is 0 or above [`DUMP_PARTS_MAX`], or `part >= parts`.
    BadCount { part: u8, parts: u8 },
    /// Not the part the assembler expected (lost, duplicated or interleaved parts).
    OutOfOrder { expected: u8, found: u8 },
    /// A non-final part that is not full, or a final part that overflows the buffer.
    BadLength { part: u8, len: usize },
    /// All parts arrived but the bytes are not exactly one [`RegisterDump`].
    Undecodable,
}

impl fmt::Display for DumpPartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCount { part, parts } => {
                write!(f, "dump part {part} of {parts} is impossible")
            }
            Self::OutOfOrder { expected, found } => {
                write!(f, "dump part {found} arrived, expected part {expected}")
            }
            Self::BadLength { part, len } => write!(f, "dump part {part} has a bad length {len}"),
            Self::Undecodable => f.write_str("dump parts do not decode to a register dump"),
        }
    }
}

/// A dump whose parts all arrived and decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssembledDump {
    pub token: Token,
    pub reason: DumpReason,
    pub cpu: u16,
    pub dump: RegisterDump,
}

/// Collects the parts of one dump at a time (server side).
pub struct DumpAssembler {
    /// Header of the dump being collected, and the next part expected; `None` when idle.
    current: Option<(Token, DumpReason, u16, u8, u8)>,
    len: usize,
    buf: [u8; DUMP_BYTES_MAX],
}

impl Default for DumpAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl DumpAssembler {
    pub const fn new() -> Self {
        Self {
            current: None,
            len: 0,
            buf: [0; DUMP_BYTES_MAX],
        }
    }

    /// Adds one part; returns the dump when this was its last part.
    pub fn push(&mut self, part: &DumpPart) -> Result<Option<AssembledDump>, DumpPartError> {
        let result = self.accept(part);
        if !matches!(result, Ok(None)) {
            self.current = None;
            self.len = 0;
        }
        result
    }

    fn accept(&mut self, part: &DumpPart) -> Result<Option<AssembledDump>, DumpPartError> {
        if part.parts == 0 || usize::from(part.parts) > DUMP_PARTS_MAX || part.part >= part.parts {
            return Err(DumpPartError::BadCount {
                part: part.part,
                parts: part.parts,
            });
        }
        if part.part == 0 {
            self.current = Some((part.token, part.reason, part.cpu, part.parts, 0));
            self.len = 0;
        }
        let expected = match self.current {
            Some((token, reason, cpu, parts, next))
                if token == part.token
                    && reason == part.reason
                    && cpu == part.cpu
                    && parts == part.parts =>
            {
                next
            }
            Some((.., next)) => {
                return Err(DumpPartError::OutOfOrder {
                    expected: next,
                    found: part.part,
                });
            }
            None => {
                return Err(DumpPartError::OutOfOrder {
                    expected: 0,
                    found: part.part,
                });
            }
        };
        if part.part != expected {
            return Err(DumpPartError::OutOfOrder {
                expected,
                found: part.part,
            });
        }
        let last = part.part + 1 == part.parts;
        let len = part.bytes.len();
        // Every part but the last is full, so a part's offset is fixed by its index.
        if (!last && len != DUMP_PART_BYTES) || self.len + len > DUMP_BYTES_MAX {
            return Err(DumpPartError::BadLength {
                part: part.part,
                len,
            });
        }
        self.buf[self.len..self.len + len].copy_from_slice(&part.bytes);
        self.len += len;
        if !last {
            self.current = Some((part.token, part.reason, part.cpu, part.parts, expected + 1));
            return Ok(None);
        }
        match postcard::take_from_bytes::<RegisterDump>(&self.buf[..self.len]) {
            Ok((dump, [])) => Ok(Some(AssembledDump {
                token: part.token,
                reason: part.reason,
                cpu: part.cpu,
                dump,
            })),
            _ => Err(DumpPartError::Undecodable),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::codec::{MAX_MESSAGE, decode, encode};
    use crate::dump::{Delivery, GprValues, StackName, StackWords, Symbol, Text};
    use crate::event::EventKind;
    use crate::message::NucleusMessage;
    use proptest::prelude::*;

    fn worst_case() -> RegisterDump {
        let m = u64::MAX;
        RegisterDump {
            prefix: Text::truncated("0123456789abcdef"),
            cpu: u16::MAX,
            delivery: Delivery::Fred,
            stack: StackName::Unknown,
            stack_level: u8::MAX,
            event_type: u8::MAX,
            vector: u8::MAX,
            error_code: m,
            event_data: m,
            event: Some(EventKind::Exception {
                vector: u8::MAX,
                error_code: m,
            }),
            rip: m,
            symbol: Some(Symbol {
                name: Text::truncated(&"s".repeat(48)),
                offset: m,
            }),
            cs: u16::MAX,
            ss: u16::MAX,
            rflags: m,
            rsp: m,
            gprs: GprValues {
                rax: m,
                rbx: m,
                rcx: m,
                rdx: m,
                rsi: m,
                rdi: m,
                rbp: m,
                r8: m,
                r9: m,
                r10: m,
                r11: m,
                r12: m,
                r13: m,
                r14: m,
                r15: m,
            },
            cr0: m,
            cr2: m,
            cr3: m,
            cr4: m,
            efer: m,
            fs_base: m,
            gs_base: m,
            kernel_gs_base: m,
            stack_words: StackWords(heapless::Vec::from_slice(&[m; 16]).unwrap()),
            stack_skipped: u16::MAX,
        }
    }

    fn send_all(dump: &RegisterDump, token: u64) -> std::vec::Vec<DumpPart> {
        let mut buf = [0; DUMP_BYTES_MAX];
        split(dump, Token(token), DumpReason::ServerCrash, 1, &mut buf)
            .unwrap()
            .collect()
    }

    #[test]
    fn worst_case_fits_and_round_trips_through_records() {
        let dump = worst_case();
        let parts = send_all(&dump, u64::MAX);
        assert_eq!(parts.len(), DUMP_PARTS_MAX);
        let mut assembler = DumpAssembler::new();
        let mut done = None;
        for part in parts {
            // Each part is one record, with the largest header values.
            let message = NucleusMessage::Dump(part);
            let mut record = [0; MAX_MESSAGE];
            let record = encode(&message, &mut record).unwrap();
            let NucleusMessage::Dump(back) = decode::<NucleusMessage>(record).unwrap() else {
                panic!("not a dump part")
            };
            done = assembler.push(&back).unwrap();
        }
        let done = done.unwrap();
        assert_eq!(done.dump, dump);
        assert_eq!(done.token, Token(u64::MAX));
    }

    #[test]
    fn a_small_dump_is_one_part() {
        let dump = RegisterDump::default();
        let parts = send_all(&dump, 3);
        assert_eq!(parts.len(), 1);
        let got = DumpAssembler::new().push(&parts[0]).unwrap().unwrap();
        assert_eq!(got.dump, dump);
    }

    #[test]
    fn lost_duplicated_and_forged_parts_are_refused() {
        let parts = send_all(&worst_case(), 7);
        let mut assembler = DumpAssembler::new();
        // Part 1 without part 0.
        assert_eq!(
            assembler.push(&parts[1]),
            Err(DumpPartError::OutOfOrder {
                expected: 0,
                found: 1
            })
        );
        // Part 0 twice is a restart, then part 2 skips part 1.
        assert_eq!(assembler.push(&parts[0]), Ok(None));
        assert_eq!(assembler.push(&parts[0]), Ok(None));
        assert_eq!(
            assembler.push(&parts[2]),
            Err(DumpPartError::OutOfOrder {
                expected: 1,
                found: 2
            })
        );
        // Another token in the middle.
        assert_eq!(assembler.push(&parts[0]), Ok(None));
        let mut other = parts[1].clone();
        other.token = Token(8);
        assert_eq!(
            assembler.push(&other),
            Err(DumpPartError::OutOfOrder {
                expected: 1,
                found: 1
            })
        );
        // Impossible counts and a short middle part.
        let mut bad = parts[0].clone();
        bad.parts = DUMP_PARTS_MAX as u8 + 1;
        assert_eq!(
            assembler.push(&bad),
            Err(DumpPartError::BadCount { part: 0, parts: 5 })
        );
        let mut short = parts[0].clone();
        short.bytes.truncate(3);
        assert_eq!(
            assembler.push(&short),
            Err(DumpPartError::BadLength { part: 0, len: 3 })
        );
        // Garbage that claims to be a whole dump.
        let junk = DumpPart {
            token: Token(1),
            reason: DumpReason::DoubleFault,
            cpu: 0,
            part: 0,
            parts: 1,
            bytes: heapless::Vec::from_slice(&[0xff; 40]).unwrap(),
        };
        assert_eq!(assembler.push(&junk), Err(DumpPartError::Undecodable));
        // And the stream recovers.
        let mut done = None;
        for part in &parts {
            done = assembler.push(part).unwrap();
        }
        assert!(done.is_some());
    }

    proptest! {
        #[test]
        fn arbitrary_parts_never_panic(
            headers in proptest::collection::vec((0u8..6, 0u8..6, 0u64..3, 0usize..=DUMP_PART_BYTES, any::<u8>()), 1..12)
        ) {
            let mut assembler = DumpAssembler::new();
            for (part, parts, token, len, fill) in headers {
                let part = DumpPart {
                    token: Token(token),
                    reason: DumpReason::ServerCrash,
                    cpu: 0,
                    part,
                    parts,
                    bytes: heapless::Vec::from_slice(&std::vec![fill; len]).unwrap(),
                };
                let _ = assembler.push(&part);
            }
        }
    }
}
