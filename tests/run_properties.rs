//! The interpreter's guarantees, tested on generated timelines:
//! - runs at T1 then T2 emit exactly what one run at T2 emits (for campaigns with a `start`),
//!   with every delivery policy in play: quiet hours in the customers' own zones, pace, rate,
//!   campaign and policy caps, end, split. (Rule tags are left out on purpose: they are sampled
//!   at each run's `now`, so when runs happen is part of what they mean.)
//! - a run that fails part-way leaves the store exactly as before, and re-running completes it.

use chrono::{DateTime, Duration, Utc};
use nudge::check::CheckOptions;
use nudge::project::{self, Sources};
use nudge::run::{run, Emitted, RunOptions};
use nudge::store::{NewEvent, Store};
use proptest::prelude::*;

const RULES: &str = r#"
customer { name: text  phone: text?  email: text?  registered_at: time  timezone: zone? }
event view { page: text }
event share
event buy { amount: number }
policy { cap 4 per customer per 1d }
campaign "view-unless-share" {
  start    2026-03-01 00:00
  audience true
  trigger  on view where page == "/pricing" unless share within 20m
  wait     15m
  quiet    22:00 to 08:00
  pace     1 per 2h
  cap      2 per customer per 12h
  rate     2 per hour
  send     sms "分享有礼 {{customer.name}}"
  fallback email subject "分享有礼" body "{{customer.name}}"
}
campaign "third-buy" {
  start    2026-03-01 00:00
  end      2026-03-03 12:00
  audience did buy where amount > 10 at least 1 time within last 1d
  trigger  on buy after 3 times
  wait     until 09:30
  send     sms "第三单 {{event.amount}}"
  add tag  "loyal"
}
campaign "loyal" {
  start    2026-03-01 00:00
  audience true
  trigger  on tag added "loyal"
  send     email subject "忠实顾客" body "谢谢"
}
campaign "daily" {
  timezone "Asia/Shanghai"
  start    2026-03-01 00:00
  audience did not share within last 12h
  trigger  every day at 10:00, 20:00 for 2d after customer.registered_at
  rate     3 per hour
  split {
    50% "A": send sms "每日一问"
    30% "B": send sms "每日一答"
    20% control
  }
}
campaign "once" {
  start    2026-03-01 00:00
  audience did view at least 2 times
  trigger  at 2026-03-02 12:00
  send     sms "限时特惠"
}
"#;

fn start() -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn project() -> nudge::Project {
    project_of(RULES)
}

/// RULES without its schedule: every run then reads only the customers with new events or a
/// due check (an `unless` window closing), not everyone.
fn events_only_project() -> nudge::Project {
    let (events_only, _) = RULES
        .split_once("campaign \"daily\"")
        .expect("RULES has a daily campaign");
    project_of(events_only)
}

fn project_of(rules: &str) -> nudge::Project {
    let mut sources = Sources::default();
    sources.add("rules.nudge", rules);
    let project = project::analyze(sources, &CheckOptions { now: start() });
    assert_eq!(project.errors(), 0, "{:#?}", project.diagnostics);
    project
}

