//! When a campaign fires: its trigger compiled into a plan, and the occurrences a plan yields in
//! a run's range of time (LANGUAGE.md §7).
//!
//! Every occurrence has a key that identifies it across runs (`at`, `every:<ms>`, `event:<id>`),
//! so that the store can refuse to record one occurrence for one customer twice.

use std::collections::HashSet;

use chrono::NaiveTime;
use chrono_tz::Tz;

use crate::ast::{DayOfWeekSet, OccurrenceMode, Schedule, TagChange, TriggerKind};
use crate::check::instant;
use crate::estimate::attributes_read;
use crate::eval::{to_time, Compiler, Cond, Customer, Event, Millis};
use crate::schedule::{day_fire_times, CronSchedule};

pub enum TriggerPlan {
    /// Once, to the whole audience.
    At(Millis),
    /// Recurring, to the whole audience (each customer within `for_after`, if given).
    Days {
        days: Vec<DayOfWeekSet>,
        times: Vec<NaiveTime>,
        zone: Tz,
        for_after: Option<ForAfter>,
    },
    Cron {
        schedule: CronSchedule,
        zone: Tz,
        for_after: Option<ForAfter>,
    },
    /// Per customer, from their events.
    Event(EventTrigger),
}

impl TriggerPlan {
    /// Whether deciding when it fires for a customer may read the customer's attributes: a
    /// schedule's `for … after customer.x`, or an event filter that tests one.
    pub fn reads_attributes(&self) -> bool {
        let mut names = HashSet::new();
        self.attributes_read(&mut names);
        !names.is_empty()
    }

    /// Adds the customer attributes deciding when it fires may read to `names`.
    pub fn attributes_read(&self, names: &mut HashSet<String>) {
        match self {
            TriggerPlan::At(_) => {}
            TriggerPlan::Days { for_after, .. } | TriggerPlan::Cron { for_after, .. } => {
                names.extend(for_after.iter().map(|window| window.attribute.clone()));
            }
            TriggerPlan::Event(trigger) => {
                let unless = trigger.unless.as_ref().and_then(|u| u.filter.as_ref());
                for filter in trigger.filter.iter().chain(unless) {
                    attributes_read(filter, names);
                }
            }
        }
    }
}

/// `for D after customer.x`: fire for a customer only at instants in [x, x + D].
pub struct ForAfter {
    pub length: Millis,
    pub attribute: String,
}

pub struct EventTrigger {
    pub event: String,
    pub filter: Option<Cond>,
    pub occurrence: Option<(OccurrenceMode, u64)>,
    pub unless: Option<UnlessPlan>,
}

pub struct UnlessPlan {
    pub event: String,
    pub filter: Option<Cond>,
    pub within: Millis,
}

/// One firing of a trigger for one customer.
#[derive(Clone, Debug, PartialEq)]
pub struct Occurrence {
    pub key: String,
    pub fired_at: Millis,
    /// Index into the customer's events of the event that fired it, for `{{event.x}}`.
    pub event: Option<usize>,
}

impl Occurrence {
    /// A scheduled fire time (`at`, `every`): the same key for every customer.
    pub fn scheduled(at: Millis) -> Occurrence {
        Occurrence {
            key: format!("at:{at}"),
            fired_at: at,
            event: None,
        }
    }
}

impl TriggerPlan {
    /// Compiles a trigger; `zone` is the campaign's time zone.
    pub fn new(kind: &TriggerKind, compiler: &Compiler<'_>, zone: Tz) -> TriggerPlan {
        let for_after = |f: &Option<crate::ast::ForAfter>| {
            f.as_ref().map(|f| ForAfter {
                length: f.duration.seconds.saturating_mul(1000),
                attribute: f.attr.name.name.clone(),
            })
        };
        match kind {
            TriggerKind::At(t) => TriggerPlan::At(instant(&t.value, zone).timestamp_millis()),
            TriggerKind::Every {
                schedule: Schedule::Days { days, times },
                for_after: f,
            } => TriggerPlan::Days {
                days: days.iter().map(|d| d.value).collect(),
                times: times.iter().map(|t| t.value).collect(),
                zone,
                for_after: for_after(f),
            },
            TriggerKind::Every {
                schedule: Schedule::Cron(text),
                for_after: f,
            } => TriggerPlan::Cron {
                // The checker has refused invalid schedules before a run.
                schedule: CronSchedule::parse(&text.value).expect("checked cron schedule"),
                zone,
                for_after: for_after(f),
            },
            TriggerKind::On {
                event,
                filter,
                occurrence,
                unless,
            } => TriggerPlan::Event(EventTrigger {
                event: event.name.clone(),
                filter: filter
                    .as_ref()
                    .map(|f| compiler.compile(f, Some(&event.name))),
                occurrence: occurrence.map(|o| (o.mode, o.n.value)),
                unless: unless.as_ref().map(|u| UnlessPlan {
                    event: u.event.name.clone(),
                    filter: u
                        .filter
                        .as_ref()
                        .map(|f| compiler.compile(f, Some(&u.event.name))),
                    within: u.within.seconds.saturating_mul(1000),
                }),
            }),
            TriggerKind::Tag { change, tag } => TriggerPlan::Event(EventTrigger {
                event: match change {
                    TagChange::Added => "tag_added",
                    TagChange::Removed => "tag_removed",
                }
                .to_string(),
                filter: Some(Cond::Test {
                    source: crate::eval::Source::Property("tag".into()),
                    ty: crate::ast::Type::Text,
                    test: crate::eval::TestCond::Compare(
                        crate::ast::CmpOp::Eq,
                        crate::eval::Scalar::Text(tag.value.clone().into()),
                    ),
                }),
                occurrence: None,
                unless: None,
            }),
        }
    }

