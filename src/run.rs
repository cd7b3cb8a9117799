//! Stage 4 — run: the interpreter. Decides, exactly once, who receives what and when.
//!
//! A run at `now` has three passes (LANGUAGE.md §5–7):
//! 1. tag rules are recomputed as of `now` (a `tag_added` / `tag_removed` event per change);
//! 2. for every active campaign, the trigger occurrences that fire in `(until, now]` — `until`
//!    being how far the campaign's previous run got — yield a candidate for every customer in the
//!    audience and not excluded at the moment it fires. Its due time is built in order: fire time
//!    → `wait` → out of quiet hours → `pace` slot; past `end` it is expired, otherwise queued.
//!    `split` picks the variant (or the control group) here, and tag actions apply;
//! 3. the queue is released in (due time, campaign, customer) order up to `now`: `rate` buckets,
//!    `end`, the campaign's and the policy's caps, then the first reachable channel.
//!
//! Every outcome is recorded under a (campaign, customer, occurrence) key the store keeps unique,
//! and the whole run is one transaction: killed part-way, the store is as before. Deciding rate
//! and caps only once a delivery is due, in due order, is what makes a run at T1 then T2 decide
//! what one run at T2 decides: every delivery due by T1 has fired by T1.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use crate::ast::*;
use crate::check::{instant, Schema};
use crate::deliver::{
    after_wait, calendar_bucket, choose_channel, out_of_quiet, pace_slot, render, split_point,
    template_attributes, ChannelOption,
};
use crate::estimate::{self, reads_attributes};
use crate::eval::{to_time, Compiler, Cond, Customer, Event, Millis, Properties};
use crate::print::duration;
use crate::project::Project;
use crate::store::{
    self, Attributes, Delivery, Events, Outcome, QueueKey, RunId, Scanned, Store, StoreError, Tx,
    Whose,
};
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
    /// Writing what was sent failed; the run is rolled back.
    #[error("cannot write the run's output: {0}")]
    Output(#[from] std::io::Error),
}

/// How long each part of a run took, in order (`nudge run --timings`): for engineers who need
/// to know where a batch job's time goes without a profiler.
#[derive(Debug)]
pub struct Phases {
    last: Instant,
    pub list: Vec<Phase>,
}

/// One part of a run.
#[derive(Debug)]
pub struct Phase {
    pub name: &'static str,
    pub took: Duration,
    /// What it handled, for people: "10,257 customers", "2,447 sent".
    pub handled: Option<String>,
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            last: Instant::now(),
            list: Vec::new(),
        }
    }

    /// Ends the current phase (begun when the previous one ended).
    pub fn end(&mut self, name: &'static str, handled: Option<String>) {
        let now = Instant::now();
        self.list.push(Phase {
            name,
            took: now - self.last,
            handled,
        });
        self.last = now;
    }
}

/// `n` things as people write them: "1 customer", "10,257 customers".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

/// A count with its thousands grouped: "10,257".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Runs every campaign of a checked project (no errors) against the store at `options.now`,
/// returning what was sent, ordered by due time, then campaign, then customer.
pub fn run(
    project: &Project,
    store: &mut Store,
    options: &RunOptions,
) -> Result<Vec<Emitted>, RunError> {
    let mut emitted = Vec::new();
    let mut phases = Phases::start();
    run_into(project, store, options, &mut phases, &mut |e| {
        emitted.push(e);
        Ok(())
    })?;
    Ok(emitted)
}

/// Runs like `run`, handing each sent delivery to `sink` as it is decided — in order of due
/// time, then campaign, then customer — instead of collecting them, so a run that sends a
/// million messages does not hold them in memory. The run commits only after the last one: a
/// sink that must not show uncommitted deliveries should buffer them (the CLI writes them to a
/// temporary file). Returns how many were sent; `phases` gets what took how long, up to the
/// commit.
pub fn run_into(
    project: &Project,
    store: &mut Store,
    options: &RunOptions,
    phases: &mut Phases,
    sink: &mut dyn FnMut(Emitted) -> std::io::Result<()>,
) -> Result<usize, RunError> {
    let schema = project.schema();
    let compiler = Compiler::new(&schema, &project.modules);
    let project_zone = schema.default_timezone.unwrap_or(Tz::UTC);
    let campaigns: Vec<CampaignPlan> = project
        .campaigns()
        .filter(|c| c.status == Status::Active)
        .map(|c| CampaignPlan::new(c, &compiler, &schema))
        .collect();
    let tag_rules: Vec<TagRulePlan> = project
        .tag_rules()
        .map(|rule| TagRulePlan {
            tag: rule.tag.value.clone(),
            holds: compiler.compile_in(&rule.expr, project_zone),
        })
        .collect();
    let plans = Plans {
        reads_attributes_to_fire: tag_rules.iter().any(|rule| reads_attributes(&rule.holds))
            || campaigns.iter().any(|c| c.trigger.reads_attributes()),
        attributes: attributes_read(&campaigns, &tag_rules),
        released_events: released_events(&campaigns),
        campaigns,
        tag_rules,
        policy_cap: schema.policy_cap,
    };
    let now = options.now.timestamp_millis();
    phases.end("compile the campaigns", None);
    let body = |tx: &Tx| run_in(tx, &plans, now, options.now, phases, sink);
    let sent = if options.dry_run {
        store.scratch(body)
    } else {
        store.transaction(body)
    }?;
    phases.end(
        if options.dry_run {
            "roll back"
        } else {
            "commit"
        },
        None,
    );
    Ok(sent)
}

/// Everything a run needs from the project, compiled.
struct Plans {
    campaigns: Vec<CampaignPlan>,
    tag_rules: Vec<TagRulePlan>,
    /// Whether tag rules or what fires a trigger (a schedule's `for … after customer.x`, an
    /// event filter) may read customer attributes: then they are parsed before either runs.
    reads_attributes_to_fire: bool,
    /// `policy { cap … }`, counted across campaigns.
    policy_cap: Option<Cap>,
    /// Every customer attribute the run may read: customers are parsed with these alone.
    attributes: Vec<String>,
    /// The names of the events the release pass may read (see [`released_events`]).
    released_events: HashSet<String>,
}

