//! The CMOS real-time clock's registers as a date, and the date as seconds since 1970: the
//! wall clock a PV guest's shared_info reports (issue 16 point 7). Pure logic; the port
//! reads are the nucleus'.

/// CMOS register numbers (`out 0x70, reg; in 0x71`).
pub mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const MINUTES: u8 = 0x02;
    pub const HOURS: u8 = 0x04;
    pub const DAY: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    /// Status A: bit 7 = update in progress.
    pub const STATUS_A: u8 = 0x0a;
    /// Status B: bit 2 = binary (else BCD), bit 1 = 24-hour.
    pub const STATUS_B: u8 = 0x0b;
}

/// The six date registers as read, and status B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcRegisters {
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub day: u8,
    pub month: u8,
    pub year: u8,
    pub status_b: u8,
}

const fn from_bcd(value: u8) -> u8 {
    (value >> 4) * 10 + (value & 0xf)
}

impl RtcRegisters {
    /// Seconds since 1970-01-01 00:00 UTC (the RTC is taken to run in UTC, years 2000-2099).
    /// `None` for a date that cannot be one.
    pub fn unix_seconds(&self) -> Option<u64> {
        let binary = self.status_b & 4 != 0;
        let decode = |v: u8| if binary { v } else { from_bcd(v) };
        let pm = self.hours & 0x80 != 0;
        let mut hours = decode(self.hours & 0x7f);
        if self.status_b & 2 == 0 {
            // 12-hour clock: 12 AM is 0, 12 PM is 12.
            hours = (hours % 12) + if pm { 12 } else { 0 };
        }
        let (seconds, minutes) = (decode(self.seconds), decode(self.minutes));
        let (day, month) = (decode(self.day), decode(self.month));
        let year = 2000 + u64::from(decode(self.year));
        if seconds > 59
            || minutes > 59
            || hours > 23
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
        {
            return None;
        }
        Some(
            days_since_epoch(year, u64::from(month), u64::from(day)) * 86_400
                + u64::from(hours) * 3600
                + u64::from(minutes) * 60
                + u64::from(seconds),
        )
    }
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian, year ≥ 1970).
const fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    // Count from March so the leap day is the year's last.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let days_before_month = (153 * m + 2) / 5;
    let days = y * 365 + y / 4 - y / 100 + y / 400 + days_before_month + day - 1;
    // The same count for 1970-01-01.
    days - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bcd(seconds: u8, minutes: u8, hours: u8, day: u8, month: u8, year: u8) -> RtcRegisters {
        RtcRegisters {
            seconds,
            minutes,
            hours,
            day,
            month,
            year,
            status_b: 2,
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        // 2026-12-01 09:30:00 UTC.
        assert_eq!(
            bcd(0x00, 0x30, 0x09, 0x01, 0x12, 0x26).unix_seconds(),
            Some(1_796_117_400)
        );
        // Binary mode, 2024-02-29 23:59:59.
        let binary = RtcRegisters {
            seconds: 59,
            minutes: 59,
            hours: 23,
            day: 29,
            month: 2,
            year: 24,
            status_b: 6,
        };
        assert_eq!(binary.unix_seconds(), Some(1_709_251_199));
        // 12-hour BCD: 12:05 AM and 1 PM.
        let twelve = RtcRegisters {
            status_b: 0,
            ..bcd(0, 0x05, 0x12, 1, 1, 0x00)
        };
        assert_eq!(twelve.unix_seconds(), Some(946_684_800 + 300));
        let pm = RtcRegisters {
            status_b: 0,
            ..bcd(0, 0, 0x81, 1, 1, 0x00)
        };
        assert_eq!(pm.unix_seconds(), Some(946_684_800 + 13 * 3600));
        assert_eq!(bcd(0, 0, 0, 0, 1, 0).unix_seconds(), None, "day 0");
        assert_eq!(bcd(0x60, 0, 0, 1, 1, 0).unix_seconds(), None);
    }
}
