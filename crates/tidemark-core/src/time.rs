//! UTC timestamps with microsecond precision.
//!
//! The core never reads the clock: every timestamp is an input. On the wire
//! a timestamp is always `YYYY-MM-DDTHH:MM:SS.ffffffZ` (exactly six
//! fractional digits, `Z`), which is what canonical JSON requires.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Microseconds since 1970-01-01T00:00:00Z, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, bincode::Encode, bincode::Decode)]
pub struct Timestamp(i64);

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// 0000-01-01 .. 9999-12-31: the range RFC 3339 can write with four digits.
const MIN_MICROS: i64 = -62_167_219_200 * MICROS_PER_SECOND;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: {reason} (expected RFC 3339 UTC, e.g. 2026-11-23T02:00:00.000000Z)")]
pub struct TimestampError {
    input: String,
    reason: &'static str,
}

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros.clamp(MIN_MICROS, MAX_MICROS))
    }

    pub fn from_unix_seconds(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds.saturating_mul(MICROS_PER_SECOND))
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn saturating_add_micros(self, micros: i64) -> Timestamp {
        Timestamp::from_micros(self.0.saturating_add(micros))
    }

    /// Parses exactly the canonical form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn parse_canonical(input: &str) -> Result<Timestamp, TimestampError> {
        let ts = Timestamp::parse_rfc3339(input)?;
        if ts.to_string() != input {
            return Err(TimestampError {
                input: input.to_owned(),
                reason: "not canonical: write UTC with `Z` and exactly six fractional digits",
            });
        }
        Ok(ts)
    }

    /// Parses any RFC 3339 date-time (`T` or space separator, 0–9 fractional
    /// digits, `Z` or a numeric offset), or a bare date `YYYY-MM-DD`
    /// (midnight UTC). For command-line input; events use [`parse_canonical`].
    ///
    /// [`parse_canonical`]: Timestamp::parse_canonical
    pub fn parse_rfc3339(input: &str) -> Result<Timestamp, TimestampError> {
        let err = |reason| TimestampError { input: input.to_owned(), reason };
        let b = input.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let s = b.get(range)?;
            if s.iter().all(u8::is_ascii_digit) {
                Some(s.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
            } else {
                None
            }
        };
        if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err("date must be YYYY-MM-DD"));
        }
        let year = digits(0..4).ok_or_else(|| err("bad year"))?;
        let month = digits(5..7).ok_or_else(|| err("bad month"))?;
        let day = digits(8..10).ok_or_else(|| err("bad day"))?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(err("no such calendar date"));
        }
        let days = days_from_civil(year, month, day);
        if b.len() == 10 {
            return Ok(Timestamp(days * SECONDS_PER_DAY * MICROS_PER_SECOND));
        }
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return Err(err("time must be THH:MM:SS"));
        }
        let hour = digits(11..13).ok_or_else(|| err("bad hour"))?;
        let minute = digits(14..16).ok_or_else(|| err("bad minute"))?;
        let second = digits(17..19).ok_or_else(|| err("bad second"))?;
        if hour > 23 || minute > 59 || second > 59 {
            return Err(err("hour, minute or second out of range (leap seconds are not accepted)"));
        }
        let mut pos = 19;
        let mut micros = 0i64;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let frac = &b[start..pos];
            if frac.is_empty() || frac.len() > 9 {
                return Err(err("fraction must have 1 to 9 digits"));
            }
            for i in 0..6 {
                micros = micros * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            if frac.len() > 6 && frac[6..].iter().any(|d| *d != b'0') {
                return Err(err("precision finer than a microsecond"));
            }
        }
        let offset_seconds = match &b[pos..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
                let h = digits(pos + 1..pos + 3).ok_or_else(|| err("bad offset"))?;
                let m = digits(pos + 4..pos + 6).ok_or_else(|| err("bad offset"))?;
                if h > 23 || m > 59 {
                    return Err(err("bad offset"));
                }
                let s = h * 3600 + m * 60;
                if *sign == b'+' { s } else { -s }
            }
            [] => return Err(err("missing zone: add `Z` for UTC")),
            _ => return Err(err("unexpected characters after the time")),
        };
        let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
        let total = seconds * MICROS_PER_SECOND + micros;
        if !(MIN_MICROS..=MAX_MICROS).contains(&total) {
            return Err(err("out of range"));
        }
        Ok(Timestamp(total))
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let sod = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, (sod / 60) % 60, sod % 60)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_canonical(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "RFC 3339 UTC with exactly six fractional digits",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip() {
        for s in [
            "1970-01-01T00:00:00.000000Z",
            "2026-11-23T02:00:00.123456Z",
            "2000-02-29T23:59:59.999999Z",
            "1969-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00.000000Z",
        ] {
            assert_eq!(Timestamp::parse_canonical(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn lenient_forms_normalise() {
        let t = Timestamp::parse_rfc3339("2026-11-23T03:00:00+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T02:00:00.000000Z");
        let t = Timestamp::parse_rfc3339("2026-11-23 02:00:00.5Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T02:00:00.500000Z");
        let t = Timestamp::parse_rfc3339("2026-11-23").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T00:00:00.000000Z");
    }

    #[test]
    fn non_canonical_is_refused_for_events() {
        for s in [
            "2026-11-23T02:00:00Z",
            "2026-11-23T02:00:00.000Z",
            "2026-11-23T03:00:00.000000+01:00",
            "2026-02-30T00:00:00.000000Z",
            "2026-11-23T24:00:00.000000Z",
            "2026-11-23T02:00:00.0000001Z",
            "garbage",
        ] {
            assert!(Timestamp::parse_canonical(s).is_err(), "{s}");
        }
    }

    #[test]
    fn civil_days_agree_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
