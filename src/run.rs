//! Stage 4 — run: the interpreter. Decides, exactly once, who receives what and when.
//!
//! A run at `now` handles, for every active campaign, the trigger occurrences that fire in
//! `(until, now]`, where `until` is how far the campaign's previous run got (LANGUAGE.md §7):
//! - the campaign begins at its `start`, or else at the first run that sees it (no back-fill);
//! - each occurrence yields a candidate for every customer in the audience and not excluded at the
//!   moment it fires;
//! - its due time is built in order: fire time → `wait` → past `end`: expired;
//! - due by `now`: sent on the first reachable channel (or recorded unreachable); due later:
//!   recorded as queued, and released by the first run whose `now` reaches it.
//!
//! Every outcome is recorded under a (campaign, customer, occurrence) key the store keeps unique,
//! and the whole run is one transaction: killed part-way, the store is as before.

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use crate::ast::*;
use crate::check::{instant, Schema};
use crate::deliver::{after_wait, choose_channel, out_of_quiet, pace_slot, render, ChannelOption};
use crate::eval::{to_time, Compiler, Cond, Customer, Event, Millis, Properties};
use crate::project::Project;
use crate::store::{self, Delivery, Outcome, RunId, Store, StoreError, Tx};
use crate::trigger::{Occurrence, TriggerPlan};

pub struct RunOptions {
    pub now: DateTime<Utc>,
    /// Decide everything, then roll the store back.
    pub dry_run: bool,
}

/// A delivery emitted by a run (LANGUAGE.md §9).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Emitted {
    pub campaign: String,
    pub customer: String,
    pub channel: String,
    /// The address used; for `moments` and `task`, the employee's id.
    pub to: Option<String>,
    pub variant: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub fired_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub due_at: DateTime<Utc>,
    pub content: Json,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs every campaign of a checked project (no errors) against the store at `options.now`.
pub fn run(
    project: &Project,
    store: &mut Store,
    options: &RunOptions,
) -> Result<Vec<Emitted>, RunError> {
    let schema = project.schema();
    let compiler = Compiler::new(&schema, &project.modules);
    let campaigns: Vec<CampaignPlan> = project
        .campaigns()
        .filter(|c| c.status == Status::Active)
        .map(|c| CampaignPlan::new(c, &compiler, &schema))
        .collect();
    let now = options.now.timestamp_millis();
    let body = |tx: &Tx| run_in(tx, &campaigns, now, options.now);
    let mut emitted = if options.dry_run {
        store.scratch(body)?
    } else {
        store.transaction(body)?
    };
    emitted.sort_by(|a, b| {
        (a.due_at, &a.campaign, &a.customer).cmp(&(b.due_at, &b.campaign, &b.customer))
    });
    Ok(emitted)
}

fn run_in(
    tx: &Tx,
    campaigns: &[CampaignPlan],
    now: Millis,
    now_time: DateTime<Utc>,
) -> Result<Vec<Emitted>, RunError> {
    let run = tx.begin_run(now_time)?;
    let ranges: Vec<Range> = campaigns
        .iter()
        .map(|c| c.range(tx, now))
        .collect::<Result<_, _>>()?;
    let by_name: HashMap<&str, &CampaignPlan> =
        campaigns.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut emitted = release_queued(tx, run, &by_name, now)?;
    let schedule_times: Vec<Vec<Millis>> = campaigns
        .iter()
        .zip(&ranges)
        .map(|(c, r)| c.trigger.schedule_times(r.after, now))
        .collect();
    let mut process = |customer: Customer| -> Result<(), RunError> {
        emitted.extend(process_customer(
            tx,
            run,
            campaigns,
            &ranges,
            &schedule_times,
            customer,
            now,
        )?);
        Ok(())
    };
    if schedule_times.iter().any(|times| !times.is_empty()) {
        // A schedule fires for the whole audience: every customer is read once.
        tx.for_each_customer(|stored, events| {
            process(to_customer(stored, std::mem::take(events)))
        })?;
    } else if let Some(from) = event_window_start(campaigns, &ranges) {
        // Only events can fire: only customers with events in the window are read, so a run
        // costs what is new, not the whole history.
        for id in tx.customers_with_events_between(to_time(from), to_time(now))? {
            process(reload(tx, &id)?)?;
        }
    }
    for campaign in campaigns {
        tx.set_progress(&campaign.name, "until", &now.to_string())?;
    }
    tx.finish_run(run)?;
    Ok(emitted)
}

