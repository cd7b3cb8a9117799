//! From a fired trigger to a delivery: the due time, the message text, the channel.

use std::collections::HashSet;

use chrono::{Duration, NaiveTime, Offset};
use chrono_tz::Tz;
use serde_json::{Map, Value as Json};

use crate::ast::{RateUnit, Wait};
use crate::check::{format_number, placeholders};
use crate::eval::{to_time, Cond, Customer, Millis};

/// The due time after `wait`: `wait D` adds D; `wait until HH:MM` is the first HH:MM in `zone`
/// at or after the fire time (so a trigger at exactly 10:00 with `wait until 10:00` is due at
/// 10:00). No `wait`: due when fired.
pub fn after_wait(fired_at: Millis, wait: Option<&Wait>, zone: Tz) -> Millis {
    match wait {
        None => fired_at,
        Some(Wait::For(d)) => fired_at.saturating_add(d.seconds.saturating_mul(1000)),
        Some(Wait::Until(time)) => next_local_time(fired_at, time.value, zone),
    }
}

/// Quiet hours `from` to `to` (wall-clock, in `zone`; `from` > `to` spans midnight): a delivery
/// due inside moves to the end of the window. The window includes its start and excludes its end:
/// due exactly at `from` moves, due exactly at `to` stays.
pub fn out_of_quiet(due: Millis, from: NaiveTime, to: NaiveTime, zone: Tz) -> Millis {
    let local = to_time(due).with_timezone(&zone);
    let time = local.time();
    let spans_midnight = from > to;
    let inside = if spans_midnight {
        time >= from || time < to
    } else {
        from <= time && time < to
    };
    if !inside {
        return due;
    }
    let mut end_date = local.date_naive();
    if spans_midnight && time >= from {
        end_date += Duration::days(1);
    }
    crate::time::local_to_utc(zone, end_date.and_time(to)).timestamp_millis()
}

/// `pace N per D`: the start of the first slot at or after `due` that holds fewer than `per_slot`
/// deliveries. Slots are aligned to multiples of `length` from local midnight in `zone` (seed
/// 000: three triggers at 11:30 with `pace 1 per 1h` are due 12:00, 13:00 and 14:00).
/// `taken(slot)` says how many deliveries a slot already holds.
pub fn pace_slot(
    due: Millis,
    length: Millis,
    per_slot: u64,
    zone: Tz,
    mut taken: impl FnMut(Millis) -> u64,
) -> Millis {
    let mut slot = first_slot_at_or_after(due, length, zone);
    while taken(slot) >= per_slot {
        slot = first_slot_at_or_after(slot + 1, length, zone);
    }
    slot
}

/// The first slot start at or after `t`: local midnight plus a multiple of `length` (slots of
/// a day restart at the next local midnight; on days of 23 or 25 hours the last slot is shorter
/// or longer).
fn first_slot_at_or_after(t: Millis, length: Millis, zone: Tz) -> Millis {
    let (day_start, next_day) = local_day(t, zone);
    let length = length.max(1);
    let slots = (t - day_start + length - 1).div_euclid(length);
    let slot = day_start + slots * length;
    if slot < next_day {
        slot
    } else {
        next_day
    }
}

/// The local day in `zone` holding `t`: its midnight and the next midnight.
fn local_day(t: Millis, zone: Tz) -> (Millis, Millis) {
    let date = to_time(t).with_timezone(&zone).date_naive();
    let midnight = |date: chrono::NaiveDate| {
        crate::time::local_to_utc(zone, date.and_time(NaiveTime::MIN)).timestamp_millis()
    };
    (midnight(date), midnight(date + Duration::days(1)))
}

/// `rate N per UNIT`: the calendar second, minute, hour or day (local, in `zone`) holding `t`,
/// as its start and the start of the next one.
pub fn calendar_bucket(t: Millis, unit: RateUnit, zone: Tz) -> (Millis, Millis) {
    if unit == RateUnit::Day {
        return local_day(t, zone);
    }
    // Zones whose offset is not a whole number of hours (India, Nepal…) start their local hours
    // off the UTC hour.
    let offset = to_time(t)
        .with_timezone(&zone)
        .offset()
        .fix()
        .local_minus_utc();
    let length = unit.seconds() * 1000;
    let start = t - (t + i64::from(offset) * 1000).rem_euclid(length);
    (start, start + length)
}

