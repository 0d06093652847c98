//! Schedule triggers (jpush-v3.md §7): when a single or periodical schedule fires, in
//! Beijing time as JPush reads the times it is given. Pure: the time is always passed in.

use crate::time::{parse_beijing, zone};
use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone};
use serde_json::Value;

/// Longest time ahead a single trigger may be, and longest span of a periodical one.
const ONE_YEAR_MS: u64 = 366 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Single {
        at_ms: u64,
    },
    Periodical {
        start_ms: u64,
        end_ms: u64,
        time: NaiveTime,
        unit: Unit,
        frequency: u32,
        /// Weekdays (0 = Monday) or days of the month (1..=31).
        points: Vec<u32>,
    },
}

const WEEKDAYS: [&str; 7] = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

fn date_of(ms: u64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&zone())
        .date_naive()
}

fn at(date: NaiveDate, time: NaiveTime) -> Option<u64> {
    let t = zone().from_local_datetime(&date.and_time(time)).single()?;
    u64::try_from(t.timestamp_millis()).ok()
}

impl Trigger {
    /// Parses and checks a trigger object given at `now_ms`.
    pub fn parse(v: &Value, now_ms: u64) -> Result<Trigger, String> {
        Self::parse_within(v, Some(now_ms))
    }

    /// Parses a trigger that was checked when it was stored: the one-year horizon counted
    /// from then, so it is not checked again against another time.
    pub fn parse_stored(v: &Value) -> Result<Trigger, String> {
        Self::parse_within(v, None)
    }

    fn parse_within(v: &Value, now_ms: Option<u64>) -> Result<Trigger, String> {
        let obj = v.as_object().ok_or("trigger must be an object")?;
        match (obj.get("single"), obj.get("periodical")) {
            (Some(s), None) => Self::single(s, now_ms),
            (None, Some(p)) => Self::periodical(p),
            _ => Err("trigger must hold exactly one of single and periodical".into()),
        }
    }

    fn single(v: &Value, now_ms: Option<u64>) -> Result<Trigger, String> {
        let time = v
            .get("time")
            .and_then(Value::as_str)
            .ok_or("trigger.single.time is required: \"yyyy-MM-dd HH:mm:ss\"")?;
        let at_ms = parse_beijing(time).ok_or_else(|| {
            format!("trigger.single.time {time:?} is not \"yyyy-MM-dd HH:mm:ss\"")
        })?;
        if now_ms.is_some_and(|now| at_ms > now + ONE_YEAR_MS) {
            return Err("trigger.single.time must be at most one year ahead".into());
        }
        Ok(Trigger::Single { at_ms })
    }