/// Processes one customer for every campaign; see `MAX_TAG_ROUNDS`.
fn process_customer(
    tx: &Tx,
    run: RunId,
    campaigns: &[CampaignPlan],
    ranges: &[Range],
    schedule_times: &[Vec<Millis>],
    mut customer: Customer,
    now: Millis,
) -> Result<Vec<Emitted>, RunError> {
    let mut emitted = Vec::new();
    // Tag actions record `tag_added` / `tag_removed` events that other campaigns' triggers must
    // see in this run: a customer whose tags changed is processed again (each occurrence is
    // still handled once). Bounded, in case campaigns toggle a tag forever.
    for _ in 0..MAX_TAG_ROUNDS {
        let mut tags_changed = false;
        for ((campaign, range), times) in campaigns.iter().zip(ranges).zip(schedule_times) {
            for occurrence in campaign.occurrences(&customer, range, times, now) {
                let decided = campaign.decide(tx, run, &customer, &occurrence, now)?;
                emitted.extend(decided.emitted);
                tags_changed |= decided.tags_changed;
            }
        }
        if !tags_changed {
            break;
        }
        customer = reload(tx, &customer.id)?;
    }
    Ok(emitted)
}

/// The earliest event time that can fire an event trigger in this run: the start of the
/// earliest range, less the longest `unless` wait. `None` when no campaign fires on events.
fn event_window_start(campaigns: &[CampaignPlan], ranges: &[Range]) -> Option<Millis> {
    campaigns
        .iter()
        .zip(ranges)
        .filter_map(|(campaign, range)| match &campaign.trigger {
            TriggerPlan::Event(trigger) => {
                let wait = trigger.unless.as_ref().map_or(0, |u| u.within);
                Some(range.after.saturating_sub(wait))
            }
            _ => None,
        })
        .min()
}

/// How many times one customer is processed in a run when tag actions keep changing its tags.
const MAX_TAG_ROUNDS: usize = 8;

/// Deliveries sent per address (for tasks: per employee) in one campaign, read from the store at
/// its first use in a run and then kept current, so that `assign … evenly` costs one query per
/// run, not one per task.
#[derive(Default)]
struct TaskLoad(RefCell<Option<HashMap<String, i64>>>);

impl TaskLoad {
    /// Of `employees`, the one with the fewest deliveries so far (the first such in the list).
    fn least(
        &self,
        tx: &Tx,
        campaign: &str,
        employees: &[String],
    ) -> Result<Option<String>, StoreError> {
        let mut cache = self.0.borrow_mut();
        if cache.is_none() {
            *cache = Some(tx.sent_per_address(campaign)?);
        }
        let counts = cache.as_ref().expect("loaded above");
        Ok(employees
            .iter()
            .min_by_key(|e| counts.get(*e).copied().unwrap_or(0))
            .cloned())
    }

    /// Counts a delivery the store has recorded as sent.
    fn count(&self, sent: Option<&Emitted>) {
        let mut cache = self.0.borrow_mut();
        if let (Some(counts), Some(to)) = (cache.as_mut(), sent.and_then(|e| e.to.as_ref())) {
            *counts.entry(to.clone()).or_default() += 1;
        }
    }
}

/// What deciding one occurrence did.
struct Decided {
    emitted: Vec<Emitted>,
    tags_changed: bool,
}