    /// The campaign-wide fire times in `(after, until]`; empty for event triggers.
    pub fn schedule_times(&self, after: Millis, until: Millis) -> Vec<Millis> {
        match self {
            TriggerPlan::At(t) => (after < *t && *t <= until)
                .then_some(*t)
                .into_iter()
                .collect(),
            TriggerPlan::Days {
                days, times, zone, ..
            } => day_fire_times(days, times, *zone, to_time(after), to_time(until))
                .into_iter()
                .map(|t| t.timestamp_millis())
                .collect(),
            TriggerPlan::Cron { schedule, zone, .. } => {
                let mut fires = Vec::new();
                let mut from = to_time(after).with_timezone(zone);
                while let Some(next) = schedule.next_after(&from) {
                    if next.timestamp_millis() > until {
                        break;
                    }
                    fires.push(next.timestamp_millis());
                    from = next;
                }
                fires
            }
            TriggerPlan::Event(_) => Vec::new(),
        }
    }

    /// Whether a scheduled fire time applies to this customer (`for D after customer.x`).
    pub fn applies_to(&self, customer: &Customer, fired_at: Millis) -> bool {
        let for_after = match self {
            TriggerPlan::Days { for_after, .. } | TriggerPlan::Cron { for_after, .. } => for_after,
            _ => return true,
        };
        let Some(window) = for_after else { return true };
        let start = customer
            .attributes
            .get(&window.attribute)
            .and_then(|v| v.as_str())
            .and_then(crate::eval::parse_time);
        start.is_some_and(|x| x <= fired_at && fired_at <= x.saturating_add(window.length))
    }

    /// A customer's occurrences of any trigger firing in `(after, until]`: the scheduled fire
    /// times that apply to them, or their event occurrences (counted from `begin`). A run
    /// computes schedules once for all customers instead; this is for one customer.
    pub fn occurrences(
        &self,
        customer: &Customer,
        begin: Millis,
        after: Millis,
        until: Millis,
    ) -> Vec<Occurrence> {
        let times = self.schedule_times(after, until);
        self.occurrences_among(customer, begin, after, until, &times)
    }

    /// `occurrences`, given the schedule's fire times in `(after, until]` (which a run computes
    /// once for all customers).
    pub fn occurrences_among(
        &self,
        customer: &Customer,
        begin: Millis,
        after: Millis,
        until: Millis,
        times: &[Millis],
    ) -> Vec<Occurrence> {
        if let TriggerPlan::Event(_) = self {
            return self.event_occurrences(customer, begin, after, until);
        }
        times
            .iter()
            .copied()
            .filter(|t| self.applies_to(customer, *t))
            .map(Occurrence::scheduled)
            .collect()
    }

    /// A customer's occurrences of an event trigger firing in `(after, until]`. Trigger events
    /// count from `begin` (the campaign's start) on.
    pub fn event_occurrences(
        &self,
        customer: &Customer,
        begin: Millis,
        after: Millis,
        until: Millis,
    ) -> Vec<Occurrence> {
        let TriggerPlan::Event(trigger) = self else {
            return Vec::new();
        };
        let mut count = 0u64;
        let mut occurrences = Vec::new();
        for (index, event) in customer.events.iter().enumerate() {
            if event.at < begin
                || !trigger.matches(&trigger.event, &trigger.filter, customer, event)
            {
                continue;
            }
            count += 1;
            let counted = match trigger.occurrence {
                None => true,
                Some((OccurrenceMode::After, n)) => count == n,
                Some((OccurrenceMode::Every, n)) => n > 0 && count.is_multiple_of(n),
            };
            if !counted {
                continue;
            }
            let fired_at = match &trigger.unless {
                None => event.at,
                Some(unless) => {
                    let deadline = event.at.saturating_add(unless.within);
                    if trigger.cancelled(unless, customer, event.at, deadline) {
                        continue;
                    }
                    deadline
                }
            };
            if after < fired_at && fired_at <= until {
                occurrences.push(Occurrence {
                    key: format!("event:{}", event.id),
                    fired_at,
                    event: Some(index),
                });
            }
        }
        occurrences
    }
}

