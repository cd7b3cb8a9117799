//! Cron schedules as marketers write them.
//!
//! Users write standard cron: five fields (`minute hour day-of-month month day-of-week`), days of
//! the week 0–7 with 0 and 7 both Sunday, and — as in POSIX cron — when both day fields are
//! restricted a day matches if *either* does. Six and seven fields put seconds first and a year
//! last. The `cron` crate wants seven fields, numbers Sunday 1, and requires both day fields to
//! match, so an expression is translated here, and a both-days expression becomes two schedules
//! whose fire times are merged.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::ast::DayOfWeekSet;

#[derive(Clone, Debug)]
pub struct CronSchedule {
    schedules: Vec<cron::Schedule>,
}

impl CronSchedule {
    /// Reads a cron expression; the error says what is wrong in words for people.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (seconds, rest, year) = match fields.len() {
            5 => ("0", &fields[..], None),
            6 => (fields[0], &fields[1..], None),
            7 => (fields[0], &fields[1..6], Some(fields[6])),
            n => {
                return Err(format!(
                    "a cron schedule has 5 fields (minute hour day month weekday), not {n}"
                ))
            }
        };
        let [minute, hour, day, month, weekday] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        for (field, name, low, high) in [
            (seconds, "second", 0, 59),
            (minute, "minute", 0, 59),
            (hour, "hour", 0, 23),
            (day, "day of the month", 1, 31),
            (month, "month", 1, 12),
        ] {
            check_range(field, name, low, high)?;
        }
        let weekday = translate_weekdays(weekday)?;
        let any = |f: &str| f == "*" || f == "?";
        let variants: Vec<(&str, &str)> = if !any(day) && !any(&weekday) {
            vec![(day, "*"), ("*", weekday.as_str())]
        } else {
            vec![(day, weekday.as_str())]
        };
        let schedules = variants
            .into_iter()
            .map(|(day, weekday)| {
                let mut expr = format!("{seconds} {minute} {hour} {day} {month} {weekday}");
                if let Some(year) = year {
                    expr.push(' ');
                    expr.push_str(year);
                }
                // The crate's message draws its own (translated) expression; keep only the reason.
                cron::Schedule::from_str(&expr).map_err(|e| {
                    lowercase_first(
                        e.to_string()
                            .lines()
                            .last()
                            .unwrap_or("invalid schedule")
                            .trim(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(CronSchedule { schedules })
    }

    /// The first fire time strictly after `after`, in `after`'s time zone.
    pub fn next_after<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(after).next())
            .min()
    }
}

/// Numbers in a field (`5`, `1-5`, `*/15`, `1,15`) must be in range; names are left to the crate.
fn check_range(field: &str, name: &str, low: u32, high: u32) -> Result<(), String> {
    for item in field.split(',') {
        let (range, step) = item.split_once('/').unwrap_or((item, "1"));
        if step.parse::<u32>().map_or(true, |s| s == 0) {
            return Err(format!(
                "`{step}` is not a step in the {name} field `{field}`"
            ));
        }
        for number in range.split('-') {
            if number == "*" || number == "?" || number.chars().any(|c| c.is_ascii_alphabetic()) {
                continue;
            }
            match number.parse::<u32>() {
                Ok(n) if (low..=high).contains(&n) => {}
                Ok(n) => return Err(format!("{name} `{n}` is out of range ({low}–{high})")),
                Err(_) => {
                    return Err(format!(
                        "`{number}` is not a number in the {name} field `{field}`"
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The instants in `(after, until]` at which `every DAYS at TIMES` fires, in `zone`'s wall-clock
/// time: `every day at 10:00` is 10:00 local on both sides of a daylight-saving change. A time
/// that does not exist that day (clocks jump over it) fires just past the jump (see `time`).
pub fn day_fire_times(
    days: &[DayOfWeekSet],
    times: &[NaiveTime],
    zone: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::new();
    // Local dates that can hold a fire time in the range (a day either side for offsets).
    let mut date = after.with_timezone(&zone).date_naive() - Duration::days(1);
    let last = until.with_timezone(&zone).date_naive() + Duration::days(1);
    while date <= last {
        if days.iter().any(|d| day_matches(*d, date.weekday())) {
            for time in times {
                let at = crate::time::local_to_utc(zone, date.and_time(*time));
                if after < at && at <= until {
                    fires.push(at);
                }
            }
        }
        date += Duration::days(1);
    }
    fires.sort();
    fires.dedup();
    fires
}

fn day_matches(set: DayOfWeekSet, day: Weekday) -> bool {
    match set {
        DayOfWeekSet::EveryDay => true,
        DayOfWeekSet::Weekdays => !matches!(day, Weekday::Sat | Weekday::Sun),
        DayOfWeekSet::Weekend => matches!(day, Weekday::Sat | Weekday::Sun),
        DayOfWeekSet::Day(d) => d == day,
    }
}

fn lowercase_first(text: &str) -> String {
    let trimmed = text.trim_end_matches('.');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Standard weekday field (0–7, Sunday 0 or 7, names, ranges, steps) → the crate's 1–7 numbering,
/// as an explicit list so that ranges ending on Sunday (`5-7`) need no special case.
fn translate_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{step}` is not a step in `{item}`"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" | "?" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (weekday_number(a)?, weekday_number(b)?),
                None if step > 1 => (weekday_number(range)?, 6),
                None => {
                    let day = weekday_number(range)?;
                    (day, day)
                }
            },
        };
        if from > to {
            return Err(format!("the weekday range `{range}` runs backwards"));
        }
        for day in (from..=to).step_by(step as usize) {
            days[(day % 7) as usize] = true;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|d| days[*d])
        .map(|d| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

fn weekday_number(text: &str) -> Result<u32, String> {
    if let Ok(n) = text.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!(
                "weekday `{n}` is out of range: use 0–7 (0 and 7 are Sunday)"
            ))
        };
    }
    let lower = text.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| lower.starts_with(d) && lower.len() >= 3)
        .map(|p| p as u32)
        .ok_or_else(|| format!("`{text}` is not a day of the week"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    fn next(expr: &str, after: &str) -> DateTime<Utc> {
        let after = DateTime::parse_from_rfc3339(after)
            .unwrap()
            .with_timezone(&Utc);
        CronSchedule::parse(expr)
            .unwrap()
            .next_after(&after)
            .unwrap()
    }

    #[test]
    fn five_fields_with_standard_weekdays() {
        // 2026-11-21 is a Saturday; 1-5 is Monday–Friday in standard cron.
        let t = next("0 10 * * 1-5", "2026-11-21T00:00:00Z");
        assert_eq!((t.weekday(), t.hour()), (Weekday::Mon, 10));
        let sunday = next("30 9 * * 0", "2026-11-21T00:00:00Z");
        assert_eq!((sunday.weekday(), sunday.minute()), (Weekday::Sun, 30));
        let seven = next("30 9 * * 7", "2026-11-21T00:00:00Z");
        assert_eq!(seven, sunday);
        let weekend = next("0 8 * * 5-7", "2026-11-21T09:00:00Z");
        assert_eq!(weekend.weekday(), Weekday::Sun);
    }

    #[test]
    fn day_of_month_or_weekday() {
        // POSIX: the 1st of the month OR a Monday. After Sat 2026-11-21 comes Mon 23rd.
        let t = next("0 9 1 * 1", "2026-11-21T00:00:00Z");
        assert_eq!((t.day(), t.weekday()), (23, Weekday::Mon));
        let t = next("0 9 1 * 1", "2026-11-30T10:00:00Z");
        assert_eq!(t.day(), 1);
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_day_at_ten_keeps_local_time_across_daylight_saving() {
        // US clocks go forward on 2026-03-08: 10:00 New York is 15:00 UTC before, 14:00 after.
        let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        let fires = day_fire_times(
            &[DayOfWeekSet::EveryDay],
            &[ten],
            chrono_tz::America::New_York,
            utc("2026-03-06T00:00:00Z"),
            utc("2026-03-10T00:00:00Z"),
        );
        let shown: Vec<String> = fires
            .iter()
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .collect();
        assert_eq!(
            shown,
            ["03-06 15:00", "03-07 15:00", "03-08 14:00", "03-09 14:00"]
        );
    }

    #[test]
    fn range_ends_are_exclusive_then_inclusive() {
        let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap();
        let fire = |after: &str, until: &str| {
            day_fire_times(
                &[DayOfWeekSet::Day(Weekday::Mon)],
                &[ten],
                Tz::UTC,
                utc(after),
                utc(until),
            )
        };
        // Monday 2026-11-23 10:00 UTC.
        assert_eq!(
            fire("2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z").len(),
            1
        );
        assert!(fire("2026-11-23T10:00:00Z", "2026-11-30T09:59:59Z").is_empty());
        let weekdays = day_fire_times(
            &[DayOfWeekSet::Weekdays],
            &[ten],
            Tz::UTC,
            utc("2026-11-21T00:00:00Z"),
            utc("2026-11-28T00:00:00Z"),
        );
        assert_eq!(weekdays.len(), 5);
    }

    #[test]
    fn errors_are_readable() {
        assert!(CronSchedule::parse("0 10 * *")
            .unwrap_err()
            .contains("5 fields"));
        assert!(CronSchedule::parse("0 10 * * 8")
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(
            CronSchedule::parse("61 10 * * *").unwrap_err(),
            "minute `61` is out of range (0–59)"
        );
        assert_eq!(
            CronSchedule::parse("0 25 * * *").unwrap_err(),
            "hour `25` is out of range (0–23)"
        );
        assert!(CronSchedule::parse("0 23 * * *").is_ok());
        assert!(CronSchedule::parse("0 0 10 * * * 2027").is_ok());
    }
}
