//! The legacy timers: the PIT and the 8259 PIC, the TSC rate and the RTC.
//!
//! The preemption tick is each CPU's local APIC timer (`cpu::apic_timer`, issue 20); the PIT
//! on IRQ 0 is the fallback where no local APIC is usable ([`unmask_pit`]), and PIT channel 2
//! times the waits before any timer runs ([`pit_wait_us`]). The PIC is remapped to vectors
//! 32..48 (away from the exceptions) and every line stays masked unless the PIT ticks.
use bsp_x86_64::port::{inb, outb};
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of IRQ 0 after remapping.
pub const TIMER_VECTOR: u8 = 32;
/// The local APIC timer's vector on every CPU (`cpu::apic_timer`).
pub const APIC_TIMER_VECTOR: u8 = 0xf0;
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

#[cfg(target_os = "none")]
static TICKS: AtomicU64 = AtomicU64::new(0);
// On the host each test thread counts its own ticks (tests run in parallel).
#[cfg(not(target_os = "none"))]
std::thread_local! {
    static TICKS: AtomicU64 = const { AtomicU64::new(0) };
}
/// TSC ticks per millisecond, measured against the PIT at boot (0: not measured).
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
/// How long the TSC is measured against PIT channel 2.
const TSC_WINDOW_US: u64 = 10_000;
/// The RTC's seconds since 1970 read at boot, and the TSC value when it was read.
static RTC_SECONDS: AtomicU64 = AtomicU64::new(0);
static RTC_TSC: AtomicU64 = AtomicU64::new(0);
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// Spins allowed while waiting for the RTC (a missing device must not hang boot).
const SPIN_LIMIT: u32 = 50_000_000;

fn out(port: u16, value: u8) {
    // SAFETY: the PIC and PIT ports belong to the nucleus; no server gets them.
    unsafe { outb(port, value) };
}

/// Remaps the PIC with every line masked, starts the PIT at [`HZ`] and measures the TSC
/// against it, unless the APIC timer's calibration measured it already ([`keep_tsc_window`]).
/// IRQ 0 stays masked until [`unmask_pit`].
pub fn init() {
    // ICW1: init + ICW4; ICW2: vector offsets; ICW3: cascade on IRQ 2; ICW4: 8086 mode.
    for (cmd, data, offset, cascade) in [(PIC1_CMD, PIC1_DATA, 32, 4), (PIC2_CMD, PIC2_DATA, 40, 2)]
    {
        out(cmd, 0x11);
        out(data, offset);
        out(data, cascade);
        out(data, 0x01);
    }
    out(PIC1_DATA, 0xff);
    out(PIC2_DATA, 0xff);
    let divisor = (PIT_INPUT_HZ / HZ) as u16;
    out(PIT_CMD, 0x34); // channel 0, lobyte/hibyte, mode 2 (rate generator)
    out(PIT_CH0, divisor as u8);
    out(PIT_CH0, (divisor >> 8) as u8);
    if TSC_KHZ.load(Ordering::Relaxed) == 0 {
        TSC_KHZ.store(measure_tsc_khz(), Ordering::Relaxed);
    }
    if let Some(seconds) = read_rtc() {
        RTC_TSC.store(bsp_x86_64::insn::rdtsc(), Ordering::Relaxed);
        RTC_SECONDS.store(seconds, Ordering::Relaxed);
    }
}

/// Masks every PIC line (the kexec hand-off: the next generation programs the PIC again).
pub fn mask_all() {
    out(PIC1_DATA, 0xff);
    out(PIC2_DATA, 0xff);
}

/// Makes the PIT on IRQ 0 the tick (no local APIC timer).
pub fn unmask_pit() {
    out(PIC1_DATA, !0x01);
}

/// The TSC rate over one [`TSC_WINDOW_US`] window of PIT channel 2 (interrupts are off);
/// 0 where channel 2 does not count. One window of channel 2 instead of two periods of
/// channel 0 after waiting for its reload: 10 ms of boot instead of 20-30.
fn measure_tsc_khz() -> u64 {
    let mut start = 0;
    if !pit_window_us(TSC_WINDOW_US, || start = bsp_x86_64::insn::rdtsc()) {
        return 0;
    }
    tsc_khz(bsp_x86_64::insn::rdtsc().wrapping_sub(start), TSC_WINDOW_US)
}

