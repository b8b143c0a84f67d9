//! Guest time (issue 16 point 7, pv64-abi.md §2.4, §4.18): system time is nanoseconds since
//! TSC 0 at the rate the nucleus measured, each vCPU's `vcpu_time_info` gives the guest the
//! same clock from its own TSC reads, and the wall clock is the RTC's time at system time 0.
//! Both records are written with Xen's version protocol (odd while being written).

use xen_abi::Errno;
use xen_abi::shared_info::{TIME_FLAG_TSC_STABLE, VcpuTimeInfo};

use crate::shared_page::{SharedPage, TIME, WC_VERSION, vcpu_field};

/// `set_timer_op`'s "too far or negative" deadline: 100 ms from now.
pub const TIMER_SLOP_NS: u64 = 100_000_000;
/// Deadlines further than this are treated as the slop (Xen: 2^50 ns).
pub const TIMER_MAX_AHEAD_NS: u64 = 1 << 50;

/// The nucleus' time base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    /// TSC ticks per millisecond.
    pub tsc_khz: u64,
    /// Wall-clock ns since 1970 at system time 0.
    pub wall_at_zero_ns: u128,
}

impl TimeBase {
    /// From the nucleus' figures: the TSC rate and the RTC's seconds read at `rtc_tsc`.
    /// `None` without a TSC rate (time cannot be given).
    pub fn new(tsc_khz: u64, rtc_seconds: u64, rtc_tsc: u64) -> Option<Self> {
        if tsc_khz == 0 {
            return None;
        }
        let mut base = Self {
            tsc_khz,
            wall_at_zero_ns: 0,
        };
        let rtc_ns = u128::from(rtc_seconds) * 1_000_000_000;
        base.wall_at_zero_ns = rtc_ns.saturating_sub(u128::from(base.ns(rtc_tsc)));
        Some(base)
    }

    /// System time at `tsc`.
    pub fn ns(&self, tsc: u64) -> u64 {
        (u128::from(tsc) * 1_000_000 / u128::from(self.tsc_khz)) as u64
    }

    /// `(tsc_to_system_mul, tsc_shift)` with `ns = ((delta << shift) * mul) >> 32`, `mul`
    /// in `[2^31, 2^32)` for the best precision.
    pub fn scale(&self) -> (u32, i8) {
        let khz = u128::from(self.tsc_khz);
        let mul_at = |shift: i32| -> u128 {
            if shift >= 0 {
                (1_000_000u128 << 32) / (khz << shift)
            } else {
                (1_000_000u128 << (32 - shift)) / khz
            }
        };
        let mut shift = 0i32;
        while mul_at(shift) >= 1 << 32 && shift < 31 {
            shift += 1;
        }
        while mul_at(shift) < 1 << 31 && shift > -31 {
            shift -= 1;
        }
        (mul_at(shift).min(u128::from(u32::MAX)) as u32, shift as i8)
    }

    /// The `vcpu_time_info` body for `tsc` (version not set).
    pub fn time_info(&self, tsc: u64) -> VcpuTimeInfo {
        let (mul, shift) = self.scale();
        VcpuTimeInfo {
            tsc_timestamp: tsc,
            system_time: self.ns(tsc),
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: TIME_FLAG_TSC_STABLE,
            ..VcpuTimeInfo::default()
        }
    }

    /// Where `set_timer_op(deadline)` arms the timer at `now` (system ns); `None` stops it.
    pub fn timer_deadline(deadline: u64, now: u64) -> Option<u64> {
        if deadline == 0 {
            None
        } else if (deadline as i64) < 0 || deadline > now.saturating_add(TIMER_MAX_AHEAD_NS) {
            Some(now + TIMER_SLOP_NS)
        } else {
            Some(deadline)
        }
    }
}

/// Writes vCPU `vcpu`'s time record for `tsc` (version odd, body, version even).
pub fn write_time(
    shared: &mut impl SharedPage,
    base: &TimeBase,
    vcpu: u32,
    tsc: u64,
) -> Result<(), Errno> {
    let at = vcpu_field(vcpu, TIME);
    let mut version = [0; 4];
    shared.read(at, &mut version)?;
    let version = u32::from_le_bytes(version);
    let odd = version.wrapping_add(1) | 1;
    shared.write(at, &odd.to_le_bytes())?;
    let mut body = base.time_info(tsc);
    body.version = odd.wrapping_add(1);
    let bytes = body.to_bytes();
    shared.write(at + 8, &bytes[8..])?;
    shared.write(at, &bytes[..4])
}