    fn periodical(v: &Value) -> Result<Trigger, String> {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("trigger.periodical.{k} is required"))
        };
        let stamp = |k: &str| -> Result<u64, String> {
            let s = field(k)?;
            parse_beijing(s).ok_or_else(|| {
                format!("trigger.periodical.{k} {s:?} is not \"yyyy-MM-dd HH:mm:ss\"")
            })
        };
        let (start_ms, end_ms) = (stamp("start")?, stamp("end")?);
        if end_ms <= start_ms {
            return Err("trigger.periodical.end must be after start".into());
        }
        if end_ms - start_ms > ONE_YEAR_MS {
            return Err("trigger.periodical may span at most one year".into());
        }
        let t = field("time")?;
        let time = NaiveTime::parse_from_str(t, "%H:%M:%S")
            .ok()
            .filter(|_| t.len() == 8)
            .ok_or_else(|| format!("trigger.periodical.time {t:?} is not \"HH:mm:ss\""))?;
        let unit = match field("time_unit")?.to_ascii_lowercase().as_str() {
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            other => {
                return Err(format!(
                    "trigger.periodical.time_unit {other:?} is not day, week or month"
                ))
            }
        };
        let frequency = v
            .get("frequency")
            .and_then(Value::as_u64)
            .filter(|f| (1..=100).contains(f))
            .ok_or("trigger.periodical.frequency must be a number from 1 to 100")?
            as u32;
        let points = match (unit, v.get("point")) {
            (Unit::Day, None | Some(Value::Null)) => Vec::new(),
            (Unit::Day, Some(_)) => {
                return Err("trigger.periodical.point must be absent when time_unit is day".into())
            }
            (_, Some(Value::Array(list))) if !list.is_empty() => list
                .iter()
                .map(|p| {
                    let s = p.as_str().unwrap_or_default().to_ascii_uppercase();
                    match unit {
                        Unit::Week => WEEKDAYS
                            .iter()
                            .position(|d| *d == s)
                            .map(|i| i as u32)
                            .ok_or_else(|| format!("point {p} is not one of MON..SUN")),
                        _ => s
                            .parse::<u32>()
                            .ok()
                            .filter(|d| s.len() == 2 && (1..=31).contains(d))
                            .ok_or_else(|| format!("point {p} is not a day \"01\"..\"31\"")),
                    }
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(
                    "trigger.periodical.point must list the weekdays or days of the month".into(),
                )
            }
        };
        let trigger = Trigger::Periodical {
            start_ms,
            end_ms,
            time,
            unit,
            frequency,
            points,
        };
        if trigger.next_after(start_ms.saturating_sub(1)).is_none() {
            return Err("trigger.periodical never fires between start and end".into());
        }
        Ok(trigger)
    }

    /// Whether two triggers are of the same kind (an update may not switch kinds).
    pub fn same_kind(&self, other: &Trigger) -> bool {
        matches!(
            (self, other),
            (Trigger::Single { .. }, Trigger::Single { .. })
                | (Trigger::Periodical { .. }, Trigger::Periodical { .. })
        )
    }

    /// The first firing strictly after `after_ms`, if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Trigger::Single { at_ms } => (*at_ms > after_ms).then_some(*at_ms),
            Trigger::Periodical {
                start_ms,
                end_ms,
                time,
                unit,
                frequency,
                points,
            } => {
                let first = date_of(*start_ms);
                let mut date = date_of((*start_ms).max(after_ms));
                loop {
                    let t = at(date, *time)?;
                    if t > *end_ms {
                        return None;
                    }
                    let due = t > after_ms
                        && t >= *start_ms
                        && matches(first, date, *unit, *frequency, points);
                    if due {
                        return Some(t);
                    }
                    date = date.checked_add_days(Days::new(1))?;
                }
            }
        }
    }
}

