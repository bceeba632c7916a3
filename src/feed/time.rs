//! UTC timestamps in the form feeds use: `2026-11-22T10:04:05.123456Z`.
//!
//! Written by hand (civil-from-days) rather than pulled from a date crate:
//! it is the only date arithmetic the server needs, and it must be exact and
//! allocation-free on the page-rendering path.

use std::fmt::Write;

/// The timestamp of an empty feed, as v5 writes it.
pub const EMPTY_FEED_UPDATED: &str = "0001-01-01T00:00:00Z";

/// Appends `micros` (since the Unix epoch, UTC) as RFC 3339 with six
/// fractional digits.
pub fn write_rfc3339(out: &mut String, micros: i64) {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    if !(0..=9999).contains(&year) {
        // Writing into a String cannot fail.
        let _ = write!(out, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:06}Z");
        return;
    }
    // Every feed entry has two timestamps: digits by hand rather than
    // through `fmt`, which costs several times as much.
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, i64::from(month), 2);
    out.push('-');
    push_digits(out, i64::from(day), 2);
    out.push('T');
    push_digits(out, hour, 2);
    out.push(':');
    push_digits(out, minute, 2);
    out.push(':');
    push_digits(out, second, 2);
    out.push('.');
    push_digits(out, fraction, 6);
    out.push('Z');
}

/// Appends the `width` lowest decimal digits of `value` (not negative).
fn push_digits(out: &mut String, value: i64, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10_i64.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

pub fn rfc3339(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    write_rfc3339(&mut out, micros);
    out
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (y, m, d)
/// in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(1_485_784), "1970-01-01T00:00:01.485784Z");
        assert_eq!(rfc3339(1_795_345_445_123_456), "2026-11-22T11:04:05.123456Z");
        assert_eq!(rfc3339(4_102_444_799_999_999), "2099-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(253_402_300_800_000_000), "10000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn hand_written_digits_agree_with_fmt() {
        let mut micros = 7_i64;
        while micros < 250_000_000_000_000_000 {
            let seconds = micros.div_euclid(1_000_000);
            let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
            let of_day = seconds.rem_euclid(86_400);
            let expected = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                of_day / 3600,
                of_day % 3600 / 60,
                of_day % 60,
                micros.rem_euclid(1_000_000)
            );
            assert_eq!(rfc3339(micros), expected);
            micros = micros * 3 + 12_345;
        }
    }
}