/// Where a customer falls in a campaign's `split`, in [0, 100). XXH3-64 is a published
/// algorithm, so the point — and the variant — is the same on every run, machine and Rust
/// release (`std`'s `DefaultHasher` promises none of that).
pub fn split_point(campaign: &str, customer: &str) -> f64 {
    let mut key = Vec::with_capacity(campaign.len() + 1 + customer.len());
    key.extend_from_slice(campaign.as_bytes());
    key.push(0); // so that ("ab", "c") and ("a", "bc") differ
    key.extend_from_slice(customer.as_bytes());
    let hash = xxhash_rust::xxh3::xxh3_64(&key);
    // The top 53 bits, as an f64 in [0, 1) without rounding.
    (hash >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

/// The first instant at or after `from` whose wall-clock time in `zone` is `time`.
pub fn next_local_time(from: Millis, time: NaiveTime, zone: Tz) -> Millis {
    let mut date = to_time(from).with_timezone(&zone).date_naive();
    loop {
        let candidate = crate::time::local_to_utc(zone, date.and_time(time)).timestamp_millis();
        if candidate >= from {
            return candidate;
        }
        date += Duration::days(1);
    }
}

/// Fills `{{customer.x}}` and `{{event.x}}`. Numbers print as people write them (`150`, not
/// `150.0`); a missing value prints as nothing.
pub fn render(template: &str, customer: &Customer, event: Option<&Map<String, Json>>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest_from = 0;
    for placeholder in placeholders(template) {
        let Ok((path, range)) = placeholder else {
            break;
        };
        out.push_str(&template[rest_from..range.start]);
        rest_from = range.end;
        let value = match path.split_once('.') {
            Some(("customer", "id")) => Some(Json::String(customer.id.clone())),
            Some(("customer", name)) => customer.attributes.get(name).cloned(),
            Some(("event", name)) => event.and_then(|e| e.get(name)).cloned(),
            _ => None,
        };
        out.push_str(&display(value.as_ref()));
    }
    out.push_str(&template[rest_from..]);
    out
}

/// Adds the customer attributes [`render`] reads from `template` to `names`.
pub fn template_attributes(template: &str, names: &mut HashSet<String>) {
    for (path, _) in placeholders(template).into_iter().map_while(Result::ok) {
        match path.split_once('.') {
            Some(("customer", "id")) => {}
            Some(("customer", name)) => {
                names.insert(name.to_owned());
            }
            _ => {}
        }
    }
}

/// A stored value as a person would write it in a message.
pub fn display(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.as_f64().map_or_else(|| n.to_string(), format_number),
        Some(Json::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
    }
}

/// One channel a delivery may go out on, in the order `send`, `fallback`, `fallback`, ….
pub struct ChannelOption<'a> {
    pub name: &'a str,
    /// The customer attribute holding the address; `None` for tasks.
    pub address: Option<&'a str>,
    pub reachable: Option<&'a Cond>,
}

/// The first option whose address is set and whose reachability holds at `due`: its index and
/// address. `Err` says why none could be used.
pub fn choose_channel(
    options: &[ChannelOption<'_>],
    customer: &Customer,
    due: Millis,
) -> Result<(usize, Option<String>), String> {
    let mut reasons = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let address = match option.address {
            None => None,
            Some(attribute) => match customer.attributes.get(attribute).map(|v| display(Some(v))) {
                Some(address) if !address.is_empty() => Some(address),
                _ => {
                    reasons.push(format!("{}: no {attribute}", option.name));
                    continue;
                }
            },
        };
        if option.reachable.is_some_and(|r| !r.eval(customer, due)) {
            reasons.push(format!("{}: not reachable", option.name));
            continue;
        }
        return Ok((i, address));
    }
    Err(reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{Span, Spanned};
    use chrono::DateTime;

    fn ms(text: &str) -> Millis {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn until(h: u32, m: u32) -> Wait {
        Wait::Until(Spanned {
            value: NaiveTime::from_hms_opt(h, m, 0).unwrap(),
            span: Span::default(),
        })
    }

    #[test]
    fn wait_until_is_inclusive_and_local() {
        let shanghai = chrono_tz::Asia::Shanghai;
        // 10:00 Shanghai = 02:00 UTC.
        assert_eq!(
            after_wait(ms("2026-03-01T02:00:00Z"), Some(&until(10, 0)), shanghai),
            ms("2026-03-01T02:00:00Z")
        );
        assert_eq!(
            after_wait(ms("2026-03-01T02:00:01Z"), Some(&until(10, 0)), shanghai),
            ms("2026-03-02T02:00:00Z")
        );
        assert_eq!(
            after_wait(ms("2026-03-01T01:00:00Z"), Some(&until(10, 0)), shanghai),
            ms("2026-03-01T02:00:00Z")
        );
    }

    #[test]
    fn wait_until_across_daylight_saving() {
        // New York springs forward on 2026-03-08: 10:00 local is 15:00 UTC before, 14:00 after.
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            after_wait(ms("2026-03-07T16:00:00Z"), Some(&until(10, 0)), ny),
            ms("2026-03-08T14:00:00Z")
        );
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn quiet_hours_spanning_midnight() {
        let shanghai = chrono_tz::Asia::Shanghai;
        let quiet = |due: &str| out_of_quiet(ms(due), hm(22, 0), hm(8, 0), shanghai);
        // 23:00 Shanghai (15:00 UTC) → 08:00 next day (00:00 UTC).
        assert_eq!(quiet("2026-03-01T15:00:00Z"), ms("2026-03-02T00:00:00Z"));
        // 07:59 → 08:00 the same day; 08:00 itself is outside; 22:00 itself is inside.
        assert_eq!(quiet("2026-03-01T23:59:00Z"), ms("2026-03-02T00:00:00Z"));
        assert_eq!(quiet("2026-03-02T00:00:00Z"), ms("2026-03-02T00:00:00Z"));
        assert_eq!(quiet("2026-03-01T14:00:00Z"), ms("2026-03-02T00:00:00Z"));
        assert_eq!(quiet("2026-03-01T13:59:59Z"), ms("2026-03-01T13:59:59Z"));
        // The same instant is quiet in one zone and not in another.
        let berlin = out_of_quiet(
            ms("2026-03-01T15:00:00Z"),
            hm(22, 0),
            hm(8, 0),
            chrono_tz::Europe::Berlin,
        );
        assert_eq!(berlin, ms("2026-03-01T15:00:00Z"));
    }

    #[test]
    fn quiet_hours_within_a_day_and_across_daylight_saving() {
        let utc = Tz::UTC;
        assert_eq!(
            out_of_quiet(ms("2026-03-01T13:00:00Z"), hm(12, 0), hm(14, 0), utc),
            ms("2026-03-01T14:00:00Z")
        );
        assert_eq!(
            out_of_quiet(ms("2026-03-01T14:00:00Z"), hm(12, 0), hm(14, 0), utc),
            ms("2026-03-01T14:00:00Z")
        );
        // New York springs forward on the night of 2026-03-07/08: 08:00 EDT is 12:00 UTC (a 23-hour day).
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            out_of_quiet(ms("2026-03-08T04:00:00Z"), hm(22, 0), hm(8, 0), ny),
            ms("2026-03-08T12:00:00Z")
        );
        // It falls back on 2026-11-01 (a 25-hour day): 08:00 EST is 13:00 UTC.
        assert_eq!(
            out_of_quiet(ms("2026-11-01T05:00:00Z"), hm(22, 0), hm(8, 0), ny),
            ms("2026-11-01T13:00:00Z")
        );
    }

    #[test]
    fn pace_takes_the_first_free_slot_at_or_after_due() {
        let shanghai = chrono_tz::Asia::Shanghai;
        let hour = 3_600_000;
        // Seed 000: three triggers at 11:30 (03:30 UTC) with `pace 1 per 1h`.
        let mut taken: Vec<Millis> = Vec::new();
        for _ in 0..3 {
            let slot = pace_slot(ms("2026-03-01T03:30:00Z"), hour, 1, shanghai, |s| {
                taken.iter().filter(|t| **t == s).count() as u64
            });
            taken.push(slot);
        }
        assert_eq!(
            taken,
            [
                ms("2026-03-01T04:00:00Z"),
                ms("2026-03-01T05:00:00Z"),
                ms("2026-03-01T06:00:00Z")
            ]
        );
        // A due time on a slot boundary takes that slot.
        assert_eq!(
            pace_slot(ms("2026-03-01T04:00:00Z"), hour, 1, shanghai, |_| 0),
            ms("2026-03-01T04:00:00Z")
        );
        // Two per slot.
        assert_eq!(
            pace_slot(
                ms("2026-03-01T03:30:00Z"),
                hour,
                2,
                shanghai,
                |s| u64::from(s == ms("2026-03-01T04:00:00Z"))
            ),
            ms("2026-03-01T04:00:00Z")
        );
        // 5-hour slots from local midnight: 00, 05, 10, 15, 20, then the next midnight.
        let five = 5 * hour;
        assert_eq!(
            pace_slot(ms("2026-03-01T12:30:00Z"), five, 1, shanghai, |_| 0),
            ms("2026-03-01T16:00:00Z")
        );
    }

    #[test]
    fn templates_render_like_people_write() {
        let customer = Customer {
            id: "c1".into(),
            attributes: serde_json::json!({"name": "李雷", "balance": 150.0, "rate": 3.5})
                .as_object()
                .unwrap()
                .clone(),
            ..Customer::default()
        };
        let event = serde_json::json!({"amount": 120, "sku": "A1"});
        let text = render(
            "{{customer.name}} {{ customer.balance }} {{customer.rate}} {{event.amount}} {{event.sku}} {{customer.id}} {{customer.missing}}!",
            &customer,
            event.as_object(),
        );
        assert_eq!(text, "李雷 150 3.5 120 A1 c1 !");
    }

    #[test]
    fn first_reachable_channel_wins() {
        let customer = Customer {
            id: "c1".into(),
            attributes: serde_json::json!({"email": "a@b.c", "phone": ""})
                .as_object()
                .unwrap()
                .clone(),
            ..Customer::default()
        };
        let never = Cond::Const(false);
        let options = [
            ChannelOption {
                name: "wechat",
                address: Some("wecom_id"),
                reachable: None,
            },
            ChannelOption {
                name: "sms",
                address: Some("phone"),
                reachable: None,
            },
            ChannelOption {
                name: "email",
                address: Some("email"),
                reachable: Some(&never),
            },
        ];
        assert_eq!(
            choose_channel(&options, &customer, 0).unwrap_err(),
            "wechat: no wecom_id; sms: no phone; email: not reachable"
        );
        let always = Cond::Const(true);
        let options = [ChannelOption {
            name: "email",
            address: Some("email"),
            reachable: Some(&always),
        }];
        assert_eq!(
            choose_channel(&options, &customer, 0).unwrap(),
            (0, Some("a@b.c".to_string()))
        );
    }
}

#[cfg(test)]
mod split_tests {
    use super::split_point;

    #[test]
    fn split_points_are_pinned() {
        // XXH3-64 of e.g. "春节促销\0c1": any change to the hash or to how the key is built moves
        // customers between variants, which must never happen silently.
        let pinned = [
            (("春节促销", "c1"), 5.847828160815272),
            (("春节促销", "c2"), 86.92579100430818),
            (("A/B", "c1"), 81.03149688489975),
        ];
        for ((campaign, customer), point) in pinned {
            assert_eq!(
                split_point(campaign, customer),
                point,
                "{campaign} {customer}"
            );
        }
    }

    #[test]
    fn split_shares_hold_within_statistical_bounds() {
        // 45 / 45 / 10 over 20,000 customers: each share within 4 standard deviations.
        let n = 20_000;
        let mut counts = [0u32; 3];
        for i in 0..n {
            let point = split_point("春节促销 A/B", &format!("c{i}"));
            assert!((0.0..100.0).contains(&point));
            counts[if point < 45.0 {
                0
            } else if point < 90.0 {
                1
            } else {
                2
            }] += 1;
        }
        for (count, share) in counts.iter().zip([0.45, 0.45, 0.10]) {
            let expected = n as f64 * share;
            let sd = (n as f64 * share * (1.0 - share)).sqrt();
            assert!(
                (f64::from(*count) - expected).abs() < 4.0 * sd,
                "{counts:?} against {share}"
            );
        }
    }
}