/// The customer attributes that deciding, timing and sending the campaigns, and applying the
/// tag rules, may read: conditions, `for … after customer.x`, addresses, `{{customer.x}}` in
/// contents, and the customer's time zone. (Measured with callgrind: the benchmark's
/// incremental run, whose campaigns read few attributes, −2.9% instructions; a run of `rules/`,
/// which reads nearly all, the same within 0.3%.)
fn attributes_read(campaigns: &[CampaignPlan], tag_rules: &[TagRulePlan]) -> Vec<String> {
    let mut names = HashSet::from([ZONE_ATTRIBUTE.to_owned()]);
    for campaign in campaigns {
        campaign.attributes_read(&mut names);
    }
    for rule in tag_rules {
        estimate::attributes_read(&rule.holds, &mut names);
    }
    names.into_iter().collect()
}

/// The names of the events that releasing a delivery may read: those the channels' `reachable`
/// conditions count. (The audience was decided when the trigger fired, and contents read the
/// firing event from the delivery.)
fn released_events(campaigns: &[CampaignPlan]) -> HashSet<String> {
    let mut names = HashSet::new();
    let reachable = campaigns.iter().flat_map(|c| c.channels());
    for cond in reachable.filter_map(|channel| channel.reachable.as_ref()) {
        cond.event_names(&mut |name| {
            names.insert(name.to_owned());
        });
    }
    names
}

impl Plans {
    /// The event names whose arrival can change anything when no schedule fires: those that
    /// fire or cancel an event trigger, and those tag rules count. (Audiences look at events
    /// only when a trigger fires.)
    fn names_that_matter(&self) -> HashSet<&str> {
        let mut names = HashSet::new();
        for campaign in &self.campaigns {
            if let TriggerPlan::Event(trigger) = &campaign.trigger {
                names.insert(trigger.event.as_str());
                names.extend(trigger.unless.as_ref().map(|u| u.event.as_str()));
            }
        }
        for rule in &self.tag_rules {
            rule.holds.event_names(&mut |name| {
                names.insert(name);
            });
        }
        names
    }
}

/// `tag "X" when …`.
struct TagRulePlan {
    tag: String,
    holds: Cond,
}

fn run_in(
    tx: &Tx,
    plans: &Plans,
    now: Millis,
    now_time: DateTime<Utc>,
    phases: &mut Phases,
    sink: &mut dyn FnMut(Emitted) -> std::io::Result<()>,
) -> Result<usize, RunError> {
    let previous = tx.last_run_now()?.map(|t| t.timestamp_millis());
    let run = tx.begin_run(now_time)?;
    tx.hold_deliveries_due_by(now_time);
    let campaigns = &plans.campaigns;
    let ranges: Vec<Range> = campaigns
        .iter()
        .map(|c| c.range(tx, now))
        .collect::<Result<_, _>>()?;
    let schedule_times: Vec<Vec<Millis>> = campaigns
        .iter()
        .zip(&ranges)
        .map(|(c, r)| c.trigger.schedule_times(r.after, now))
        .collect();
    let checked = checked_scope(tx, &plans.tag_rules, previous, now)?;
    let schedule_fires = schedule_times.iter().any(|times| !times.is_empty());
    let targeted = checked.filter(|_| !schedule_fires);
    let candidates = Candidates {
        tx,
        run,
        plans,
        ranges: &ranges,
        schedule_times: &schedule_times,
        now,
        recent: Recent::default(),
    };
    match targeted {
        Some(due) => {
            // Only events can fire, and rule tags can only change for customers with new
            // events or a due check: only those customers are read, so a run costs what is
            // new, not the whole history. One query finds both the events that fire triggers
            // and the new events tag rules must see (since the previous run).
            let rules_since = previous.filter(|_| !plans.tag_rules.is_empty());
            let from = event_window_start(campaigns, &ranges)
                .into_iter()
                .chain(rules_since)
                .min();
            let due: BTreeSet<String> = due.into_iter().collect();
            let mut ids = due.clone();
            if let Some(from) = from {
                ids.extend(tx.customers_with_events_between(to_time(from), to_time(now))?);
            }
            // A customer whose new events are all of names nothing counts (a `share` when no
            // trigger or tag rule looks at shares) is left alone: its check still stands.
            let names = plans.names_that_matter();
            let matters = |event: &Event| {
                from.is_some_and(|from| event.at > from && event.at <= now)
                    && names.contains(&*event.name)
            };
            let ids: Vec<String> = ids.into_iter().collect();
            phases.end(
                "find the customers with something new",
                Some(counted(ids.len(), "customer", "customers")),
            );
            tx.limit_cache(TARGETED_CACHE_KIB)?;
            tx.for_customers(&ids, |scanned| {
                let customer = &scanned.customer;
                if due.contains(&customer.id) || customer.events.iter().any(matters) {
                    // Read here, not with the customer: the reading thread bounds this pass,
                    // and this one waits for it (a join per customer there cost ≥ 22M of the
                    // benchmark's incremental run's instructions, callgrind).
                    let stored_check = tx.check(&customer.id)?;
                    candidates.process(scanned, stored_check)?;
                }
                Ok::<_, RunError>(())
            })?;
            phases.end("read and decide them", None);
        }
        None => {
            // A schedule fires for the whole audience, or tag rules must be recomputed for
            // everyone: every customer is read once, and records its check anew.
            tx.clear_checks()?;
            let mut read = 0;
            tx.for_each_evaluated(Events::All, |scanned| {
                read += 1;
                candidates.process(scanned, None)
            })?;
            let read = counted(read, "customer", "customers");
            phases.end("read and decide every customer", Some(read));
        }
    }
    tx.mark_customers_seen()?;
    tx.set_state(TAG_RULES_STATE, fingerprint(&plans.tag_rules))?;
    let sent = release_due(tx, run, plans, now, &candidates.recent, sink)?;
    phases.end(
        "release what is due",
        Some(format!("{} sent", grouped(sent))),
    );
    candidates.recent.free_in_background();
    for campaign in campaigns {
        tx.set_progress(&campaign.name, "until", &now.to_string())?;
        if let Some(signature) = campaign.unless_signature() {
            tx.set_progress(&campaign.name, UNLESS_PROGRESS, &signature)?;
        }
    }
    tx.finish_run(run)?;
    Ok(sent)
}

