//! The binary trace's wire format and the buffer that holds it until COM2 takes it
//! (architecture.md §8).
//!
//! A record is one `defmt` frame (raw encoding) in an envelope the nucleus writes, so the
//! host knows which ELF's table decodes it and can stop cleanly where the stream is damaged:
//!
//! | byte | [`SYNC`] | source | len | payload (`len` bytes) | check |
//! |---|---|---|---|---|---|
//!
//! `source` is [`Source::NUCLEUS`] or a server's slot + 1, set by the nucleus (a server cannot
//! write someone else's records); `check` is the inverted wrapping sum of source, len and
//! payload. A server's payload is only an allegation: the host reports one it cannot decode
//! and goes on, because the envelope around it is the nucleus' own.
//!
//! [`TraceBuffer`] is the per-CPU byte ring. Writing never waits: a record that does not fit
//! (or one begun while another is open on the same CPU, i.e. from an interrupting context) is
//! dropped whole and counted, so the stream only ever holds complete records. Everything is
//! an atomic, so the buffer is safe code; on one CPU the orderings only order the producer's
//! publication against the drain.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// First byte of every record.
pub const SYNC: u8 = 0xF7;
/// Envelope bytes around a payload: sync, source, len before it, check after it.
pub const OVERHEAD: usize = 4;
/// Longest payload (`len` is one byte).
pub const MAX_PAYLOAD: usize = 255;

/// Whose ELF a record's payload decodes against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(pub u8);

impl Source {
    pub const NUCLEUS: Self = Self(0);

    /// The source of the server in `slot` (0-based).
    pub const fn server(slot: usize) -> Self {
        Self(slot as u8 + 1)
    }

    /// The server slot, `None` for the nucleus.
    pub const fn server_slot(self) -> Option<usize> {
        match self.0 {
            0 => None,
            n => Some(n as usize - 1),
        }
    }
}

/// The check byte of a record.
pub fn check(source: u8, payload: &[u8]) -> u8 {
    !payload
        .iter()
        .fold(source.wrapping_add(payload.len() as u8), |sum, &b| {
            sum.wrapping_add(b)
        })
}

/// Appends one whole record to `out` (host side and tests; the nucleus uses [`TraceBuffer`]).
/// `None` if the payload is longer than [`MAX_PAYLOAD`].
#[cfg(any(test, not(target_os = "none")))]
pub fn encode(source: Source, payload: &[u8], out: &mut impl Extend<u8>) -> Option<()> {
    let len = u8::try_from(payload.len()).ok()?;
    out.extend([SYNC, source.0, len]);
    out.extend(payload.iter().copied());
    out.extend([check(source.0, payload)]);
    Some(())
}

/// One record read from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of its sync byte in the stream.
    pub at: usize,
    pub source: Source,
    pub payload: &'a [u8],
}

/// Where and why a stream stops being readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The byte at `at` should have started a record.
    NoSync { at: usize, byte: u8 },
    /// The stream ends inside the record starting at `at`.
    Truncated { at: usize, need: usize, have: usize },
    /// The record at `at` does not match its check byte.
    BadCheck { at: usize },
}

impl StreamError {
    /// Offset of the damaged record (or byte).
    pub const fn at(&self) -> usize {
        match *self {
            Self::NoSync { at, .. } | Self::Truncated { at, .. } | Self::BadCheck { at } => at,
        }
    }
}

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoSync { at, byte } => write!(
                f,
                "byte {at}: {byte:#04x} where a record should start ({SYNC:#04x})"
            ),
            Self::Truncated { at, need, have } => write!(
                f,
                "byte {at}: the stream ends inside a record ({have} of {need} bytes)"
            ),
            Self::BadCheck { at } => write!(f, "byte {at}: record fails its check byte"),
        }
    }
}

/// The records of a stream, in order, ending with the first damage (then nothing more).
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