/// The customer as the store has it now (after tag actions of this run).
fn reload(tx: &Tx, id: &str) -> Result<Customer, StoreError> {
    let stored = tx.customer(id)?.unwrap_or_else(|| store::Customer {
        id: id.to_string(),
        ..store::Customer::default()
    });
    let events = tx.events_for_customer(id, ..)?;
    Ok(to_customer(&stored, events))
}

/// The part of time a run handles for one campaign: occurrences firing in `(after, now]`,
/// trigger events counted from `begin`.
struct Range {
    after: Millis,
    begin: Millis,
}

/// A campaign compiled for running.
struct CampaignPlan {
    name: String,
    zone: Tz,
    start: Option<Millis>,
    end: Option<Millis>,
    audience: Option<Cond>,
    exclude: Option<Cond>,
    trigger: TriggerPlan,
    wait: Option<Wait>,
    /// The campaign's quiet hours, else the policy's.
    quiet: Option<Quiet>,
    pace: Option<Pace>,
    sends: Vec<SendPlan>,
    task_load: TaskLoad,
    tags: Vec<(bool, String)>,
}

/// One `send` with its fallbacks.
struct SendPlan {
    options: Vec<ChannelPlan>,
}

struct ChannelPlan {
    name: String,
    kind: ChannelKind,
    address: Option<String>,
    reachable: Option<Cond>,
    content: Content,
    employee: Option<EmployeeRule>,
    assign: Vec<String>,
}

impl CampaignPlan {
    fn new(c: &Campaign, compiler: &Compiler<'_>, schema: &Schema) -> CampaignPlan {
        let zone = schema.campaign_zone(c);
        let at = |t: &DateTimeLit| instant(&t.value, zone).timestamp_millis();
        let mut sends = Vec::new();
        let mut tags = Vec::new();
        for action in &c.actions {
            match action {
                Action::Send(send) => sends.push(SendPlan {
                    options: std::iter::once(&send.primary)
                        .chain(&send.fallbacks)
                        .map(|d| ChannelPlan::new(d, compiler, schema))
                        .collect(),
                }),
                Action::AddTag(tag) => tags.push((true, tag.value.clone())),
                Action::RemoveTag(tag) => tags.push((false, tag.value.clone())),
                // Split arms are run by the delivery-policies milestone.
                Action::Split(_) => {}
            }
        }
        CampaignPlan {
            name: c.name.value.clone(),
            zone,
            start: c.start.as_ref().map(at),
            end: c.end.as_ref().map(at),
            audience: c.audience.as_ref().map(|a| compiler.compile_in(a, zone)),
            exclude: c.exclude.as_ref().map(|e| compiler.compile_in(e, zone)),
            trigger: TriggerPlan::new(
                &c.trigger
                    .as_ref()
                    .expect("checked campaigns have a trigger")
                    .kind,
                compiler,
                zone,
            ),
            wait: c.wait,
            quiet: c.quiet.or(schema.default_quiet),
            pace: c.pace,
            sends,
            task_load: TaskLoad::default(),
            tags,
        }
    }

    /// Where this run starts for the campaign. Without `start`, the first run that sees the
    /// campaign begins it, and handles nothing before its own `now`.
    fn range(&self, tx: &Tx, now: Millis) -> Result<Range, StoreError> {
        let read = |key| -> Result<Option<Millis>, StoreError> {
            Ok(tx.progress(&self.name, key)?.and_then(|v| v.parse().ok()))
        };
        let begin = match (self.start, read("begin")?) {
            (Some(start), _) => start,
            (None, Some(begin)) => begin,
            (None, None) => {
                tx.set_progress(&self.name, "begin", &now.to_string())?;
                now
            }
        };
        // An occurrence firing exactly at `start` belongs to the campaign.
        let first = if self.start.is_some() {
            begin - 1
        } else {
            begin
        };
        let after = read("until")?.map_or(first, |until| until.max(first));
        Ok(Range { after, begin })
    }