/// The second pass of a run: turning trigger occurrences into recorded candidates.
struct Candidates<'a> {
    tx: &'a Tx<'a>,
    run: RunId,
    plans: &'a Plans,
    ranges: &'a [Range],
    schedule_times: &'a [Vec<Millis>],
    now: Millis,
    recent: Recent,
}

impl Candidates<'_> {
    /// Processes one customer: tag rules, then every campaign, then when a run must look at it
    /// again. Tag changes record `tag_added` / `tag_removed` events that tag rules and other
    /// campaigns' triggers must see in this run: tag rules apply theirs to the customer in
    /// memory as well; a customer whose tags a campaign's actions changed is read again and
    /// processed again (each occurrence is still handled once), up to `MAX_TAG_ROUNDS` times,
    /// in case campaigns toggle a tag forever.
    ///
    /// What the release pass reads of the customer is taken out of `scanned` when it is kept
    /// for that pass (see [`Recent::keep`]); its other buffers are left for the next one.
    /// `stored_check` is its check as the store has it before it is processed (`None` once
    /// checks are cleared).
    ///
    /// Its attributes are parsed only once something reads them: most customers a targeted run
    /// reads fire nothing, and parsing everyone's attributes was a tenth of the run's own
    /// instructions (callgrind). Tag rules or triggers that read attributes have them parsed
    /// first; audiences, sends and the rest come after an occurrence.
    fn process(&self, scanned: &mut Scanned, stored_check: Option<Millis>) -> Result<(), RunError> {
        let held_before = self.tx.deliveries_held();
        let mut parsed = false;
        let wanted = &self.plans.attributes;
        let parse = |scanned: &mut Scanned, parsed: &mut bool| {
            if !std::mem::replace(parsed, true) {
                scanned.parse_attributes(Attributes::Only(wanted));
            }
        };
        if self.plans.reads_attributes_to_fire {
            parse(scanned, &mut parsed);
        }
        for _ in 0..MAX_TAG_ROUNDS {
            self.apply_tag_rules(&mut scanned.customer)?;
            let mut tags_changed = false;
            let campaigns = self.plans.campaigns.iter();
            for ((campaign, range), times) in campaigns.zip(self.ranges).zip(self.schedule_times) {
                for occurrence in campaign.occurrences(&scanned.customer, range, times, self.now) {
                    parse(scanned, &mut parsed);
                    let customer = &scanned.customer;
                    tags_changed |= campaign.decide(self.tx, self.run, customer, &occurrence)?;
                }
            }
            if !tags_changed {
                break;
            }
            // Read again with its attributes parsed.
            scanned.customer = load(self.tx, &scanned.customer.id)?;
            parsed = true;
        }
        self.record_check(&scanned.customer, stored_check)?;
        if self.tx.deliveries_held() > held_before {
            self.recent
                .keep(&mut scanned.customer, &self.plans.released_events);
        }
        Ok(())
    }

    /// Records when a later run must look at the customer again even if it has no new event:
    /// its rule tags may change with the clock alone, or an `unless` window closes. A check
    /// the store already has is not written again.
    fn record_check(&self, customer: &Customer, stored: Option<Millis>) -> Result<(), StoreError> {
        let tags = self
            .plans
            .tag_rules
            .iter()
            .filter_map(|rule| rule.holds.next_change(customer, self.now));
        let pending =
            self.plans
                .campaigns
                .iter()
                .zip(self.ranges)
                .filter_map(|(campaign, range)| match &campaign.trigger {
                    TriggerPlan::Event(trigger) => {
                        trigger.next_pending(customer, range.begin, self.now)
                    }
                    _ => None,
                });
        match tags.chain(pending).min() {
            next if next == stored => Ok(()),
            next => self.tx.set_check(&customer.id, next.map(to_time)),
        }
    }

    /// Recomputes the rule tags as of `now`, in file order, until none changes (a rule may test
    /// a tag another rule sets), in the store and in `customer`.
    fn apply_tag_rules(&self, customer: &mut Customer) -> Result<(), StoreError> {
        let at = to_time(self.now);
        for _ in 0..=self.plans.tag_rules.len() {
            let mut changed = false;
            for rule in &self.plans.tag_rules {
                let holds = rule.holds.eval(customer, self.now);
                if holds == customer.tags.contains(&rule.tag) {
                    continue;
                }
                let recorded = if holds {
                    customer.tags.insert(rule.tag.clone());
                    self.tx.add_tag(&customer.id, &rule.tag, at)?
                } else {
                    customer.tags.remove(&rule.tag);
                    self.tx.remove_tag(&customer.id, &rule.tag, at)?
                };
                // The customer in memory stays as the store has it: tags and their events.
                if let Some(event) = recorded {
                    customer.insert_event(to_event(event));
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        Ok(())
    }
}

/// The customers a run must read besides those with new events, or `None` when rule tags may
/// have changed for anyone: no run yet, a tag rule is new or changed, or attributes or tags
/// changed outside runs (an import). Otherwise a rule's truth moves with new events, in
/// `(previous, now]` (which the caller reads along with the trigger events), and with the
/// clock, as does the end of an open `unless` window: the customers whose recorded check is
/// due are returned.
fn checked_scope(
    tx: &Tx,
    rules: &[TagRulePlan],
    previous: Option<Millis>,
    now: Millis,
) -> Result<Option<Vec<String>>, StoreError> {
    if !rules.is_empty() {
        let rules_changed = tx.state(TAG_RULES_STATE)? != Some(fingerprint(rules));
        if previous.is_none() || rules_changed || tx.customers_changed()? {
            return Ok(None);
        }
    }
    Ok(Some(tx.checks_due(to_time(now))?))
}

/// Where the store keeps the fingerprint of the tag rules its customers were last tagged by: a
/// new or changed rule must be applied to everyone once.
const TAG_RULES_STATE: &str = "tag_rules";

/// The tag rules, hashed (XXH3) from their tags and compiled conditions. Should a new release
/// render conditions differently, the cost is one run that re-tags everyone.
fn fingerprint(rules: &[TagRulePlan]) -> i64 {
    let text: String = rules
        .iter()
        .map(|rule| format!("{}\u{0}{:?}\u{0}", rule.tag, rule.holds))
        .collect();
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as i64
}

/// The earliest time of a new event that can fire an event trigger in this run: the start of
/// the earliest range. A trigger event before it whose `unless` window closes in this run
/// belongs to a customer with a due check, unless the campaign's checks were not recorded yet
/// (a new or changed `unless`): then its range reaches back by the window. `None` when no
/// campaign fires on events.
fn event_window_start(campaigns: &[CampaignPlan], ranges: &[Range]) -> Option<Millis> {
    campaigns
        .iter()
        .zip(ranges)
        .filter_map(|(campaign, range)| match &campaign.trigger {
            TriggerPlan::Event(trigger) => {
                let wait = match range.unless_recorded {
                    true => 0,
                    false => trigger.unless.as_ref().map_or(0, |u| u.within),
                };
                Some(range.after.saturating_sub(wait))
            }
            _ => None,
        })
        .min()
}

/// The campaign progress key under which a run records the signature of the `unless` whose
/// open windows the customer checks cover.
const UNLESS_PROGRESS: &str = "unless";

/// Customers the candidate pass read that got a delivery due within the run, kept for the
/// release pass that follows: reading a customer again (row, tags, history) would cost more
/// than deciding its delivery. (Keeping every customer with an occurrence, as before, kept
/// 4,375 in the benchmark's run instead of these 2,607, in fresh memory: page faults.) Bounded,
/// so that a mass send keeps memory flat; the customers not kept are read again, a page of the
/// queue at a time.
#[derive(Default)]
struct Recent {
    kept: RefCell<HashMap<String, Arc<Customer>>>,
    /// The customers of the release pass's current page of the queue that were not kept.
    page: RefCell<HashMap<String, Arc<Customer>>>,
}

/// How many customers `Recent` keeps.
const RECENT_CUSTOMERS: usize = 4096;

impl Recent {
    /// Keeps what the release pass reads of the customer, if there is room: its id, attributes
    /// and tags (taken out of `customer`), and its events of the `released` names (copied). The
    /// rest of its events stay where they are, and so does their memory, which the next
    /// customer is filled into: taking them all made every kept customer's successor grow its
    /// events anew in memory fresh from the system (a third of filling the benchmark's
    /// incremental-run customers was page faults).
    fn keep(&self, customer: &mut Customer, released: &HashSet<String>) {
        let mut kept = self.kept.borrow_mut();
        if kept.len() < RECENT_CUSTOMERS {
            let events = customer.events.iter();
            let kept_customer = Customer {
                id: customer.id.clone(),
                attributes: std::mem::take(&mut customer.attributes),
                tags: std::mem::take(&mut customer.tags),
                events: events
                    .filter(|e| released.contains(&*e.name))
                    .cloned()
                    .collect(),
            };
            kept.insert(kept_customer.id.clone(), Arc::new(kept_customer));
        }
    }

    /// Reads the customers of a page of the queue that were not kept, in one batch of lookups
    /// instead of several statements each (a mass send releases many more customers than are
    /// kept), replacing the previous page's.
    fn read_page<'a>(
        &self,
        tx: &Tx,
        customers: impl Iterator<Item = &'a str>,
        wanted: &[String],
    ) -> Result<(), StoreError> {
        let mut ids: Vec<String> = {
            let kept = self.kept.borrow();
            let missing = customers.filter(|id| !kept.contains_key(*id));
            missing.map(str::to_owned).collect()
        };
        ids.sort_unstable();
        ids.dedup();
        let mut page = HashMap::with_capacity(ids.len());
        // None when every customer of the page was kept, as in an incremental run: then not
        // even the reading statements are prepared.
        if !ids.is_empty() {
            tx.for_customers_as_changed(&ids, |scanned| {
                scanned.parse_attributes(Attributes::Only(wanted));
                let customer = std::mem::take(&mut scanned.customer);
                page.insert(customer.id.clone(), Arc::new(customer));
                Ok::<_, StoreError>(())
            })?;
        }
        *self.page.borrow_mut() = page;
        Ok(())
    }

    /// The customer as the store has it now. (Its events past the due time, if any, are never
    /// looked at: reachability is evaluated at the due time.)
    fn get(&self, tx: &Tx, id: &str) -> Result<Arc<Customer>, StoreError> {
        let known = |customers: &RefCell<HashMap<String, Arc<Customer>>>| {
            customers.borrow().get(id).map(Arc::clone)
        };
        match known(&self.kept).or_else(|| known(&self.page)) {
            Some(customer) => Ok(customer),
            None => Ok(Arc::new(load(tx, id)?)),
        }
    }

    /// Lets go of the kept customers on a thread of its own. Freeing them is hundreds of
    /// thousands of small deallocations after a run that kept thousands (measured: a tenth of
    /// an incremental run's main thread), which can overlap the commit and the close of the
    /// store. If no thread can be started, they are freed here.
    fn free_in_background(&self) {
        let kept = std::mem::take(&mut *self.kept.borrow_mut());
        let page = std::mem::take(&mut *self.page.borrow_mut());
        if !kept.is_empty() || !page.is_empty() {
            let _ = std::thread::Builder::new()
                .name("nudge-free".into())
                .spawn(move || drop((kept, page)));
        }
    }
}

/// The page cache of a run that reads only some customers (see [`Tx::limit_cache`]).
const TARGETED_CACHE_KIB: u32 = 4096;

/// How many times quiet hours and pace may move one delivery in turn.
const MAX_POLICY_MOVES: usize = 16;

/// How many times one customer is processed in a run when tag actions keep changing its tags.
const MAX_TAG_ROUNDS: usize = 8;

/// Deliveries given to each employee (moments, tasks) in one campaign, read from the store at
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
            *cache = Some(tx.employee_loads(campaign)?);
        }
        let counts = cache.as_ref().expect("loaded above");
        Ok(employees
            .iter()
            .min_by_key(|e| counts.get(*e).copied().unwrap_or(0))
            .cloned())
    }

    /// Counts a delivery the store has recorded as sent, if it went to an employee, in the
    /// store and here.
    fn count(
        &self,
        tx: &Tx,
        campaign: &str,
        send: &SendPlan,
        sent: Option<&Emitted>,
    ) -> Result<(), StoreError> {
        let Some((channel, Some(employee))) = sent.map(|e| (&e.channel, &e.to)) else {
            return Ok(());
        };
        if !send.through_employee(channel) {
            return Ok(());
        }
        tx.count_employee_send(campaign, employee)?;
        if let Some(counts) = self.0.borrow_mut().as_mut() {
            *counts.entry(employee.clone()).or_default() += 1;
        }
        Ok(())
    }
}

