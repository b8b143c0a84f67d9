//! The per-CPU buffer behind the `defmt` logger, and COM2, which drains it.
use bsp_x86_64::uart::{COM2, Uart16550};
use ipc::trace::Source;

pub use crate::cpu::percpu::TraceBuffer as CpuBuffer;

fn buffer() -> &'static CpuBuffer {
    crate::cpu::percpu::current().trace()
}

fn com2() -> Uart16550 {
    // SAFETY: COM2 belongs to the trace: no server gets its ports and nothing else in
    // the nucleus drives it. A handle is only the port number; drains run with interrupts
    // off on the one CPU, so one context drives the UART at a time.
    unsafe { Uart16550::new(COM2) }
}

/// Programs COM2 (boot, before the first record can be drained).
pub fn init() {
    com2().init();
}

#[defmt::global_logger]
struct Logger;

// SAFETY: `TraceBuffer` may be called from any context in any order: a record begun
// while another is open is dropped whole, a stray release changes nothing. defmt's
// sequence (acquire, writes, release) per frame holds for each context on its own.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        buffer().begin(Source::NUCLEUS);
    }
    unsafe fn flush() {}
    unsafe fn release() {
        buffer().end();
    }
    unsafe fn write(bytes: &[u8]) {
        buffer().write(bytes);
    }
}

defmt::timestamp!("{=u64}", tsc());

fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A server's record (its defmt frame), under the source of its slot.
pub fn push_server(slot: usize, payload: &[u8]) {
    buffer().push(Source::server(slot), payload);
}

fn report_drops() {
    let dropped = buffer().take_dropped();
    if dropped != 0 {
        defmt::warn!(
            "trace: {=u32} records dropped (buffer full or nested)",
            dropped
        );
    }
}

/// Sends what COM2's FIFO has room for now; never waits.
pub fn drain() {
    if !super::level::active() {
        return;
    }
    report_drops();
    let mut uart = com2();
    loop {
        let room = uart.room();
        let mut left = room;
        let sent = buffer().drain(|byte| {
            if left == 0 {
                return false;
            }
            uart.put_byte(byte);
            left -= 1;
            true
        });
        if room == 0 || sent < room {
            return;
        }
    }
}

/// Sends everything (waiting for the UART, boundedly): the run is about to end.
pub fn flush() {
    if !super::level::active() {
        return;
    }
    report_drops();
    let mut uart = com2();
    buffer().drain(|byte| {
        uart.write_byte(byte);
        true
    });
    uart.drain();
}
