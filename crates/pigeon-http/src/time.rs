//! Times as Pigeon's HTTP APIs write them: Beijing time (UTC+8), as JPush does (what JPush
//! users' code parses), kept by Pigeon's own API, which was first served among JPush's.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};

/// UTC+8 (checked when compiling).
const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(z) => z,
    None => panic!("UTC+8 is a valid offset"),
};

pub fn zone() -> FixedOffset {
    BEIJING
}

fn at(ms: u64) -> DateTime<FixedOffset> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&zone())
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn beijing(ms: u64) -> String {
    at(ms).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `yyyy-MM-dd` in Beijing time.
pub fn beijing_date(ms: u64) -> String {
    at(ms).format("%Y-%m-%d").to_string()
}

/// Parses `yyyy-MM-dd HH:mm:ss` (zero-padded) as Beijing time, to Unix ms.
pub fn parse_beijing(s: &str) -> Option<u64> {
    if s.len() != 19 {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    let t = zone().from_local_datetime(&naive).single()?;
    u64::try_from(t.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_round_trips() {
        // 2026-01-01 00:00:00 UTC is 08:00 in Beijing.
        let ms = 1_767_225_600_000;
        assert_eq!(beijing(ms), "2026-01-01 08:00:00");
        assert_eq!(beijing_date(ms), "2026-01-01");
        assert_eq!(parse_beijing("2026-01-01 08:00:00"), Some(ms));
        assert_eq!(parse_beijing("2026-1-01 08:00:00"), None);
        assert_eq!(parse_beijing("2026-02-30 08:00:00"), None);
    }
}