/// The customer as the store has it now (after tag actions of this run), with all its events;
/// an empty customer with the id if it was never imported.
fn load(tx: &Tx, id: &str) -> Result<Customer, StoreError> {
    Ok(load_imported(tx, id)?.unwrap_or_else(|| Customer {
        id: id.to_string(),
        ..Customer::default()
    }))
}

/// The customer as the store has it now, if it was imported.
fn load_imported(tx: &Tx, id: &str) -> Result<Option<Customer>, StoreError> {
    let Some(stored) = tx.customer(id)? else {
        return Ok(None);
    };
    Ok(Some(to_customer(&stored, tx.events_for_customer(id, ..)?)))
}

/// Where a campaign's occurrences begin — its `start`, else the `now` of the first run that saw
/// it — and the instant after which they fire (an occurrence exactly at `start` belongs to the
/// campaign). `None` for a campaign without `start` that no run has seen yet.
pub fn campaign_begin(
    tx: &Tx,
    campaign: &str,
    start: Option<Millis>,
) -> Result<Option<(Millis, Millis)>, StoreError> {
    if let Some(start) = start {
        return Ok(Some((start, start - 1)));
    }
    let begin: Option<Millis> = tx.progress(campaign, "begin")?.and_then(|v| v.parse().ok());
    Ok(begin.map(|begin| (begin, begin)))
}

