//! Time as bento writes and reads it: RFC 3339 UTC timestamps (manifests, reports,
//! heartbeats), written and read back into seconds since the epoch, and systemd time
//! spans (`status.interval`).
//!
//! The calendar is jiff's (already built for the object-storage client). What a host
//! writes is read strictly: exactly `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, the RFC 3339
//! profile, checked here before jiff is asked, since jiff's own parser accepts more
//! (`+0100`, a missing `:SS`).

/// Now, in seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, as RFC 3339 UTC with seconds: `2026-11-26T05:00:00Z`.
pub fn now_rfc3339() -> String {
    rfc3339(now())
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into seconds since the epoch (fractions
/// dropped). `None` when malformed or before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (
                rest.get(1..3)?.parse::<i64>().ok()?,
                rest.get(4..6)?.parse::<i64>().ok()?,
            );
            sign * (h * 3600 + m * 60)
        }
    };
    let date = jiff::civil::Date::new(year as i16, month as i8, day as i8).ok()?;
    let days = i64::from(
        date.since(jiff::civil::Date::constant(1970, 1, 1))
            .ok()?
            .get_days(),
    );
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

/// Parses a systemd time span: one or more `<number><unit>` parts, optionally separated by
/// spaces, units `s`/`sec`, `m`/`min`, `h`/`hr`, `d`/`day`, `w`/`week` (plurals too);
/// a bare number is seconds. `None` when malformed or zero.
pub fn parse_timespan(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let scale = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(scale)?)?;
    }
    (total > 0).then_some(total)
}

/// A systemd time span of a settings file, parsed once at load (see [`parse_timespan`]):
/// never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSpan(u64);

impl TimeSpan {
    /// `text` as a span of 1 s to `max` seconds; `None` otherwise.
    pub fn parse(text: &str, max: u64) -> Option<TimeSpan> {
        parse_timespan(text).filter(|&secs| secs <= max).map(TimeSpan)
    }

    /// The default span of a setting (`secs` must not be zero).
    pub(crate) const fn from_secs(secs: u64) -> TimeSpan {
        TimeSpan(secs)
    }

    /// In seconds.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// As a [`std::time::Duration`].
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_is_written() {
        for secs in [0, 951_782_400, 1_795_669_200, 4_102_444_800, 1_709_164_799] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs), "{}", rfc3339(secs));
        }
        assert_eq!(
            parse_rfc3339("2026-11-26T06:00:00.123+01:00"),
            Some(1_795_669_200)
        );
        assert_eq!(parse_rfc3339("2026-11-26T04:30:00-00:30"), Some(1_795_669_200));
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-11-26T05:00:00",
            "2026-13-26T05:00:00Z",
            "2026-11-26T25:00:00Z",
            "2026-11-26T05:00:00.Z",
            "2026-11-26T05:00:00+0100",
            "1969-12-31T23:59:59Z",
            "20x6-11-26T05:00:00Z",
            "2026-11-26T05:00:0\u{e9}Z",
            "2026-11-26T05:00:00+\u{e9}:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_669_200), "2026-11-26T05:00:00Z");
    }

    #[test]
    fn time_spans() {
        assert_eq!(parse_timespan("15min"), Some(900));
        assert_eq!(parse_timespan("90"), Some(90));
        assert_eq!(parse_timespan("1h30m"), Some(5400));
        assert_eq!(parse_timespan("2 days"), Some(172_800));
        for bad in ["", "0", "min", "5 fortnights", "-5min", "1.5h"] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
    }
}