impl EventTrigger {
    /// The end of the earliest `unless` window still open at `now` for one of the customer's
    /// trigger events (from `begin` on): an occurrence a later run must decide even if the
    /// customer has no new event by then. May be early (the occurrence count is not looked
    /// at), never late.
    pub fn next_pending(&self, customer: &Customer, begin: Millis, now: Millis) -> Option<Millis> {
        let unless = self.unless.as_ref()?;
        let events = &customer.events;
        let open_from = begin.max(now.saturating_sub(unless.within).saturating_add(1));
        events[events.partition_point(|e| e.at < open_from)..]
            .iter()
            .take_while(|e| e.at <= now)
            .find(|e| self.matches(&self.event, &self.filter, customer, e))
            .map(|e| e.at.saturating_add(unless.within))
    }

    /// What the store's recorded checks of open `unless` windows depend on: when it changes,
    /// a run looks back over the window instead (see `run`).
    pub fn unless_signature(&self) -> Option<String> {
        let unless = self.unless.as_ref()?;
        let text = format!("{}\u{0}{:?}\u{0}{}", self.event, self.filter, unless.within);
        Some(format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(text.as_bytes())
        ))
    }

    fn matches(
        &self,
        name: &str,
        filter: &Option<Cond>,
        customer: &Customer,
        event: &Event,
    ) -> bool {
        *event.name == *name
            && filter
                .as_ref()
                .is_none_or(|f| f.matches_event(customer, event))
    }

    /// `unless B within W` after A at t: cancelled by any B at u with t < u ≤ t + W.
    fn cancelled(
        &self,
        unless: &UnlessPlan,
        customer: &Customer,
        t: Millis,
        deadline: Millis,
    ) -> bool {
        let events = &customer.events;
        let start = events.partition_point(|e| e.at <= t);
        events[start..]
            .iter()
            .take_while(|e| e.at <= deadline)
            .any(|e| self.matches(&unless.event, &unless.filter, customer, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, name: &str, at: Millis) -> Event {
        Event {
            id,
            name: name.into(),
            at,
            properties: Default::default(),
        }
    }

    fn on(
        event: &str,
        occurrence: Option<(OccurrenceMode, u64)>,
        unless: Option<(&str, Millis)>,
    ) -> TriggerPlan {
        TriggerPlan::Event(EventTrigger {
            event: event.into(),
            filter: None,
            occurrence,
            unless: unless.map(|(e, w)| UnlessPlan {
                event: e.into(),
                filter: None,
                within: w,
            }),
        })
    }

    fn fired(plan: &TriggerPlan, events: Vec<Event>, after: Millis, until: Millis) -> Vec<Millis> {
        let customer = Customer {
            events,
            ..Customer::default()
        };
        plan.event_occurrences(&customer, 0, after, until)
            .into_iter()
            .map(|o| o.fired_at)
            .collect()
    }

    #[test]
    fn unless_b_exactly_at_a_plus_w_cancels() {
        let plan = on("view", None, Some(("share", 1200)));
        let a = event(1, "view", 1000);
        assert_eq!(
            fired(&plan, vec![a.clone(), event(2, "share", 2200)], 0, 10_000),
            Vec::<Millis>::new()
        );
        assert_eq!(
            fired(&plan, vec![a.clone(), event(2, "share", 2201)], 0, 10_000),
            vec![2200]
        );
        // A B at the same instant as A does not cancel (t < u).
        assert_eq!(
            fired(&plan, vec![a.clone(), event(2, "share", 1000)], 0, 10_000),
            vec![2200]
        );
        // Decided, and fired, at A + W: not before.
        assert_eq!(fired(&plan, vec![a], 0, 2199), Vec::<Millis>::new());
    }

    #[test]
    fn after_and_every_n_times() {
        let events: Vec<Event> = (1..=7).map(|i| event(i, "collect", i * 10)).collect();
        let after = on("collect", Some((OccurrenceMode::After, 3)), None);
        assert_eq!(fired(&after, events.clone(), 0, 1000), vec![30]);
        let every = on("collect", Some((OccurrenceMode::Every, 3)), None);
        assert_eq!(fired(&every, events.clone(), 0, 1000), vec![30, 60]);
        // Counting starts at the campaign's beginning, not with the run's range.
        assert_eq!(fired(&every, events, 30, 1000), vec![60]);
    }

    #[test]
    fn range_is_exclusive_then_inclusive() {
        let plan = on("buy", None, None);
        let events = vec![event(1, "buy", 100), event(2, "buy", 200)];
        assert_eq!(fired(&plan, events, 100, 200), vec![200]);
        assert_eq!(TriggerPlan::At(100).schedule_times(99, 100), vec![100]);
        assert!(TriggerPlan::At(100).schedule_times(100, 200).is_empty());
    }
}