/// The part of time a run handles for one campaign: occurrences firing in `(after, now]`,
/// trigger events counted from `begin`.
struct Range {
    after: Millis,
    begin: Millis,
    /// Whether the store's customer checks already cover the open windows of this campaign's
    /// `unless` as it is now (its signature is recorded in the campaign's progress).
    unless_recorded: bool,
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
    cap: Option<Cap>,
    rate: Option<Rate>,
    /// The actions outside any `split`.
    common: ActionsPlan,
    /// The arms of the campaign's `split`, with their cumulative shares; empty without one.
    split: Vec<SplitArmPlan>,
    task_load: TaskLoad,
}

/// The sends and tag actions of a campaign, or of one arm of its split.
#[derive(Default)]
struct ActionsPlan {
    sends: Vec<SendPlan>,
    tags: Vec<(bool, String)>,
}

struct SplitArmPlan {
    /// A customer whose split point is below this share (the arms' shares added up to here)
    /// falls in this arm.
    upto: f64,
    /// `None` for the control group.
    variant: Option<String>,
    actions: ActionsPlan,
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

impl ActionsPlan {
    fn new(actions: &[Action], compiler: &Compiler<'_>, schema: &Schema) -> ActionsPlan {
        let mut plan = ActionsPlan::default();
        for action in actions {
            match action {
                Action::Send(send) => plan.sends.push(SendPlan {
                    options: std::iter::once(&send.primary)
                        .chain(&send.fallbacks)
                        .map(|d| ChannelPlan::new(d, compiler, schema))
                        .collect(),
                }),
                Action::AddTag(tag) => plan.tags.push((true, tag.value.clone())),
                Action::RemoveTag(tag) => plan.tags.push((false, tag.value.clone())),
                // Compiled by `split_arms`; the checker allows one split per campaign.
                Action::Split(_) => {}
            }
        }
        plan
    }
}

/// The arms of a campaign's `split`, each with the cumulative share that ends it.
fn split_arms(actions: &[Action], compiler: &Compiler<'_>, schema: &Schema) -> Vec<SplitArmPlan> {
    let mut upto = 0.0;
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Split(split) => Some(&split.arms),
            _ => None,
        })
        .flatten()
        .map(|arm| {
            upto += arm.share.value;
            SplitArmPlan {
                upto,
                variant: arm.variant.as_ref().map(|v| v.value.clone()),
                actions: ActionsPlan::new(&arm.actions, compiler, schema),
            }
        })
        .collect()
}

