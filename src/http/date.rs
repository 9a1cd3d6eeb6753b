//! The `Date` header value: an IMF-fixdate (RFC 1123) such as `Sun, 22 Nov 2026 04:15:48 GMT`,
//! formatted at most once per second per thread.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate: always 29 ASCII bytes. `Copy`, so it can be handed around freely.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpDate([u8; 29]);

impl HttpDate {
    /// The date as text (29 bytes).
    pub fn as_str(&self) -> &str {
        // SAFETY: `from_unix` writes only ASCII (names from ASCII tables, decimal digits, spaces,
        // commas and colons), and the bytes are never changed afterwards.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The date as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Formats `secs` seconds after the Unix epoch (UTC).
    pub fn from_unix(secs: u64) -> HttpDate {
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
        ];
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
        let (year, month, day) = civil_from_days(days);
        // Years beyond 9999 cannot be written in four digits; clamp (never reached in practice).
        let year = year.min(9999);
        let mut b = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        b[0..3].copy_from_slice(DAYS[(days % 7) as usize]);
        two(&mut b[5..7], day);
        b[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        two(&mut b[12..14], year / 100);
        two(&mut b[14..16], year % 100);
        two(&mut b[17..19], hh);
        two(&mut b[20..22], mm);
        two(&mut b[23..25], ss);
        HttpDate(b)
    }
}

impl fmt::Debug for HttpDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HttpDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

thread_local! {
    static CACHE: Cell<(u64, HttpDate)> = Cell::new((0, HttpDate::from_unix(0)));
}

/// The current time as an IMF-fixdate. Each thread reformats at most once per second.
pub fn http_date() -> HttpDate {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let (cached_secs, date) = c.get();
        if cached_secs == secs && secs != 0 {
            date
        } else {
            let date = HttpDate::from_unix(secs);
            c.set((secs, date));
            date
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(HttpDate::from_unix(0).as_str(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            HttpDate::from_unix(1_795_320_948).as_str(),
            "Sun, 22 Nov 2026 04:15:48 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(951_782_400).as_str(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(4_133_980_799).as_str(),
            "Fri, 31 Dec 2100 23:59:59 GMT"
        );
        assert_eq!(
            HttpDate::from_unix(784_111_777).as_str(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn every_day_for_a_long_time_is_well_formed() {
        let mut prev_day = 0;
        for d in 0..200_000u64 {
            let s = HttpDate::from_unix(d * 86_400 + 43_200);
            assert!(s.as_bytes().is_ascii());
            let t = s.as_str();
            assert_eq!(t.len(), 29);
            assert!(t.ends_with(" 12:00:00 GMT"));
            let day: u64 = t[5..7].parse().unwrap();
            assert!(day == prev_day + 1 || day == 1, "{t}");
            prev_day = day;
        }
    }

    #[test]
    fn now_is_cached_and_sane() {
        let a = http_date();
        let b = http_date();
        assert_eq!(a.as_str().len(), 29);
        assert!(a.as_str().ends_with(" GMT"));
        assert_eq!(b.as_str().len(), 29);
        let year: u32 = a.as_str()[12..16].parse().unwrap();
        assert!(year >= 2024);
    }
}