    /// The customer's occurrences in the range, before audience and exclusion.
    fn occurrences(
        &self,
        customer: &Customer,
        range: &Range,
        times: &[Millis],
        now: Millis,
    ) -> Vec<Occurrence> {
        if let TriggerPlan::Event(_) = self.trigger {
            return self
                .trigger
                .event_occurrences(customer, range.begin, range.after, now);
        }
        times
            .iter()
            .filter(|t| self.trigger.applies_to(customer, **t))
            .map(|t| Occurrence {
                key: format!("at:{t}"),
                fired_at: *t,
                event: None,
            })
            .collect()
    }

    fn in_audience(&self, customer: &Customer, at: Millis) -> bool {
        self.audience.as_ref().is_none_or(|a| a.eval(customer, at))
            && !self.exclude.as_ref().is_some_and(|e| e.eval(customer, at))
    }

    /// `pace N per D`: the first slot at or after `due` in which the customer holds fewer than N
    /// accepted deliveries of this campaign.
    fn paced(
        &self,
        tx: &Tx,
        customer: &Customer,
        due: Millis,
        zone: Tz,
    ) -> Result<Millis, StoreError> {
        let Some(pace) = self.pace else {
            return Ok(due);
        };
        let taken = tx.accepted_due_times(&self.name, &customer.id, to_time(due))?;
        let held = |slot: Millis| {
            taken
                .iter()
                .find(|(at, _)| at.timestamp_millis() == slot)
                .map_or(0, |(_, n)| *n as u64)
        };
        Ok(pace_slot(
            due,
            pace.per.seconds.saturating_mul(1000),
            pace.count.value,
            zone,
            held,
        ))
    }

    /// Decides one occurrence for one customer: records every action's outcome, applies its tag
    /// actions, and returns what is sent now. An occurrence the store has already recorded is
    /// left alone: that is what makes runs exactly-once.
    fn decide(
        &self,
        tx: &Tx,
        run: RunId,
        customer: &Customer,
        occurrence: &Occurrence,
        now: Millis,
    ) -> Result<Decided, RunError> {
        let mut decided = Decided {
            emitted: Vec::new(),
            tags_changed: false,
        };
        if !self.in_audience(customer, occurrence.fired_at) {
            return Ok(decided);
        }
        let event = occurrence.event.map(|i| &customer.events[i]);
        let fired = to_time(occurrence.fired_at);
        let zone = customer_zone(customer).unwrap_or(self.zone);
        let waited = after_wait(occurrence.fired_at, self.wait.as_ref(), zone);
        let quiet = match self.quiet {
            Some(quiet) => out_of_quiet(waited, quiet.from.value, quiet.to.value, zone),
            None => waited,
        };
        let due = self.paced(tx, customer, quiet, zone)?;
        let mut moved =
            (quiet != waited).then(|| format!("moved by quiet hours from {}", show(waited)));
        if due != quiet {
            note(&mut moved, format!("paced from {}", show(quiet)));
        }
        for (index, send) in self.sends.iter().enumerate() {
            let mut delivery = Delivery {
                campaign: self.name.clone(),
                customer: customer.id.clone(),
                occurrence: format!("{}/send{index}", occurrence.key),
                outcome: Outcome::Queued,
                channel: None,
                address: None,
                variant: None,
                fired_at: fired,
                due_at: to_time(due),
                content: event.map(|e| json!({ "event": e.properties.map() })),
                reason: moved.clone(),
            };
            let mut sent = None;
            if let Some(end) = self.end.filter(|end| due > *end) {
                delivery.outcome = Outcome::Expired;
                note(
                    &mut delivery.reason,
                    format!(
                        "due at {}, after the campaign's end at {}",
                        show(due),
                        show(end)
                    ),
                );
            } else if due <= now {
                sent = send.settle(
                    tx,
                    &mut delivery,
                    customer,
                    event.map(|e| e.properties.map()),
                    &self.task_load,
                )?;
            } else {
                note(&mut delivery.reason, format!("waiting until {}", show(due)));
            }
            if !tx.record_delivery(run, &delivery)? {
                // Handled by an earlier run (or round): nothing more to do for this occurrence.
                return Ok(decided);
            }
            self.task_load.count(sent.as_ref());
            decided.emitted.extend(sent);
        }
        for (add, tag) in &self.tags {
            decided.tags_changed |= if *add {
                tx.add_tag(&customer.id, tag, fired)?
            } else {
                tx.remove_tag(&customer.id, tag, fired)?
            };
        }
        Ok(decided)
    }
}