impl CampaignPlan {
    fn new(c: &Campaign, compiler: &Compiler<'_>, schema: &Schema) -> CampaignPlan {
        let zone = schema.campaign_zone(c);
        let at = |t: &DateTimeLit| instant(&t.value, zone).timestamp_millis();
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
            cap: c.cap,
            rate: c.rate,
            common: ActionsPlan::new(&c.actions, compiler, schema),
            split: split_arms(&c.actions, compiler, schema),
            task_load: TaskLoad::default(),
        }
    }

    /// Where this run starts for the campaign. Without `start`, the first run that sees the
    /// campaign begins it, and handles nothing before its own `now`.
    fn range(&self, tx: &Tx, now: Millis) -> Result<Range, StoreError> {
        let (begin, first) = match campaign_begin(tx, &self.name, self.start)? {
            Some(begun) => begun,
            None => {
                tx.set_progress(&self.name, "begin", &now.to_string())?;
                (now, now)
            }
        };
        let until: Option<Millis> = tx
            .progress(&self.name, "until")?
            .and_then(|v| v.parse().ok());
        let after = until.map_or(first, |until| until.max(first));
        let unless_recorded = match self.unless_signature() {
            Some(signature) => tx.progress(&self.name, UNLESS_PROGRESS)? == Some(signature),
            None => true,
        };
        Ok(Range {
            after,
            begin,
            unless_recorded,
        })
    }

    fn unless_signature(&self) -> Option<String> {
        match &self.trigger {
            TriggerPlan::Event(trigger) => trigger.unless_signature(),
            _ => None,
        }
    }

    /// The customer's occurrences in the range, before audience and exclusion.
    fn occurrences(
        &self,
        customer: &Customer,
        range: &Range,
        times: &[Millis],
        now: Millis,
    ) -> Vec<Occurrence> {
        self.trigger
            .occurrences_among(customer, range.begin, range.after, now, times)
    }

    /// Adds the customer attributes deciding and sending this campaign may read to `names`.
    fn attributes_read(&self, names: &mut HashSet<String>) {
        for cond in self.audience.iter().chain(&self.exclude) {
            estimate::attributes_read(cond, names);
        }
        self.trigger.attributes_read(names);
        for option in self.channels() {
            option.attributes_read(names);
        }
    }

    /// Every channel the campaign may send on, fallbacks and split arms included.
    fn channels(&self) -> impl Iterator<Item = &ChannelPlan> {
        let arms = self.split.iter().map(|arm| &arm.actions);
        let sends = std::iter::once(&self.common)
            .chain(arms)
            .flat_map(|a| &a.sends);
        sends.flat_map(|send| &send.options)
    }

    fn in_audience(&self, customer: &Customer, at: Millis) -> bool {
        self.audience.as_ref().is_none_or(|a| a.eval(customer, at))
            && !self.exclude.as_ref().is_some_and(|e| e.eval(customer, at))
    }

    /// The split arm the customer falls in; `None` when the campaign has no split.
    fn arm(&self, customer: &str) -> Option<&SplitArmPlan> {
        let point = split_point(&self.name, customer);
        // Shares that add up to a hair under 100 (33.3 × 3) leave the top to the last arm.
        self.split
            .iter()
            .find(|arm| point < arm.upto)
            .or(self.split.last())
    }

    /// The sends for a customer: the common ones, then those of its split arm.
    fn sends<'a>(&'a self, arm: Option<&'a SplitArmPlan>) -> impl Iterator<Item = &'a SendPlan> {
        let arm_sends = arm.map_or(&[][..], |arm| &arm.actions.sends[..]);
        self.common.sends.iter().chain(arm_sends)
    }

    /// `pace N per D`: the first slot at or after `due` in which the customer holds fewer than N
    /// deliveries of this campaign. `taken` is the slots held from some instant at or before
    /// `due` on, read from the store at the first call: a delivery only ever moves forward, so
    /// the slots read for its first due time cover every later one.
    fn paced(
        &self,
        tx: &Tx,
        customer: &Customer,
        due: Millis,
        zone: Tz,
        taken: &mut Option<Vec<(DateTime<Utc>, i64)>>,
    ) -> Result<Millis, StoreError> {
        let Some(pace) = self.pace else {
            return Ok(due);
        };
        let taken = match taken {
            Some(taken) => taken,
            None => taken.insert(tx.pace_slots_held(&self.name, &customer.id, to_time(due))?),
        };
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

    /// The due time before `rate`, `end` and caps: fire time → `wait` → out of quiet hours →
    /// `pace` slot, with each move noted in `reason`.
    fn due_time(
        &self,
        tx: &Tx,
        customer: &Customer,
        fired_at: Millis,
        reason: &mut Option<String>,
    ) -> Result<Millis, StoreError> {
        let zone = customer_zone(customer).unwrap_or(self.zone);
        let mut due = after_wait(fired_at, self.wait.as_ref(), zone);
        let mut taken = None;
        // A pace slot may fall inside quiet hours: the delivery then leaves them again and takes
        // the first free slot after. Both only move forward and a day has slots outside quiet
        // hours, so this ends; the bound is for a pathological pace (1 per 100d).
        for _ in 0..MAX_POLICY_MOVES {
            let quiet = match self.quiet {
                Some(quiet) => out_of_quiet(due, quiet.from.value, quiet.to.value, zone),
                None => due,
            };
            if quiet != due {
                note(reason, format!("moved by quiet hours from {}", show(due)));
            }
            let paced = self.paced(tx, customer, quiet, zone, &mut taken)?;
            if paced == quiet {
                return Ok(paced);
            }
            note(reason, format!("paced from {}", show(quiet)));
            due = paced;
        }
        Ok(due)
    }

    /// Decides one occurrence for one customer: records a candidate per send (queued, or expired
    /// when due after `end`), or the control group, and applies its tag actions. An occurrence
    /// the store has already recorded is left alone: that is what makes runs exactly-once.
    /// Returns whether the customer's tags changed.
    fn decide(
        &self,
        tx: &Tx,
        run: RunId,
        customer: &Customer,
        occurrence: &Occurrence,
    ) -> Result<bool, RunError> {
        if !self.in_audience(customer, occurrence.fired_at) {
            return Ok(false);
        }
        let arm = self.arm(&customer.id);
        let mut reason = None;
        let due = self.due_time(tx, customer, occurrence.fired_at, &mut reason)?;
        let candidate = Delivery {
            campaign: self.name.clone(),
            customer: customer.id.clone(),
            occurrence: String::new(),
            outcome: Outcome::Queued,
            channel: None,
            address: None,
            variant: arm.and_then(|arm| arm.variant.clone()),
            fired_at: to_time(occurrence.fired_at),
            due_at: to_time(due),
            content: occurrence
                .event
                .map(|i| json!({ "event": customer.events[i].properties.map() })),
            reason,
        };
        if arm.is_some_and(|arm| arm.variant.is_none()) {
            let mut control = Delivery {
                occurrence: format!("{}/control", occurrence.key),
                outcome: Outcome::Control,
                ..candidate.clone()
            };
            note(
                &mut control.reason,
                "in the control group: held out of the split".to_string(),
            );
            if !tx.record_delivery(run, control)? {
                return Ok(false);
            }
        }
        let sends = self.sends(arm).count();
        let mut candidate = Some(candidate);
        for index in 0..sends {
            // The last send takes the candidate itself rather than a copy.
            let base = match index + 1 == sends {
                true => candidate.take(),
                false => candidate.clone(),
            };
            let mut delivery = Delivery {
                occurrence: format!("{}/send{index}", occurrence.key),
                ..base.expect("taken by the last send only")
            };
            if let Some(end) = self.end.filter(|end| due > *end) {
                delivery.outcome = Outcome::Expired;
                note(&mut delivery.reason, after_end(due, end));
            }
            if !tx.record_delivery(run, delivery)? {
                // Handled by an earlier run (or round): nothing more to do for this occurrence.
                return Ok(false);
            }
        }
        let arm_tags = arm.map_or(&[][..], |arm| &arm.actions.tags[..]);
        let fired = to_time(occurrence.fired_at);
        let mut tags_changed = false;
        for (add, tag) in self.common.tags.iter().chain(arm_tags) {
            let recorded = if *add {
                tx.add_tag(&customer.id, tag, fired)?
            } else {
                tx.remove_tag(&customer.id, tag, fired)?
            };
            tags_changed |= recorded.is_some();
        }
        Ok(tags_changed)
    }

    /// Releases one queued delivery that has come due, through the rest of the pipeline: `rate`
    /// bucket → `end` → the campaign's cap → the policy's cap → the first reachable channel.
    /// `moved_from` is the due time a delivery had before full `rate` buckets pushed it back in
    /// this run (it is noted once, when the delivery is decided).
    fn release(
        &self,
        tx: &Tx,
        run: RunId,
        mut delivery: Delivery,
        moved_from: Option<Millis>,
        limits: &mut Limits,
        recent: &Recent,
    ) -> Result<Released, RunError> {
        let Some(send) = self.send_of(&delivery) else {
            // The rules changed under it; it stays queued.
            return Ok(Released::Decided(None));
        };
        let due = delivery.due_at.timestamp_millis();
        if let Some(rate) = self.rate {
            let (bucket, next) = calendar_bucket(due, rate.per, self.zone);
            if limits.rate_used(tx, &self.name, bucket, next)? >= rate.count.value {
                // The bucket is full: the delivery comes round again at the next one.
                delivery.due_at = to_time(next);
                let from = moved_from.unwrap_or(due);
                return match self.end.filter(|end| next > *end) {
                    Some(end) => {
                        self.note_moved(&mut delivery, from);
                        delivery.outcome = Outcome::Expired;
                        note(&mut delivery.reason, after_end(next, end));
                        tx.settle_delivery(run, &delivery)?;
                        Ok(Released::Decided(None))
                    }
                    None => Ok(Released::Moved(delivery, from)),
                };
            }
        }
        if let Some(from) = moved_from {
            self.note_moved(&mut delivery, from);
        }
        let capped = self.capped(tx, &delivery.customer, due, limits.policy_cap)?;
        if let Some(why) = capped {
            delivery.outcome = Outcome::Capped;
            note(&mut delivery.reason, why);
            tx.settle_delivery(run, &delivery)?;
            return Ok(Released::Decided(None));
        }
        let customer = recent.get(tx, &delivery.customer)?;
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
            &self.task_load,
        )?;
        if !tx.settle_delivery(run, &delivery)? {
            return Ok(Released::Decided(None));
        }
        self.task_load.count(tx, &self.name, send, sent.as_ref())?;
        if let (Some(_), Some(rate)) = (&sent, self.rate) {
            let (bucket, _) = calendar_bucket(due, rate.per, self.zone);
            limits.count_sent(&self.name, bucket);
        }
        Ok(Released::Decided(sent))
    }

    /// Notes in a delivery's reason that full `rate` buckets moved it from `from` to its due
    /// time.
    fn note_moved(&self, delivery: &mut Delivery, from: Millis) {
        if let Some(rate) = self.rate {
            let text = format!(
                "rate {} per {} reached: moved from {} to {}",
                rate.count.value,
                rate.per.name(),
                show(from),
                show(delivery.due_at.timestamp_millis())
            );
            note(&mut delivery.reason, text);
        }
    }

    /// Why a delivery due at `due` is dropped by the campaign's cap or the policy's: the
    /// customer already has N deliveries sent with due times in (due − D, due].
    fn capped(
        &self,
        tx: &Tx,
        customer: &str,
        due: Millis,
        policy_cap: Option<Cap>,
    ) -> Result<Option<String>, StoreError> {
        let caps = [
            (
                self.cap,
                Whose::CustomerIn(customer, &self.name),
                "the campaign's cap",
            ),
            (policy_cap, Whose::Customer(customer), "the policy's cap"),
        ];
        for (cap, whose, which) in caps {
            let Some(cap) = cap else { continue };
            let window = cap.per.seconds.saturating_mul(1000);
            let from = to_time(due.saturating_sub(window) + 1);
            let sent = tx.sent_between(whose, from, to_time(due + 1))?;
            if sent >= cap.count.value {
                return Ok(Some(format!(
                    "capped by {which} of {} per customer per {}: {sent} already sent in the {} before {}",
                    cap.count.value,
                    duration(cap.per.seconds),
                    duration(cap.per.seconds),
                    show(due)
                )));
            }
        }
        Ok(None)
    }

    /// The send a queued delivery belongs to, from its occurrence key (`…/send{index}`) and
    /// variant.
    fn send_of(&self, delivery: &Delivery) -> Option<&SendPlan> {
        let (_, index) = delivery.occurrence.rsplit_once("/send")?;
        let arm = self
            .split
            .iter()
            .find(|arm| arm.variant.is_some() && arm.variant == delivery.variant);
        self.sends(arm).nth(index.parse().ok()?)
    }
}