#[derive(Clone, Debug)]
struct Timeline {
    /// (has phone, has email, registered minutes after start, time zone)
    customers: Vec<(bool, bool, i64, Option<&'static str>)>,
    /// (customer index, event kind, minutes after start, amount)
    events: Vec<(usize, usize, i64, u32)>,
}

fn timeline() -> impl Strategy<Value = Timeline> {
    let zone = prop::sample::select(vec![None, Some("America/New_York"), Some("Asia/Shanghai")]);
    let customers =
        prop::collection::vec((any::<bool>(), any::<bool>(), 0i64..3 * 1440, zone), 1..6);
    customers.prop_flat_map(|customers| {
        let n = customers.len();
        let events = prop::collection::vec((0..n, 0usize..4, 0i64..4 * 1440, 0u32..30), 0..30);
        events.prop_map(move |events| Timeline {
            customers: customers.clone(),
            events,
        })
    })
}

fn fill(store: &mut Store, timeline: &Timeline) {
    store
        .transaction(|tx| -> Result<(), nudge::store::StoreError> {
            for (i, (phone, email, registered, zone)) in timeline.customers.iter().enumerate() {
                let mut attributes = serde_json::json!({
                    "name": format!("客户{i}"),
                    "registered_at": (start() + Duration::minutes(*registered)).to_rfc3339(),
                });
                if *phone {
                    attributes["phone"] = format!("1380000000{i}").into();
                }
                if *email {
                    attributes["email"] = format!("c{i}@example.com").into();
                }
                if let Some(zone) = zone {
                    attributes["timezone"] = (*zone).into();
                }
                tx.upsert_customer(&format!("c{i}"), attributes.as_object().unwrap())?;
            }
            let mut events = timeline.events.clone();
            events.sort_by_key(|e| e.2);
            for (customer, kind, minute, amount) in events {
                let (name, properties) = match kind {
                    0 => ("view", serde_json::json!({"page": "/pricing"})),
                    1 => ("view", serde_json::json!({"page": "/home"})),
                    2 => ("share", serde_json::json!({})),
                    _ => ("buy", serde_json::json!({"amount": amount})),
                };
                tx.add_event(&NewEvent {
                    customer: &format!("c{customer}"),
                    name,
                    at: start()
                        + Duration::minutes(minute)
                        + Duration::milliseconds(customer as i64),
                    properties: &properties.to_string(),
                })?;
            }
            Ok(())
        })
        .unwrap();
}

fn run_at(project: &nudge::Project, store: &mut Store, now: DateTime<Utc>) -> Vec<Emitted> {
    run(
        project,
        store,
        &RunOptions {
            now,
            dry_run: false,
        },
    )
    .unwrap()
}

fn sorted(mut emitted: Vec<Emitted>) -> Vec<String> {
    let mut lines: Vec<String> = emitted
        .drain(..)
        .map(|e| serde_json::to_string(&e).unwrap())
        .collect();
    lines.sort();
    lines
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn split_runs_emit_what_one_run_emits(
        timeline in timeline(),
        cuts in prop::collection::vec(0i64..5 * 1440, 0..6),
        schedules in any::<bool>(),
    ) {
        let project = if schedules { project() } else { events_only_project() };
        let end = start() + Duration::days(5);

        let mut once = Store::open_in_memory().unwrap();
        fill(&mut once, &timeline);
        let expected = sorted(run_at(&project, &mut once, end));

        // The split runs use a store file, whose targeted runs read customers on a second
        // thread; the single run's store is in memory and reads them in turn: both must agree.
        let dir = tempfile::tempdir().unwrap();
        let mut split = Store::open(dir.path().join("split.db")).unwrap();
        fill(&mut split, &timeline);
        let mut cuts = cuts;
        cuts.sort();
        let mut got = Vec::new();
        for minute in cuts {
            got.extend(run_at(&project, &mut split, start() + Duration::minutes(minute)));
        }
        got.extend(run_at(&project, &mut split, end));
        prop_assert_eq!(sorted(got), expected);
        // The same `now` again emits nothing new.
        prop_assert!(run_at(&project, &mut split, end).is_empty());
    }
}

fn counts(store: &mut Store) -> (i64, i64, i64, i64) {
    store
        .scratch(|tx| -> Result<_, nudge::store::StoreError> {
            let count = |table: &str| -> i64 {
                tx.connection()
                    .unwrap()
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap()
            };
            Ok((
                count("deliveries"),
                count("runs"),
                count("campaign_progress"),
                count("tags"),
            ))
        })
        .unwrap()
}

/// Runs at `now` with one customer's deliveries poisoned (`c2`): the run fails after others
/// were recorded. Checks that the store, opened again, is as it was, and returns it cured.
fn fails_part_way(
    project: &nudge::Project,
    mut store: Store,
    path: &std::path::Path,
    now: DateTime<Utc>,
) -> Store {
    store
        .transaction(|tx| -> Result<(), nudge::store::StoreError> {
            tx.connection()?.execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.customer = 'c2'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )?;
            Ok(())
        })
        .unwrap();
    let before = counts(&mut store);
    let failed = run(
        project,
        &mut store,
        &RunOptions {
            now,
            dry_run: false,
        },
    );
    assert!(failed.is_err());
    drop(store);
    let mut store = Store::open(path).unwrap();
    assert_eq!(
        counts(&mut store),
        before,
        "a failed run must leave the store as it was"
    );
    store
        .transaction(|tx| -> Result<(), nudge::store::StoreError> {
            tx.connection()?.execute_batch("DROP TRIGGER poison")?;
            Ok(())
        })
        .unwrap();
    store
}

