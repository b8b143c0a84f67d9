//! 16550 UART: COM1 is the nucleus console, COM2 carries the binary trace.
//!
//! Polled, no interrupts: the console must work from the first instruction of the 64-bit
//! entry and inside `#DF`, where nothing else is set up. Writes go through `core::fmt` and
//! `embedded-io`, so callers pick whichever is handier.
use crate::port::{inb, outb};

/// I/O base of COM1 on every PC and in QEMU/Bochs.
pub const COM1: u16 = 0x3f8;
/// I/O base of COM2.
pub const COM2: u16 = 0x2f8;
/// Bytes the transmit FIFO takes once LSR says it is empty (16550A).
pub const TX_FIFO_BYTES: usize = 16;

/// Line status register bits (offset 5).
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TRANSMITTER_IDLE: u8 = 1 << 6;

/// A 16550-compatible UART at an I/O base.
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// # Safety
    /// `base` must be the I/O base of a 16550 that nothing else drives.
    pub const unsafe fn new(base: u16) -> Self {
        Self { base }
    }

    /// Programs 115200 8N1, FIFOs on, interrupts off.
    pub fn init(&mut self) {
        const SETUP: [(u16, u8); 7] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on
            (0, 0x01), // DLL: divisor 1 = 115200 baud
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8N1, DLAB off
            (2, 0xc7), // FCR: enable + clear FIFOs, 14-byte threshold
            (4, 0x03), // MCR: DTR, RTS
        ];
        for (offset, value) in SETUP {
            // SAFETY: `new`'s contract makes these the registers of our own UART.
            unsafe { outb(self.base + offset, value) };
        }
    }

    fn line_status(&self) -> u8 {
        // SAFETY: reading LSR has no side effects on a 16550.
        unsafe { inb(self.base + LSR) }
    }

    /// Sends one byte, waiting for room in the transmit holding register.
    pub fn write_byte(&mut self, byte: u8) {
        // Bounded wait: a missing UART (bits read as 0xff or stuck) must not hang the nucleus.
        for _ in 0..100_000 {
            if self.line_status() & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: THR is offset 0 of our own UART.
        unsafe { outb(self.base, byte) };
    }

    /// Bytes that can be written now without waiting: the whole FIFO when it is empty,
    /// else none. A missing UART (reading 0xff) looks empty: its bytes are lost, nothing waits.
    pub fn room(&self) -> usize {
        if self.line_status() & LSR_THR_EMPTY != 0 {
            TX_FIFO_BYTES
        } else {
            0
        }
    }

    /// Writes one byte without looking at LSR: only after [`Uart16550::room`] said there is
    /// room for it.
    pub fn put_byte(&mut self, byte: u8) {
        // SAFETY: THR is offset 0 of our own UART.
        unsafe { outb(self.base, byte) };
    }

    /// Waits until every queued byte has left the wire (LSR bit 6), so that a following
    /// emulator exit does not cut the last line off.
    pub fn drain(&mut self) {
        for _ in 0..1_000_000 {
            if self.line_status() & LSR_TRANSMITTER_IDLE != 0 {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Writes `bytes`, turning `\n` into `\r\n` for terminals.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }
}

impl core::fmt::Write for Uart16550 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

impl embedded_io::ErrorType for Uart16550 {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Uart16550 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.drain();
        Ok(())
    }
}