/// What releasing a queued delivery did.
enum Released {
    /// Sent (with what was emitted), or dropped, or left alone.
    Decided(Option<Emitted>),
    /// Pushed back by a full `rate` bucket to its new due time, from the due time it had at the
    /// start of the run: still queued.
    Moved(Delivery, Millis),
}

/// What `rate` and caps need across a run's release pass.
struct Limits {
    policy_cap: Option<Cap>,
    /// Deliveries sent per (campaign, rate bucket start), read from the store at a bucket's
    /// first use and then kept current.
    rate_buckets: HashMap<(String, Millis), u64>,
}

impl Limits {
    fn rate_used(
        &mut self,
        tx: &Tx,
        campaign: &str,
        bucket: Millis,
        next: Millis,
    ) -> Result<u64, StoreError> {
        let key = (campaign.to_string(), bucket);
        if let Some(used) = self.rate_buckets.get(&key) {
            return Ok(*used);
        }
        let used = tx.sent_between(Whose::Campaign(campaign), to_time(bucket), to_time(next))?;
        self.rate_buckets.insert(key, used);
        Ok(used)
    }

    fn count_sent(&mut self, campaign: &str, bucket: Millis) {
        if let Some(used) = self.rate_buckets.get_mut(&(campaign.to_string(), bucket)) {
            *used += 1;
        }
    }
}