#[test]
fn a_run_that_fails_part_way_changes_nothing() {
    let project = project();
    let timeline = Timeline {
        customers: (0..4).map(|_| (true, true, 0, None)).collect(),
        events: (0..4)
            .flat_map(|c| {
                [
                    (c, 0, 60, 0),
                    (c, 3, 70, 20),
                    (c, 3, 80, 20),
                    (c, 3, 90, 20),
                ]
            })
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&path).unwrap();
    fill(&mut store, &timeline);
    let now = start() + Duration::days(2);
    let mut store = fails_part_way(&project, store, &path, now);
    let emitted = run_at(&project, &mut store, now);

    let mut fresh = Store::open_in_memory().unwrap();
    fill(&mut fresh, &timeline);
    assert_eq!(sorted(emitted), sorted(run_at(&project, &mut fresh, now)));
}

#[test]
fn a_targeted_run_that_fails_part_way_changes_nothing() {
    // Only events fire: the second run reads just the customers with new events, on the
    // reading thread of a store file, and fails while deciding the third of them (recording
    // its third-buy delivery, due after the run: deliveries due within it are written by the
    // release pass).
    let project = events_only_project();
    let timeline = Timeline {
        customers: (0..4).map(|_| (true, true, 0, None)).collect(),
        events: (0..4)
            .flat_map(|c| {
                [
                    (c, 0, 60, 0),
                    (c, 0, 600, 0),
                    (c, 3, 700, 20),
                    (c, 3, 710, 20),
                    (c, 3, 720, 20),
                ]
            })
            .collect(),
    };
    let (first, second) = (start() + Duration::hours(5), start() + Duration::days(1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut store = Store::open(&path).unwrap();
    fill(&mut store, &timeline);
    let mut fresh = Store::open_in_memory().unwrap();
    fill(&mut fresh, &timeline);
    assert_eq!(
        sorted(run_at(&project, &mut store, first)),
        sorted(run_at(&project, &mut fresh, first))
    );
    let mut store = fails_part_way(&project, store, &path, second);
    let got = run_at(&project, &mut store, second);
    assert!(got.iter().any(|e| e.customer == "c2"), "{got:?}");
    assert_eq!(sorted(got), sorted(run_at(&project, &mut fresh, second)));
}

#[test]
fn a_dry_run_changes_nothing() {
    let project = project();
    let timeline = Timeline {
        customers: vec![(true, false, 0, None)],
        events: vec![(0, 3, 10, 20), (0, 3, 20, 20), (0, 3, 30, 20)],
    };
    let mut store = Store::open_in_memory().unwrap();
    fill(&mut store, &timeline);
    let before = counts(&mut store);
    let now = start() + Duration::days(1);
    let dry = run(&project, &mut store, &RunOptions { now, dry_run: true }).unwrap();
    assert!(!dry.is_empty());
    assert_eq!(counts(&mut store), before);
    assert_eq!(sorted(run_at(&project, &mut store, now)), sorted(dry));
}

/// Rule tags with behaviour windows, and campaigns fed by their changes.
const TAG_RULES: &str = r#"
customer { name: text  phone: text?  email: text?  registered_at: time  timezone: zone? }
event view { page: text }
event share
event buy { amount: number }
tag "browsing" when did view at least 2 times within last 6h
tag "buyer"    when did buy where amount > 10 within last 1d and not has tag "browsing"
tag "sharer"   when did share
tag "newcomer" when customer.registered_at within last 1d
tag "loyal"    when has tag "thanked" and did view
campaign "browsing-on" {
  start    2026-03-01 00:00
  trigger  on tag added "browsing"
  send     sms "在看什么？"
}
campaign "buyer-off" {
  start    2026-03-01 00:00
  trigger  on tag removed "buyer"
  send     sms "再来看看"
}
campaign "sharer-on" {
  start    2026-03-01 00:00
  trigger  on tag added "sharer"
  send     sms "谢谢分享"
  add tag  "thanked"
}
campaign "loyal-on" {
  start    2026-03-01 00:00
  trigger  on tag added "loyal"
  send     sms "老朋友好"
}
campaign "newcomer-on" {
  start    2026-03-01 00:00
  trigger  on tag added "newcomer"
  send     sms "欢迎"
}
campaign "newcomer-off" {
  start    2026-03-01 00:00
  trigger  on tag removed "newcomer"
  send     sms "第二天好"
}
"#;

/// Runs at each of `cuts` then at `end`; with `full`, every run first marks customers as
/// changed, which makes it recompute every customer's rule tags.
fn run_all(
    project: &nudge::Project,
    timeline: &Timeline,
    cuts: &[i64],
    end: DateTime<Utc>,
    full: bool,
) -> Vec<String> {
    let mut store = Store::open_in_memory().unwrap();
    fill(&mut store, timeline);
    let mut emitted = Vec::new();
    let times = cuts.iter().map(|m| start() + Duration::minutes(*m));
    for now in times.chain([end]) {
        if full {
            store
                .transaction(|tx| -> Result<(), nudge::store::StoreError> {
                    tx.connection()?.execute(
                        "UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'",
                        [],
                    )?;
                    Ok(())
                })
                .unwrap();
        }
        emitted.extend(run_at(project, &mut store, now));
    }
    sorted(emitted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After the first run, a run re-tags only customers with new events or a due tag check
    /// (an event leaving a window, a time attribute entering or leaving one); that must decide
    /// exactly what recomputing everyone decides, tags set by campaigns included.
    #[test]
    fn retagging_only_changed_customers_equals_retagging_everyone(
        timeline in timeline(),
        cuts in prop::collection::vec(0i64..5 * 1440, 1..8),
    ) {
        let mut sources = Sources::default();
        sources.add("tags.nudge", TAG_RULES);
        let project = project::analyze(sources, &CheckOptions { now: start() });
        prop_assert_eq!(project.errors(), 0);
        let mut cuts = cuts;
        cuts.sort();
        let end = start() + Duration::days(5);
        let targeted = run_all(&project, &timeline, &cuts, end, false);
        let everyone = run_all(&project, &timeline, &cuts, end, true);
        prop_assert_eq!(targeted, everyone);
    }
}

/// A store of two customers: c0 viewed /home at 00:10, c1 shared at 00:20.
fn c0_viewed_c1_shared() -> Store {
    let timeline = Timeline {
        customers: vec![(true, false, 0, None), (true, false, 0, None)],
        events: vec![(0, 1, 10, 0), (1, 2, 20, 0)],
    };
    let mut store = Store::open_in_memory().unwrap();
    fill(&mut store, &timeline);
    store
}

#[test]
fn a_new_tag_rule_is_applied_to_every_customer_at_its_first_run() {
    let mut store = c0_viewed_c1_shared();
    // A run without tag rules marks the customers seen…
    run_at(&project(), &mut store, start() + Duration::hours(1));
    // …and the next, with a new rule and no new event, must still tag c0 (who viewed).
    let mut sources = Sources::default();
    sources.add("tags.nudge", TAG_RULES);
    sources.add(
        "viewers.nudge",
        "tag \"viewer\" when did view\ncampaign \"viewer-on\" {\n  start 2026-03-01 00:00\n  \
         trigger on tag added \"viewer\"\n  send sms \"看过\"\n}\n",
    );
    let with_rule = project::analyze(sources, &CheckOptions { now: start() });
    assert_eq!(with_rule.errors(), 0, "{:#?}", with_rule.diagnostics);
    let emitted = run_at(&with_rule, &mut store, start() + Duration::hours(2));
    let viewers: Vec<_> = emitted
        .iter()
        .filter(|e| e.campaign == "viewer-on")
        .map(|e| e.customer.as_str())
        .collect();
    assert_eq!(viewers, ["c0"]);
}

/// Tag events a run records are kept with their tags, not in the histories; a campaign added
/// later with a `start` before them must still find them (its range reaches back to `start`),
/// here for a customer with no other event since that `start`.
#[test]
fn a_new_campaign_with_a_start_fires_on_tag_events_of_earlier_runs() {
    let mut store = c0_viewed_c1_shared();
    let viewer_rule = "tag \"viewer\" when did view\n";
    let rules = |campaign: &str| {
        let mut sources = Sources::default();
        sources.add("tags.nudge", TAG_RULES);
        sources.add("viewers.nudge", format!("{viewer_rule}{campaign}"));
        let project = project::analyze(sources, &CheckOptions { now: start() });
        assert_eq!(project.errors(), 0, "{:#?}", project.diagnostics);
        project
    };
    // The first run tags c0 (who viewed at 00:10) at 01:00; no campaign looks at it yet.
    let tagged_at = start() + Duration::hours(1);
    run_at(&rules(""), &mut store, tagged_at);
    let campaign = "campaign \"viewer-on\" {\n  start 2026-03-01 00:30\n  \
                    trigger on tag added \"viewer\"\n  send sms \"看过\"\n}\n";
    let emitted = run_at(&rules(campaign), &mut store, start() + Duration::hours(2));
    let fired: Vec<_> = emitted
        .iter()
        .filter(|e| e.campaign == "viewer-on")
        .map(|e| (e.customer.as_str(), e.fired_at))
        .collect();
    assert_eq!(fired, [("c0", tagged_at)]);
}

/// A customer's open `unless` windows are recorded as checks only for the campaign as it was;
/// when its trigger changes between runs, the next run must look back over the window itself.
#[test]
fn a_changed_unless_trigger_looks_back_over_its_window() {
    let campaign = |page: &str| {
        let mut sources = Sources::default();
        let rules = format!(
            "customer {{ name: text  phone: text? }}\nevent view {{ page: text }}\nevent share\n\
             campaign \"c\" {{\n  start 2026-03-01 00:00\n  \
             trigger on view where page == \"{page}\" unless share within 20m\n  \
             send sms \"hi\"\n}}\n"
        );
        sources.add("rules.nudge", rules);
        let project = project::analyze(sources, &CheckOptions { now: start() });
        assert_eq!(project.errors(), 0, "{:#?}", project.diagnostics);
        project
    };
    // c0 views /home at 10:00 (kind 1), and nothing else.
    let timeline = Timeline {
        customers: vec![(true, false, 0, None)],
        events: vec![(0, 1, 600, 0)],
    };
    let mut store = Store::open_in_memory().unwrap();
    fill(&mut store, &timeline);
    let at = |minutes: i64| start() + Duration::minutes(minutes);
    // At 10:05 the campaign fires on /pricing: c0's view is no trigger, no check is recorded.
    assert!(run_at(&campaign("/pricing"), &mut store, at(605)).is_empty());
    // Now it fires on /home: c0's 10:00 view fires at 10:20 though c0 has no new event.
    let emitted = run_at(&campaign("/home"), &mut store, at(625));
    assert_eq!(emitted.len(), 1, "{emitted:?}");
    assert_eq!(emitted[0].fired_at, at(620));
}
