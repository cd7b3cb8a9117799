//! Local wall-clock times → instants, with daylight-saving rules made explicit.
//!
//! - A local time that happens twice (clocks go back) means the first of the two.
//! - A local time that never happens (clocks go forward) means the same wall-clock distance past
//!   the gap: 02:30 on a day that jumps from 02:00 to 03:00 is 03:30.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Inside a gap: the offset before the gap applies, which lands past it.
            let before = local - Duration::hours(3);
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => *t.offset(),
                LocalResult::None => return Utc.from_utc_datetime(&local),
            };
            let utc = local - Duration::seconds(i64::from(offset_seconds(&offset)));
            Utc.from_utc_datetime(&utc)
        }
    }
}

fn offset_seconds(offset: &<Tz as TimeZone>::Offset) -> i32 {
    use chrono::Offset;
    offset.fix().local_minus_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn ordinary_times() {
        let t = local_to_utc(chrono_tz::Asia::Shanghai, local("2026-03-01 09:00"));
        assert_eq!(t.to_rfc3339(), "2026-03-01T01:00:00+00:00");
    }

    #[test]
    fn spring_forward_gap_moves_past_it() {
        // New York jumps from 02:00 to 03:00 on 2026-03-08.
        let t = local_to_utc(chrono_tz::America::New_York, local("2026-03-08 02:30"));
        assert_eq!(t.to_rfc3339(), "2026-03-08T07:30:00+00:00");
        assert_eq!(
            t.with_timezone(&chrono_tz::America::New_York)
                .format("%H:%M")
                .to_string(),
            "03:30"
        );
    }

    #[test]
    fn fall_back_takes_the_first() {
        // 01:30 happens twice in New York on 2026-11-01; the first is EDT (UTC−4).
        let t = local_to_utc(chrono_tz::America::New_York, local("2026-11-01 01:30"));
        assert_eq!(t.to_rfc3339(), "2026-11-01T05:30:00+00:00");
        let _ = NaiveDate::from_ymd_opt(2026, 1, 1);
    }
}
