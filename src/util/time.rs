//! Wall-clock times as text.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-05-01 12:34:56.789 UTC` from nanoseconds after the Unix epoch.
///
/// ```
/// assert_eq!(shmkit::util::time::utc(0), "1970-01-01 00:00:00.000 UTC");
/// ```
pub fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns % 1_000_000_000) / 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, as [`utc`] writes it.
pub fn utc_now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        // 2000-02-29 12:34:56.789 (a leap day), and the last representable nanosecond.
        assert_eq!(utc(951_827_696_789_000_000), "2000-02-29 12:34:56.789 UTC");
        assert_eq!(utc(1_735_689_599_999_999_999), "2024-12-31 23:59:59.999 UTC");
        assert!(utc(u64::MAX).starts_with("2554-07-21"));
        assert!(utc_now().starts_with("20"));
    }
}
