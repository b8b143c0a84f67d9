//! The preemption tick: the legacy PIT on IRQ 0 through the 8259 PIC (issue 7 point 2).
//!
//! Chosen over the LAPIC timer because it needs no calibration and no MMIO mapping, and it is
//! present in QEMU, Bochs and PC-compatible hardware. The PIC is remapped to vectors 32..48
//! (away from the exceptions) and every line but IRQ 0 is masked.
use bsp_x86_64::port::{inb, outb};
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of IRQ 0 after remapping.
pub const TIMER_VECTOR: u8 = 32;
/// Vectors the PIC can raise (spurious IRQ 7/15 included).
pub const PIC_VECTORS: core::ops::Range<u8> = 32..48;
/// Ticks per second.
pub const HZ: u32 = 100;
const PIT_INPUT_HZ: u32 = 1_193_182;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
const PIT_CH0: u16 = 0x40;
const PIT_CMD: u16 = 0x43;
const EOI: u8 = 0x20;

static TICKS: AtomicU64 = AtomicU64::new(0);

fn out(port: u16, value: u8) {
    // SAFETY: the PIC and PIT ports belong to the nucleus; no server gets them.
    unsafe { outb(port, value) };
}

/// Remaps the PIC, masks everything but IRQ 0 and starts the PIT at [`HZ`].
pub fn init() {
    // ICW1: init + ICW4; ICW2: vector offsets; ICW3: cascade on IRQ 2; ICW4: 8086 mode.
    for (cmd, data, offset, cascade) in [(PIC1_CMD, PIC1_DATA, 32, 4), (PIC2_CMD, PIC2_DATA, 40, 2)]
    {
        out(cmd, 0x11);
        out(data, offset);
        out(data, cascade);
        out(data, 0x01);
    }
    out(PIC1_DATA, !0x01);
    out(PIC2_DATA, 0xff);
    let divisor = (PIT_INPUT_HZ / HZ) as u16;
    out(PIT_CMD, 0x34); // channel 0, lobyte/hibyte, mode 2 (rate generator)
    out(PIT_CH0, divisor as u8);
    out(PIT_CH0, (divisor >> 8) as u8);
}

/// Acknowledges a PIC interrupt. Returns false for a spurious IRQ 7/15 (no EOI owed to the
/// line; the master still gets one for a spurious IRQ 15).
pub fn acknowledge(vector: u8) -> bool {
    let irq = vector - PIC_VECTORS.start;
    if irq == 7 || irq == 15 {
        let (cmd, bit) = if irq == 7 {
            (PIC1_CMD, 7)
        } else {
            (PIC2_CMD, 7)
        };
        out(cmd, 0x0b); // read ISR
        // SAFETY: as in `out`.
        let isr = unsafe { inb(cmd) };
        if isr & (1 << bit) == 0 {
            if irq == 15 {
                out(PIC1_CMD, EOI);
            }
            return false;
        }
    }
    if irq >= 8 {
        out(PIC2_CMD, EOI);
    }
    out(PIC1_CMD, EOI);
    true
}

const PIT_CH2: u16 = 0x42;
/// Port B of the PC: bit 0 gates PIT channel 2, bit 1 drives the speaker, bit 5 reads
/// channel 2's output.
const PORT_B: u16 = 0x61;

/// Busy-waits about `us` microseconds on PIT channel 2 (one-shot, the speaker off), for the
/// AP start-up delays before any timer runs. Channel 0 (the tick) is not touched. Waits of
/// more than 54 ms are done in pieces.
pub fn pit_wait_us(us: u64) {
    let mut left = us * u64::from(PIT_INPUT_HZ) / 1_000_000;
    while left > 0 {
        let count = left.min(0xffff) as u16;
        left -= u64::from(count);
        // SAFETY: as in `out`; port B is the nucleus' too.
        let b = unsafe { inb(PORT_B) } & !0x03;
        out(PORT_B, b); // gate low, speaker off
        out(PIT_CMD, 0xb0); // channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count)
        out(PIT_CH2, count as u8);
        out(PIT_CH2, (count >> 8) as u8);
        out(PORT_B, b | 0x01); // gate high: counting starts
        // SAFETY: as above; reading port B has no side effects.
        while unsafe { inb(PORT_B) } & 0x20 == 0 {
            core::hint::spin_loop();
        }
    }
}

/// Ticks counted since boot.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

pub fn tick() -> u64 {
    TICKS.fetch_add(1, Ordering::Relaxed) + 1
}