impl SendPlan {
    /// Chooses the channel at the due time and fills in the outcome, address and content.
    fn settle(
        &self,
        tx: &Tx,
        delivery: &mut Delivery,
        customer: &Customer,
        event: Option<&Map<String, Json>>,
        load: &TaskLoad,
    ) -> Result<Option<Emitted>, StoreError> {
        let due = delivery.due_at.timestamp_millis();
        let options: Vec<ChannelOption<'_>> = self
            .options
            .iter()
            .map(|o| ChannelOption {
                name: &o.name,
                address: o.address.as_deref(),
                reachable: o.reachable.as_ref(),
            })
            .collect();
        let chosen = match choose_channel(&options, customer, due) {
            Ok(chosen) => chosen,
            Err(why) => {
                delivery.outcome = Outcome::Unreachable;
                note(&mut delivery.reason, why);
                return Ok(None);
            }
        };
        let (index, address) = chosen;
        let option = &self.options[index];
        let to = match option.kind {
            ChannelKind::Moments | ChannelKind::Task => {
                match option.employee(tx, &delivery.campaign, &customer.id, load)? {
                    Some(employee) => Some(employee),
                    None => {
                        delivery.outcome = Outcome::Unreachable;
                        note(
                            &mut delivery.reason,
                            format!("{}: no employee has this customer", option.name),
                        );
                        return Ok(None);
                    }
                }
            }
            _ => address,
        };
        let content = option.render(customer, event);
        delivery.outcome = Outcome::Sent;
        delivery.channel = Some(option.name.clone());
        delivery.address = to.clone();
        delivery.content = Some(content.clone());
        if index > 0 {
            note(
                &mut delivery.reason,
                "sent on a fallback channel".to_string(),
            );
        }
        Ok(Some(Emitted {
            campaign: delivery.campaign.clone(),
            customer: delivery.customer.clone(),
            channel: option.name.clone(),
            to,
            variant: delivery.variant.clone(),
            fired_at: delivery.fired_at,
            due_at: delivery.due_at,
            content,
        }))
    }
}

