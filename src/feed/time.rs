//! UTC timestamps in the form feeds use: `2026-11-22T10:04:05.123456Z`.
//!
//! Written by hand (civil-from-days) rather than pulled from a date crate:
//! it is the only date arithmetic the server needs, and it must be exact and
//! allocation-free on the page-rendering path.

/// The timestamp of an empty feed, as v5 writes it.
pub const EMPTY_FEED_UPDATED: &str = "0001-01-01T00:00:00Z";

/// A formatted timestamp, on the stack: `micros` (since the Unix epoch,
/// UTC) as RFC 3339 with six fractional digits.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339 {
    bytes: [u8; 40],
    len: usize,
}

impl Rfc3339 {
    pub fn new(micros: i64) -> Self {
        let seconds = micros.div_euclid(1_000_000);
        let fraction = micros.rem_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
        let mut formatted = Self { bytes: [0; 40], len: 0 };
        if !(0..=9999).contains(&year) {
            let text =
                format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:06}Z");
            formatted.bytes[..text.len()].copy_from_slice(text.as_bytes());
            formatted.len = text.len();
            return formatted;
        }
        // Every feed entry has a timestamp, and JSON entries two: digits in
        // pairs from a table, not through `fmt` or a division per digit,
        // which cost 3% of a page read (profiled).
        let out = &mut formatted.bytes;
        out[..27].copy_from_slice(b"0000-00-00T00:00:00.000000Z");
        let (year, fraction) = (year as usize, fraction as usize);
        put_pair(out, 0, year / 100);
        put_pair(out, 2, year % 100);
        put_pair(out, 5, month as usize);
        put_pair(out, 8, day as usize);
        put_pair(out, 11, hour as usize);
        put_pair(out, 14, minute as usize);
        put_pair(out, 17, second as usize);
        put_pair(out, 20, fraction / 10_000);
        put_pair(out, 22, fraction / 100 % 100);
        put_pair(out, 24, fraction % 100);
        formatted.len = 27;
        formatted
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Formats timestamps, remembering the last one: a page's entries mostly
/// come from a few appends, whose events share their time, so most entries
/// reuse the previous entry's text (formatting was 2% of a page read).
#[derive(Debug, Default)]
pub struct Timestamps {
    last: Option<(i64, Rfc3339)>,
}

impl Timestamps {
    pub fn format(&mut self, micros: i64) -> &Rfc3339 {
        if self.last.as_ref().is_some_and(|(last, _)| *last != micros) {
            self.last = None;
        }
        let (_, formatted) = self.last.get_or_insert_with(|| (micros, Rfc3339::new(micros)));
        formatted
    }
}

/// The decimal digits of 0..=99, two by two.
const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839\
404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Writes `value` (0..=99) as two digits at `at`.
fn put_pair(out: &mut [u8], at: usize, value: usize) {
    out[at..at + 2].copy_from_slice(&PAIRS[value * 2..value * 2 + 2]);
}

pub fn rfc3339(micros: i64) -> String {
    Rfc3339::new(micros).as_str().to_owned()
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
    fn remembered_timestamps_are_the_ones_asked_for() {
        let mut times = Timestamps::default();
        for micros in [5, 5, 1_795_345_445_123_456, 1_795_345_445_123_456, 5, -1] {
            assert_eq!(times.format(micros).as_str(), rfc3339(micros));
        }
    }

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