/// The TSC rate that counts `ticks` over a [`pit_window_us`] window of `us`.
fn tsc_khz(ticks: u64, us: u64) -> u64 {
    let pit_ticks = (us * u64::from(PIT_INPUT_HZ) / 1_000_000).max(1);
    let khz = u128::from(ticks) * u128::from(PIT_INPUT_HZ) / (u128::from(pit_ticks) * 1000);
    khz as u64
}

/// Keeps the TSC rate from `ticks` counted over a [`pit_window_us`] window of `us` that
/// another calibration timed anyway (the APIC timer's, `cpu::apic_timer`): [`init`] then
/// measures no window of its own (10 ms of boot).
pub fn keep_tsc_window(ticks: u64, us: u64) {
    TSC_KHZ.store(tsc_khz(ticks, us), Ordering::Relaxed);
}

fn cmos(register: u8) -> u8 {
    out(CMOS_INDEX, register);
    // SAFETY: the CMOS/RTC ports belong to the nucleus; reading a date register has no
    // side effect.
    unsafe { inb(CMOS_DATA) }
}

/// The RTC's date as seconds since 1970, read between two updates.
fn read_rtc() -> Option<u64> {
    use bsp_x86_64::rtc::{RtcRegisters, reg};
    let mut spins = 0;
    while cmos(reg::STATUS_A) & 0x80 != 0 {
        spins += 1;
        if spins > SPIN_LIMIT {
            return None;
        }
    }
    let read = || RtcRegisters {
        seconds: cmos(reg::SECONDS),
        minutes: cmos(reg::MINUTES),
        hours: cmos(reg::HOURS),
        day: cmos(reg::DAY),
        month: cmos(reg::MONTH),
        year: cmos(reg::YEAR),
        status_b: cmos(reg::STATUS_B),
    };
    // Two equal reads: no update happened in between.
    let mut first = read();
    for _ in 0..4 {
        let second = read();
        if second == first {
            return first.unix_seconds();
        }
        first = second;
    }
    None
}

/// The time base pv-server hands its guests (`clock` syscall).
pub fn clock(which: ipc::domain::Clock) -> u64 {
    match which {
        ipc::domain::Clock::TscKhz => TSC_KHZ.load(Ordering::Relaxed),
        ipc::domain::Clock::RtcSeconds => RTC_SECONDS.load(Ordering::Relaxed),
        ipc::domain::Clock::RtcTsc => RTC_TSC.load(Ordering::Relaxed),
    }
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
    let _ = pit_window_us(us, || {});
}

/// [`pit_wait_us`], calling `started` the moment channel 2 starts counting (for a
/// calibration that must not count the port writes that set the channel up). False if
/// channel 2 reads back a count it was not given (no PIT: the window meant nothing).
pub fn pit_window_us(us: u64, started: impl FnOnce()) -> bool {
    let mut started = Some(started);
    let mut counted = true;
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
        if let Some(started) = started.take() {
            started();
        }
        out(PIT_CMD, 0x80); // latch channel 2
        // SAFETY: as above; the latch makes the two reads one count.
        let now = unsafe { u16::from(inb(PIT_CH2)) | u16::from(inb(PIT_CH2)) << 8 };
        counted &= now <= count;
        // SAFETY: as above; reading port B has no side effects.
        while unsafe { inb(PORT_B) } & 0x20 == 0 {
            core::hint::spin_loop();
        }
    }
    counted
}

/// Ticks counted since boot.
pub fn ticks() -> u64 {
    #[cfg(target_os = "none")]
    return TICKS.load(Ordering::Relaxed);
    #[cfg(not(target_os = "none"))]
    TICKS.with(|t| t.load(Ordering::Relaxed))
}

pub fn tick() -> u64 {
    #[cfg(target_os = "none")]
    return TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    #[cfg(not(target_os = "none"))]
    TICKS.with(|t| t.fetch_add(1, Ordering::Relaxed) + 1)
}
