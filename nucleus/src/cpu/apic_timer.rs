//! The preemption tick from each CPU's local APIC timer (issue 20 point 3), which replaces the
//! PIT wherever a local APIC is enabled.
//!
//! Calibrated once, on the boot CPU: the timer counted down over 10 ms of PIT channel 2 (the least of three windows), or
//! where that counts nothing (no PIT), CPUID leaf 0x15's core crystal clock (which the APIC
//! timer counts on CPUs that have the leaf). The PIT comes first because it is the machine's
//! own clock: a hypervisor may pass the host's leaf 0x15 through while its virtual APIC
//! counts at another rate. Every CPU then runs its timer periodic at `timer::HZ` with the same count
//! (they share one clock). Without a local APIC or a measurable rate the PIT on IRQ 0 stays
//! the tick (`timer`), on the boot CPU only.
use super::apic::{LocalApic, Mode};
use super::ipi::TIMER_VECTOR;
use super::percpu;
use core::sync::atomic::{AtomicU32, Ordering};

/// The timer's divide: it counts at the APIC clock / 16 (`LocalApic::timer_periodic`).
const DIVIDE: u64 = 16;
/// The calibration window (the PIT channel's set-up before it does not count: it starts
/// the APIC count-down the moment the channel starts), and how many are measured: delays
/// only ever add counts (a virtual CPU descheduled while it polls), so the least is kept.
/// 10 ms: 30 ms of boot in all, the TSC's measurement included; the count is 1/16 of the APIC clock, so even a 16 MHz
/// clock counts 10 000 in a window.
const CALIBRATION_US: u64 = 10_000;
const CALIBRATION_WINDOWS: u32 = 3;

/// APIC clocks the nucleus believes (outside, the measurement is taken for broken).
const PLAUSIBLE_HZ: core::ops::Range<u64> = 1_000_000..20_000_000_000;

/// Timer counts per tick (0: not calibrated, the PIT ticks).
static COUNT_PER_TICK: AtomicU32 = AtomicU32::new(0);

/// Where the APIC clock's rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cpuid15,
    Pit,
}

/// Enables the boot CPU's local APIC (LINT0 kept as the PIC's virtual wire) and calibrates
/// its timer. Prints one line; false if there is no usable APIC or rate (the PIT then ticks).
pub fn init_boot_cpu() -> bool {
    let cpu = percpu::current();
    let Some(apic) = LocalApic::enable(Mode::probe(), true) else {
        println!("timer: the local APIC cannot be mapped; the PIT ticks");
        return false;
    };
    cpu.set_apic(apic);
    let (hz, source) = match cpu.with_apic(measure_hz).flatten() {
        Some(hz) => (hz, Source::Pit),
        None => match crystal_hz() {
            Some(hz) => (hz, Source::Cpuid15),
            None => {
                println!(
                    "timer: the local APIC timer cannot be calibrated (no PIT, no CPUID leaf 0x15); the PIT ticks if there is one"
                );
                return false;
            }
        },
    };
    let count = hz / DIVIDE / u64::from(crate::timer::HZ);
    let Ok(count) = u32::try_from(count) else {
        println!("timer: local APIC clock {hz} Hz is out of range; the PIT ticks");
        return false;
    };
    if count == 0 {
        println!("timer: local APIC clock {hz} Hz is too slow; the PIT ticks");
        return false;
    }
    COUNT_PER_TICK.store(count, Ordering::Relaxed);
    println!(
        "timer: local APIC timer, clock {} kHz ({}), {} Hz on every cpu",
        hz / 1000,
        match source {
            Source::Cpuid15 => "CPUID leaf 0x15",
            Source::Pit => "measured against the PIT",
        },
        crate::timer::HZ
    );
    true
}

/// CPUID leaf 0x15's core crystal clock (ECX), where the leaf exists and names it.
fn crystal_hz() -> Option<u64> {
    if bsp_x86_64::insn::cpuid(0, 0).eax < 0x15 {
        return None;
    }
    let ecx = bsp_x86_64::insn::cpuid(0x15, 0).ecx;
    (ecx != 0).then_some(u64::from(ecx))
}

/// The APIC clock: the fewest counts over [`CALIBRATION_WINDOWS`] windows of
/// [`CALIBRATION_US`] of PIT channel 2. The TSC is read over the same windows (the fewest
/// ticks, by the same argument) and handed to `timer`, which then times no window of its own.
fn measure_hz(apic: &mut LocalApic) -> Option<u64> {
    use bsp_x86_64::insn::rdtsc;
    let mut least = u64::MAX;
    let mut least_tsc = u64::MAX;
    for _ in 0..CALIBRATION_WINDOWS {
        let mut tsc_start = 0;
        let pit = crate::timer::pit_window_us(CALIBRATION_US, || {
            apic.timer_count_down();
            tsc_start = rdtsc();
        });
        let counted = u64::from(apic.timer_counted());
        let tsc = rdtsc().wrapping_sub(tsc_start);
        if !pit {
            return None;
        }
        least = least.min(counted);
        least_tsc = least_tsc.min(tsc);
    }
    crate::timer::keep_tsc_window(least_tsc, CALIBRATION_US);
    let hz = least * DIVIDE * 1_000_000 / CALIBRATION_US;
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// Starts this CPU's timer periodic at `timer::HZ`; false if it is not calibrated or this
/// CPU has no APIC enabled.
pub fn start_here() -> bool {
    let count = COUNT_PER_TICK.load(Ordering::Relaxed);
    count != 0
        && percpu::current()
            .with_apic(|apic| apic.timer_periodic(TIMER_VECTOR, count))
            .is_some()
}

/// The boot CPU's tick from here on: its APIC timer where calibrated, else the PIT on IRQ 0.
/// (`timer::init` first: it remaps the PIC and measures the TSC either way.)
pub fn start_preemption() {
    crate::timer::init();
    if !start_here() {
        crate::timer::unmask_pit();
    }
}