/// Writes the wall clock (`wc_sec`/`wc_nsec`/`wc_sec_hi`) with its version protocol.
pub fn write_wallclock(shared: &mut impl SharedPage, base: &TimeBase) -> Result<(), Errno> {
    let mut version = [0; 4];
    shared.read(WC_VERSION, &mut version)?;
    let odd = u32::from_le_bytes(version).wrapping_add(1) | 1;
    shared.write(WC_VERSION, &odd.to_le_bytes())?;
    let seconds = (base.wall_at_zero_ns / 1_000_000_000) as u64;
    let nanos = (base.wall_at_zero_ns % 1_000_000_000) as u32;
    let mut body = [0u8; 12];
    body[..4].copy_from_slice(&(seconds as u32).to_le_bytes());
    body[4..8].copy_from_slice(&nanos.to_le_bytes());
    body[8..].copy_from_slice(&((seconds >> 32) as u32).to_le_bytes());
    shared.write(WC_VERSION + 4, &body)?;
    shared.write(WC_VERSION, &odd.wrapping_add(1).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_page::tests::Page;

    #[test]
    fn the_guests_formula_gives_our_clock() {
        for khz in [1_000u64, 10_000, 2_100_000, 3_000_000, 5_400_000] {
            let base = TimeBase::new(khz, 0, 0).unwrap();
            let (mul, shift) = base.scale();
            assert!(mul >= 1 << 31, "{khz}: mul {mul:#x} shift {shift}");
            let info = base.time_info(1_000_000);
            for delta in [0u64, 1000, khz * 1000, khz * 10_000] {
                let guest = info.system_time_at(1_000_000 + delta);
                let ours = base.ns(1_000_000 + delta);
                assert!(
                    guest.abs_diff(ours) <= 1 + ours / 1_000_000,
                    "{khz} kHz, {delta}: {guest} vs {ours}"
                );
            }
        }
        // 1 GHz: 1 ns per tick.
        assert_eq!(TimeBase::new(1_000_000, 0, 0).unwrap().ns(12345), 12345);
        assert_eq!(TimeBase::new(0, 0, 0), None);
    }

    #[test]
    fn records_use_the_version_protocol_and_the_wall_clock_counts_from_zero() {
        // 1 GHz, RTC said 1_700_000_000 s at TSC 5e9 (5 s after TSC 0).
        let base = TimeBase::new(1_000_000, 1_700_000_000, 5_000_000_000).unwrap();
        let mut page = Page::default();
        write_time(&mut page, &base, 0, 7_000_000_000).unwrap();
        write_time(&mut page, &base, 0, 8_000_000_000).unwrap();
        let info = VcpuTimeInfo::from_bytes(&page.0[32..64].try_into().unwrap());
        assert_eq!(info.version, 4);
        assert_eq!(info.tsc_timestamp, 8_000_000_000);
        assert_eq!(info.system_time, 8_000_000_000);
        assert_eq!(info.flags, TIME_FLAG_TSC_STABLE);
        write_wallclock(&mut page, &base).unwrap();
        let word = |at: usize| u32::from_le_bytes(page.0[at..at + 4].try_into().unwrap());
        assert_eq!(word(3072), 2);
        assert_eq!(word(3076), 1_699_999_995);
        assert_eq!((word(3080), word(3084)), (0, 0));
    }

    #[test]
    fn timer_deadlines() {
        assert_eq!(TimeBase::timer_deadline(0, 10), None);
        assert_eq!(TimeBase::timer_deadline(500, 10), Some(500));
        assert_eq!(
            TimeBase::timer_deadline(5, 10),
            Some(5),
            "past: fires at once"
        );
        assert_eq!(
            TimeBase::timer_deadline(u64::MAX, 10),
            Some(10 + TIMER_SLOP_NS)
        );
        assert_eq!(
            TimeBase::timer_deadline(1 << 51, 10),
            Some(10 + TIMER_SLOP_NS)
        );
    }
}