/// How many queued deliveries the release pass reads at a time.
const QUEUE_PAGE: usize = 1024;

/// The third pass of a run: releases the queued deliveries due by `now`, in (due time,
/// campaign, customer) order — the order `rate` and the policy's cap take them in.
fn release_due(
    tx: &Tx,
    run: RunId,
    plans: &Plans,
    now: Millis,
    recent: &Recent,
    sink: &mut dyn FnMut(Emitted) -> std::io::Result<()>,
) -> Result<usize, RunError> {
    let by_name: HashMap<&str, &CampaignPlan> = plans
        .campaigns
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut limits = Limits {
        policy_cap: plans.policy_cap,
        rate_buckets: HashMap::new(),
    };
    let mut sent = 0;
    // Deliveries that full `rate` buckets pushed back to a time this run still reaches wait here,
    // in memory, merged with the stored queue in key order: a mass send pushed through many
    // buckets costs no store writes until each delivery is decided.
    let mut pushed: BTreeMap<QueueKey, (Delivery, Millis)> = BTreeMap::new();
    let mut page: VecDeque<(QueueKey, Delivery)> = VecDeque::new();
    let mut after = QueueKey::start();
    let mut stored_left = true;
    loop {
        if page.is_empty() && stored_left {
            page = tx.queued_page(to_time(now), &after, QUEUE_PAGE)?.into();
            let customers = page.iter().map(|(_, d)| d.customer.as_str());
            recent.read_page(tx, customers, &plans.attributes)?;
            match page.back() {
                Some((last, _)) => after = last.clone(),
                None => stored_left = false,
            }
        }
        let take_pushed = match (pushed.first_key_value(), page.front()) {
            (Some((pushed_key, _)), Some((stored_key, _))) => pushed_key < stored_key,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (key, delivery, moved_from) = if take_pushed {
            let (key, (delivery, from)) = pushed.pop_first().expect("checked above");
            (key, delivery, Some(from))
        } else {
            let (key, delivery) = page.pop_front().expect("checked above");
            (key, delivery, None)
        };
        // A paused or removed campaign's queue waits for it.
        let Some(campaign) = by_name.get(delivery.campaign.as_str()) else {
            continue;
        };
        match campaign.release(tx, run, delivery, moved_from, &mut limits, recent)? {
            Released::Decided(None) => {}
            Released::Decided(Some(emitted)) => {
                sink(emitted)?;
                sent += 1;
            }
            Released::Moved(delivery, from) if delivery.due_at.timestamp_millis() <= now => {
                pushed.insert(key.moved_to(delivery.due_at), (delivery, from));
            }
            Released::Moved(mut delivery, from) => {
                // Beyond this run: stored with its new due time, for a later run.
                campaign.note_moved(&mut delivery, from);
                tx.settle_delivery(run, &delivery)?;
            }
        }
    }
    Ok(sent)
}

impl SendPlan {
    /// Whether `channel`, one of this send's, goes through an employee (moments, tasks).
    fn through_employee(&self, channel: &str) -> bool {
        self.options
            .iter()
            .any(|option| option.name == channel && option.kind.through_employee())
    }

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
        let to = if option.kind.through_employee() {
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
        } else {
            address
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

    /// Adds the customer attributes choosing and filling this channel may read to `names`.
    fn attributes_read(&self, names: &mut HashSet<String>) {
        names.extend(self.address.clone());
        if let Some(reachable) = &self.reachable {
            estimate::attributes_read(reachable, names);
        }
        let parts = self.content.parts.iter().map(|part| &part.value);
        for text in self.content.lead.iter().chain(parts) {
            template_attributes(&text.value, names);
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

/// A stored customer and its events, as evaluation reads them. The events are moved, not
/// copied: whole-audience passes read every event of the store.
pub fn to_customer(stored: &store::Customer, events: Vec<store::Event>) -> Customer {
    Customer {
        id: stored.id.clone(),
        attributes: serde_json::from_str(&stored.attributes).unwrap_or_default(),
        tags: stored.tags.iter().cloned().collect(),
        events: events.into_iter().map(to_event).collect(),
    }
}

/// A stored event as evaluation reads it.
fn to_event(event: store::Event) -> Event {
    Event {
        id: event.id,
        name: event.name.into(),
        at: event.at.timestamp_millis(),
        properties: Properties::new(event.properties),
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
    customer
        .attributes
        .get(ZONE_ATTRIBUTE)?
        .as_str()?
        .parse()
        .ok()
}

/// The attribute holding a customer's own time zone.
const ZONE_ATTRIBUTE: &str = "timezone";

fn after_end(due: Millis, end: Millis) -> String {
    format!(
        "expired: due at {}, after the campaign's end at {}",
        show(due),
        show(end)
    )
}

fn show(ms: Millis) -> String {
    to_time(ms).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn counts_are_written_with_thousands_grouped() {
        let written: Vec<String> = [0, 1, 999, 1_000, 10_257, 1_234_567]
            .into_iter()
            .map(|n| counted(n, "customer", "customers"))
            .collect();
        assert_eq!(
            written,
            [
                "0 customers",
                "1 customer",
                "999 customers",
                "1,000 customers",
                "10,257 customers",
                "1,234,567 customers"
            ]
        );
    }
}