fn matches(first: NaiveDate, date: NaiveDate, unit: Unit, frequency: u32, points: &[u32]) -> bool {
    let every = |n: i64| n.rem_euclid(i64::from(frequency)) == 0;
    match unit {
        Unit::Day => every((date - first).num_days()),
        Unit::Week => {
            let monday = |d: NaiveDate| {
                d - chrono::Duration::days(i64::from(d.weekday().num_days_from_monday()))
            };
            every((monday(date) - monday(first)).num_days() / 7)
                && points.contains(&date.weekday().num_days_from_monday())
        }
        Unit::Month => {
            let months =
                (date.year() - first.year()) * 12 + date.month() as i32 - first.month() as i32;
            every(i64::from(months)) && points.contains(&date.day())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(s: &str) -> u64 {
        parse_beijing(s).unwrap()
    }

    const NOW: &str = "2026-11-20 12:00:00";

    #[test]
    fn a_stored_trigger_is_not_rechecked_against_another_time() {
        // Replaced 11 months ahead of its replacement, 2 months after its creation: valid
        // when stored, and still readable when it fires.
        let v = json!({"single": {"time": "2027-10-20 08:00:00"}});
        assert!(Trigger::parse(&v, ms("2026-09-20 12:00:00")).is_err());
        assert!(Trigger::parse(&v, ms(NOW)).is_ok());
        let t = Trigger::parse_stored(&v).unwrap();
        assert_eq!(t.next_after(ms(NOW)), Some(ms("2027-10-20 08:00:00")));
    }

    #[test]
    fn single_fires_once_at_its_time() {
        let t =
            Trigger::parse(&json!({"single": {"time": "2026-11-21 08:30:00"}}), ms(NOW)).unwrap();
        assert_eq!(t.next_after(ms(NOW)), Some(ms("2026-11-21 08:30:00")));
        assert_eq!(t.next_after(ms("2026-11-21 08:30:00")), None);
    }

    #[test]
    fn daily_every_second_day() {
        let t = Trigger::parse(
            &json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-30 00:00:00",
                "time": "09:00:00", "time_unit": "DAY", "frequency": 2}}),
            ms(NOW),
        )
        .unwrap();
        assert_eq!(t.next_after(ms(NOW)), Some(ms("2026-11-22 09:00:00")));
        assert_eq!(
            t.next_after(ms("2026-11-22 09:00:00")),
            Some(ms("2026-11-24 09:00:00"))
        );
        assert_eq!(t.next_after(ms("2026-11-28 09:00:00")), None);
    }

    #[test]
    fn weekly_on_points() {
        // 2026-11-20 is a Friday.
        let t = Trigger::parse(
            &json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2027-01-30 00:00:00",
                "time": "18:00:00", "time_unit": "week", "frequency": 1, "point": ["MON", "FRI"]}}),
            ms(NOW),
        )
        .unwrap();
        assert_eq!(t.next_after(ms(NOW)), Some(ms("2026-11-20 18:00:00")));
        assert_eq!(
            t.next_after(ms("2026-11-20 18:00:00")),
            Some(ms("2026-11-23 18:00:00"))
        );
    }

    #[test]
    fn monthly_skips_months_without_the_day() {
        let t = Trigger::parse(
            &json!({"periodical": {"start": "2026-12-01 00:00:00", "end": "2027-06-01 00:00:00",
                "time": "07:00:00", "time_unit": "month", "frequency": 1, "point": ["31"]}}),
            ms(NOW),
        )
        .unwrap();
        assert_eq!(t.next_after(ms(NOW)), Some(ms("2026-12-31 07:00:00")));
        assert_eq!(
            t.next_after(ms("2026-12-31 07:00:00")),
            Some(ms("2027-01-31 07:00:00"))
        );
        assert_eq!(
            t.next_after(ms("2027-01-31 07:00:00")),
            Some(ms("2027-03-31 07:00:00"))
        );
    }

    #[test]
    fn bad_triggers_say_what_is_wrong() {
        let now = ms(NOW);
        let cases = [
            (json!({}), "exactly one"),
            (
                json!({"single": {"time": "2026-11-21 8:30:00"}}),
                "yyyy-MM-dd",
            ),
            (
                json!({"single": {"time": "2028-11-21 08:30:00"}}),
                "one year",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-19 00:00:00",
                "time": "09:00:00", "time_unit": "day", "frequency": 1}}),
                "after start",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-30 00:00:00",
                "time": "09:00:00", "time_unit": "day", "frequency": 1, "point": ["MON"]}}),
                "absent",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-30 00:00:00",
                "time": "09:00:00", "time_unit": "year", "frequency": 1}}),
                "time_unit",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-30 00:00:00",
                "time": "09:00:00", "time_unit": "week", "frequency": 1, "point": ["XYZ"]}}),
                "MON..SUN",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 00:00:00", "end": "2026-11-30 00:00:00",
                "time": "09:00:00", "time_unit": "day", "frequency": 0}}),
                "frequency",
            ),
            (
                json!({"periodical": {"start": "2026-11-20 10:00:00", "end": "2026-11-20 11:00:00",
                "time": "09:00:00", "time_unit": "day", "frequency": 1}}),
                "never fires",
            ),
        ];
        for (v, words) in cases {
            let e = Trigger::parse(&v, now).unwrap_err();
            assert!(e.contains(words), "{v}: {e}");
        }
    }
}