/// Reads the records of a raw COM2 capture.
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records {
        bytes,
        at: 0,
        failed: false,
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let at = self.at;
        let rest = &self.bytes[at..];
        let result = if rest[0] != SYNC {
            Err(StreamError::NoSync { at, byte: rest[0] })
        } else if rest.len() < 3 {
            Err(StreamError::Truncated {
                at,
                need: OVERHEAD,
                have: rest.len(),
            })
        } else {
            let (source, len) = (rest[1], usize::from(rest[2]));
            let need = len + OVERHEAD;
            if rest.len() < need {
                Err(StreamError::Truncated {
                    at,
                    need,
                    have: rest.len(),
                })
            } else {
                let payload = &rest[3..3 + len];
                if check(source, payload) == rest[3 + len] {
                    self.at += need;
                    Ok(Record {
                        at,
                        source: Source(source),
                        payload,
                    })
                } else {
                    Err(StreamError::BadCheck { at })
                }
            }
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// A byte ring of `N` bytes (a power of two) holding whole records until they are drained.
pub struct TraceBuffer<const N: usize> {
    bytes: [AtomicU8; N],
    /// Next byte the drain takes (free-running; index = position % N).
    head: AtomicUsize,
    /// End of the last published record.
    tail: AtomicUsize,
    /// Records begun and not ended: 1 is the record being written, more are nested ones.
    depth: AtomicU8,
    /// Where the open record's next byte goes.
    cursor: AtomicUsize,
    /// Running sum of the open record (its check byte's input).
    sum: AtomicU8,
    /// The open record no longer fits: it is dropped at its end.
    overflow: AtomicU8,
    dropped: AtomicU32,
}

impl<const N: usize> Default for TraceBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TraceBuffer<N> {
    const _POWER_OF_TWO: () = assert!(N.is_power_of_two() && N > MAX_PAYLOAD + OVERHEAD);

    #[allow(clippy::declare_interior_mutable_const)] // only ever copied into the array
    pub const fn new() -> Self {
        const ZERO: AtomicU8 = AtomicU8::new(0);
        let () = Self::_POWER_OF_TWO;
        Self {
            bytes: [ZERO; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            depth: AtomicU8::new(0),
            cursor: AtomicUsize::new(0),
            sum: AtomicU8::new(0),
            overflow: AtomicU8::new(0),
            dropped: AtomicU32::new(0),
        }
    }

    fn put(&self, position: usize, byte: u8) {
        self.bytes[position % N].store(byte, Ordering::Relaxed);
    }

    /// Opens a record from `source`. A record begun while one is open (an interrupting
    /// context) is dropped: its writes are ignored and it is counted at its end.
    pub fn begin(&self, source: Source) {
        if self.depth.fetch_add(1, Ordering::Relaxed) != 0 {
            return;
        }
        let start = self.tail.load(Ordering::Relaxed);
        self.put(start, SYNC);
        self.put(start + 1, source.0);
        self.cursor.store(start + 3, Ordering::Relaxed);
        self.sum.store(source.0, Ordering::Relaxed);
        let full = start + OVERHEAD - self.head.load(Ordering::Acquire) > N;
        self.overflow.store(u8::from(full), Ordering::Relaxed);
    }

    /// Adds payload bytes to the open record.
    pub fn write(&self, bytes: &[u8]) {
        if self.depth.load(Ordering::Relaxed) != 1 || self.overflow.load(Ordering::Relaxed) != 0 {
            return;
        }
        let start = self.tail.load(Ordering::Relaxed);
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        // Room for the check byte after the payload, and the payload within its 255 bytes.
        let limit = (self.head.load(Ordering::Acquire) + N - 1).min(start + 3 + MAX_PAYLOAD);
        if cursor + bytes.len() > limit {
            self.overflow.store(1, Ordering::Relaxed);
            return;
        }
        let mut sum = self.sum.load(Ordering::Relaxed);
        for &byte in bytes {
            self.put(cursor, byte);
            sum = sum.wrapping_add(byte);
            cursor += 1;
        }
        self.sum.store(sum, Ordering::Relaxed);
        self.cursor.store(cursor, Ordering::Relaxed);
    }

    /// Closes the open record: publishes it, or counts it as dropped.
    pub fn end(&self) {
        match self.depth.fetch_sub(1, Ordering::Relaxed) {
            1 => {}
            0 => {
                // An end without a begin: undo, nothing was open.
                self.depth.store(0, Ordering::Relaxed);
                return;
            }
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if self.overflow.load(Ordering::Relaxed) != 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = self.tail.load(Ordering::Relaxed);
        let cursor = self.cursor.load(Ordering::Relaxed);
        let len = (cursor - start - 3) as u8;
        self.put(start + 2, len);
        let sum = self.sum.load(Ordering::Relaxed).wrapping_add(len);
        self.put(cursor, !sum);
        self.tail.store(cursor + 1, Ordering::Release);
    }

    /// One whole record (a server's, copied by the nucleus).
    pub fn push(&self, source: Source, payload: &[u8]) {
        self.begin(source);
        self.write(payload);
        self.end();
    }

    /// Hands published bytes to `send` in order until it returns false (the UART is busy)
    /// or nothing is left; returns how many were taken.
    pub fn drain(&self, mut send: impl FnMut(u8) -> bool) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let mut at = head;
        while at != tail && send(self.bytes[at % N].load(Ordering::Relaxed)) {
            at += 1;
        }
        self.head.store(at, Ordering::Release);
        at - head
    }

    /// Bytes waiting for the drain.
    pub fn pending(&self) -> usize {
        self.tail.load(Ordering::Acquire) - self.head.load(Ordering::Relaxed)
    }

    /// Records dropped since the last call (the caller puts the count in the trace).
    pub fn take_dropped(&self) -> u32 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drained<const N: usize>(buffer: &TraceBuffer<N>) -> Vec<u8> {
        let mut out = Vec::new();
        buffer.drain(|b| {
            out.push(b);
            true
        });
        out
    }

    #[test]
    fn a_record_round_trips() {
        let buffer = TraceBuffer::<512>::new();
        buffer.begin(Source::NUCLEUS);
        buffer.write(&[1, 2]);
        buffer.write(&[3]);
        buffer.end();
        buffer.push(Source::server(1), b"xy");
        let bytes = drained(&buffer);
        let mut expected = Vec::new();
        encode(Source::NUCLEUS, &[1, 2, 3], &mut expected).unwrap();
        encode(Source(2), b"xy", &mut expected).unwrap();
        assert_eq!(bytes, expected);
        let read: Vec<_> = records(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].at, read[0].payload), (0, &[1, 2, 3][..]));
        assert_eq!((read[1].at, read[1].source.server_slot()), (7, Some(1)));
    }

    #[test]
    fn nested_and_oversized_records_are_dropped_whole_and_counted() {
        let buffer = TraceBuffer::<512>::new();
        buffer.begin(Source::NUCLEUS);
        buffer.write(&[1]);
        buffer.push(Source::server(0), b"nested");
        buffer.write(&[2]);
        buffer.end();
        buffer.push(Source::NUCLEUS, &[0; MAX_PAYLOAD + 1]);
        assert_eq!(buffer.take_dropped(), 2);
        assert_eq!(buffer.take_dropped(), 0);
        let bytes = drained(&buffer);
        let read: Vec<_> = records(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].payload, [1, 2]);
        buffer.end(); // a stray end changes nothing
        buffer.push(Source::NUCLEUS, &[9]);
        assert_eq!(records(&drained(&buffer)).count(), 1);
    }

    #[test]
    fn a_full_buffer_drops_and_a_drained_one_takes_records_again() {
        let buffer = TraceBuffer::<512>::new();
        let payload = [7u8; 100];
        let mut kept = 0;
        for _ in 0..10 {
            buffer.push(Source::NUCLEUS, &payload);
            kept += usize::from(buffer.take_dropped() == 0);
        }
        assert_eq!(kept, 512 / 104);
        // A busy UART takes part of it; the rest stays.
        let mut taken = 0;
        buffer.drain(|_| {
            taken += 1;
            taken <= 104
        });
        assert_eq!(buffer.pending(), (kept - 1) * 104);
        buffer.push(Source::NUCLEUS, &payload);
        assert_eq!(buffer.take_dropped(), 0);
        let bytes = drained(&buffer);
        assert_eq!(records(&bytes).filter(Result::is_ok).count(), kept);
    }

    #[test]
    fn damage_stops_the_stream_where_it_is() {
        let mut bytes = Vec::new();
        encode(Source::NUCLEUS, b"abc", &mut bytes).unwrap();
        encode(Source::NUCLEUS, b"defg", &mut bytes).unwrap();
        let mut corrupt = bytes.clone();
        corrupt[11] ^= 0x40;
        let read: Vec<_> = records(&corrupt).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1], Err(StreamError::BadCheck { at: 7 }));
        let read: Vec<_> = records(&bytes[..10]).collect();
        assert_eq!(
            read[1],
            Err(StreamError::Truncated {
                at: 7,
                need: 8,
                have: 3
            })
        );
        let read: Vec<_> = records(&bytes[1..]).collect();
        assert_eq!(read, [Err(StreamError::NoSync { at: 0, byte: 0 })]);
        assert_eq!(
            StreamError::Truncated {
                at: 7,
                need: 8,
                have: 3
            }
            .to_string(),
            "byte 7: the stream ends inside a record (3 of 8 bytes)"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut end = 0;
            for record in records(&bytes) {
                match record {
                    Ok(r) => { prop_assert_eq!(r.at, end); end = r.at + r.payload.len() + OVERHEAD; }
                    Err(e) => prop_assert_eq!(e.at(), end),
                }
            }
        }

        #[test]
        fn what_is_written_is_read(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..20)) {
            let buffer = TraceBuffer::<4096>::new();
            for (i, p) in payloads.iter().enumerate() {
                buffer.push(Source(i as u8), p);
            }
            let bytes = drained(&buffer);
            let read: Vec<_> = records(&bytes).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(read.len(), payloads.len());
            for (r, p) in read.iter().zip(&payloads) {
                prop_assert_eq!(r.payload, &p[..]);
            }
        }
    }
}