impl ChannelPlan {
    fn new(
        delivery: &crate::ast::Delivery,
        compiler: &Compiler<'_>,
        schema: &Schema,
    ) -> ChannelPlan {
        let channel = schema
            .channel(&delivery.channel.name)
            .expect("checked campaigns name known channels");
        let reachable = compiler.reachable(&delivery.channel.name);
        ChannelPlan {
            name: delivery.channel.name.clone(),
            kind: channel.kind,
            // Moments and tasks go through an employee; the address only gates reachability
            // for moments (the customer must be on WeCom).
            address: channel.address,
            reachable,
            content: delivery.content.clone(),
            employee: delivery.employee.as_ref().map(|e| e.rule.clone()),
            assign: delivery
                .assign
                .as_ref()
                .map(|a| a.employees.iter().map(|e| e.value.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// The employee who posts or does the task for this customer.
    fn employee(
        &self,
        tx: &Tx,
        campaign: &str,
        customer: &str,
        load: &TaskLoad,
    ) -> Result<Option<String>, StoreError> {
        if !self.assign.is_empty() {
            return load.least(tx, campaign, &self.assign);
        }
        let employees = tx.employees_for_customer(customer)?;
        Ok(
            match self.employee.as_ref().unwrap_or(&EmployeeRule::LastAdded) {
                EmployeeRule::FirstAdded => employees.first().map(|e| e.employee.clone()),
                EmployeeRule::LastAdded => employees
                    .iter()
                    .max_by_key(|e| e.added_at)
                    .map(|e| e.employee.clone()),
                EmployeeRule::Priority(list) => list
                    .iter()
                    .find(|wanted| employees.iter().any(|e| e.employee == wanted.value))
                    .map(|e| e.value.clone()),
            },
        )
    }

    /// The message as sent: each part rendered, keyed by what it is.
    fn render(&self, customer: &Customer, event: Option<&Map<String, Json>>) -> Json {
        let fill = |s: &Str| Json::String(render(&s.value, customer, event));
        let mut content = Map::new();
        if let Some(lead) = &self.content.lead {
            content.insert("text".into(), fill(lead));
        }
        let mut previous = None;
        for part in &self.content.parts {
            let key = match (part.key, previous) {
                (ContentKey::Title, Some(ContentKey::Link))
                    if matches!(self.kind, ChannelKind::Wecom | ChannelKind::Moments) =>
                {
                    "link_title"
                }
                (key, _) => key.name(),
            };
            content.insert(key.into(), fill(&part.value));
            previous = Some(part.key);
        }
        Json::Object(content)
    }
}

/// Emits the queued deliveries that are due by `now`, deciding their channel at their due time.
fn release_queued(
    tx: &Tx,
    run: RunId,
    campaigns: &HashMap<&str, &CampaignPlan>,
    now: Millis,
) -> Result<Vec<Emitted>, RunError> {
    let mut emitted = Vec::new();
    for mut delivery in tx.queued_due(to_time(now))? {
        let Some(campaign) = campaigns.get(delivery.campaign.as_str()) else {
            continue; // The campaign was paused or removed; its queue waits.
        };
        let index: usize = delivery
            .occurrence
            .rsplit_once("/send")
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0);
        let Some(send) = campaign.sends.get(index) else {
            continue;
        };
        let Some(stored) = tx.customer(&delivery.customer)? else {
            continue;
        };
        let due = delivery.due_at;
        let events = tx.events_for_customer(&delivery.customer, ..=due)?;
        let customer = to_customer(&stored, events);
        let event = delivery
            .content
            .as_ref()
            .and_then(|c| c.get("event"))
            .and_then(|e| e.as_object())
            .cloned();
        let sent = send.settle(
            tx,
            &mut delivery,
            &customer,
            event.as_ref(),
            &campaign.task_load,
        )?;
        if tx.settle_delivery(run, &delivery)? {
            campaign.task_load.count(sent.as_ref());
            emitted.extend(sent);
        }
    }
    Ok(emitted)
}

/// A stored customer and its events, as evaluation reads them. The events are moved, not
/// copied: whole-audience passes read every event of the store.
pub fn to_customer(stored: &store::Customer, events: Vec<store::Event>) -> Customer {
    Customer {
        id: stored.id.clone(),
        attributes: serde_json::from_str(&stored.attributes).unwrap_or_default(),
        tags: stored.tags.iter().cloned().collect(),
        events: events
            .into_iter()
            .map(|e| Event {
                id: e.id,
                name: e.name,
                at: e.at.timestamp_millis(),
                properties: Properties::new(e.properties),
            })
            .collect(),
    }
}

/// Adds a line to a delivery's reason (what `explain` tells about it).
fn note(reason: &mut Option<String>, text: String) {
    *reason = Some(match reason.take() {
        Some(earlier) => format!("{earlier}; {text}"),
        None => text,
    });
}

/// The customer's own time zone (`customer.timezone`), when set and valid.
fn customer_zone(customer: &Customer) -> Option<Tz> {
    customer.attributes.get("timezone")?.as_str()?.parse().ok()
}

fn show(ms: Millis) -> String {
    to_time(ms).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
