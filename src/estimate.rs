//! Audience estimates (seed 002's "audience estimate", seed 001's live counts while editing).
//!
//! One pass over all customers evaluates every campaign per customer: for each top-level `and`
//! clause of the audience, how many customers pass it alone and how many pass it together with
//! every clause before it (the funnel), then how many of those `exclude` removes.

use std::collections::HashSet;
use std::sync::mpsc::{channel, sync_channel};
use std::thread;

use chrono_tz::Tz;
use serde::Serialize;

use crate::ast::{Campaign, Expr, ExprKind};
use crate::eval::{Compiler, Cond, Customer, Millis, Source};
use crate::store::{Attributes, Events, Scanned, StoreError, Tx};

/// A campaign's audience, compiled for counting.
pub struct AudiencePlan {
    pub campaign: String,
    clauses: Vec<(String, Cond)>,
    exclude: Option<(String, Cond)>,
}

/// Whether `cond` reads any customer attribute.
pub(crate) fn reads_attributes(cond: &Cond) -> bool {
    let mut names = HashSet::new();
    attributes_read(cond, &mut names);
    !names.is_empty()
}

impl AudiencePlan {
    pub fn new(compiler: &Compiler<'_>, campaign: &Campaign, zone: Tz) -> AudiencePlan {
        let clauses = match &campaign.audience {
            Some(audience) => conjuncts(audience)
                .into_iter()
                .map(|clause| (clause.to_string(), compiler.compile_in(clause, zone)))
                .collect(),
            None => Vec::new(),
        };
        let exclude = campaign
            .exclude
            .as_ref()
            .map(|e| (e.to_string(), compiler.compile_in(e, zone)));
        AudiencePlan {
            campaign: campaign.name.value.clone(),
            clauses,
            exclude,
        }
    }
}

impl AudiencePlan {
    /// Adds the customer attributes the plan reads to `names`: a whole-audience pass parses
    /// only those.
    pub fn attributes(&self, names: &mut HashSet<String>) {
        for cond in self.conds() {
            attributes_read(cond, names);
        }
    }

    /// Adds the names of the events the plan counts to `names`: a whole-audience pass fills
    /// in only those.
    pub fn event_names(&self, names: &mut HashSet<String>) {
        for cond in self.conds() {
            cond.event_names(&mut |name| {
                names.insert(name.to_owned());
            });
        }
    }

    fn conds(&self) -> impl Iterator<Item = &Cond> {
        self.clauses
            .iter()
            .chain(&self.exclude)
            .map(|(_, cond)| cond)
    }
}

/// Adds the customer attributes `cond` reads to `names`.
pub(crate) fn attributes_read(cond: &Cond, names: &mut HashSet<String>) {
    match cond {
        Cond::Const(_) | Cond::HasTag(_) => {}
        Cond::And(a, b) | Cond::Or(a, b) => {
            attributes_read(a, names);
            attributes_read(b, names);
        }
        Cond::Not(inner) => attributes_read(inner, names),
        Cond::Did(did) => {
            if let Some(filter) = &did.filter {
                attributes_read(filter, names);
            }
        }
        Cond::Test {
            source: Source::Attribute(name),
            ..
        } => {
            names.insert(name.clone());
        }
        Cond::Test { .. } => {}
    }
}

/// The top-level `and` clauses of an expression, in order.
pub fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    operands(expr, |kind| match kind {
        ExprKind::And(a, b) => Some((a, b)),
        _ => None,
    })
}

/// The top-level `or` alternatives of an expression, in order.
pub fn disjuncts(expr: &Expr) -> Vec<&Expr> {
    operands(expr, |kind| match kind {
        ExprKind::Or(a, b) => Some((a, b)),
        _ => None,
    })
}

/// The operands of a chain of one binary operator (`a and b and c`), however it nests.
fn operands<'e>(
    expr: &'e Expr,
    split: fn(&'e ExprKind) -> Option<(&'e Expr, &'e Expr)>,
) -> Vec<&'e Expr> {
    match split(&expr.kind) {
        Some((a, b)) => {
            let mut clauses = operands(a, split);
            clauses.extend(operands(b, split));
            clauses
        }
        None => vec![expr],
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub campaign: String,
    /// Every customer in the store.
    pub customers: u64,
    pub clauses: Vec<ClauseCount>,
    pub exclude: Option<ClauseCount>,
    /// In the audience and not excluded.
    pub audience: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClauseCount {
    pub clause: String,
    /// Customers for whom this clause holds.
    pub alone: u64,
    /// Customers for whom this clause and every clause before it hold (for `exclude`: how many
    /// of the audience it removes).
    pub cumulative: u64,
}

/// Counts every plan's funnel at instant `at` in one pass over `customers`.
pub fn estimate(
    plans: &[AudiencePlan],
    customers: impl IntoIterator<Item = Customer>,
    at: Millis,
) -> Vec<Estimate> {
    let mut counts = Counts::new(plans, at);
    for customer in customers {
        counts.add(&customer);
    }
    counts.finish()
}

/// Customers handed from the reading thread to the counting thread at a time.
///
/// Small on purpose: the customers in flight are refilled in place, so every one of them is
/// memory both threads go through again and again, and it should stay in the cores' caches.
/// With 256 a handover and 4 in flight (~1,800 customers, several MB) the estimate of the
/// benchmark's 1M customers took 8.7–9.1 s; with 32 and 1 (~100 customers), 4.0–4.8 s on the
/// same store in the same minutes, the work done unchanged (session 10, `benches/store.rs`).
const HANDOVER: usize = 32;
/// Handovers queued for the counter besides the one it counts and the one being filled.
const IN_FLIGHT: usize = 1;

/// Counts every plan's funnel at instant `at` over every customer of the store, in one pass.
///
/// Reading (SQLite, decoding histories) and evaluating cost about the same, so they run on two
/// threads: this one reads customers into batches, the other parses their attributes (only
/// those the plans read), counts them and sends the batches back, whose customers are then
/// refilled in place (strings and all), so next to nothing is allocated per customer or per
/// event once the pipeline is primed.
pub fn estimate_store(
    tx: &Tx,
    plans: &[AudiencePlan],
    at: Millis,
) -> Result<Vec<Estimate>, StoreError> {
    let (mut attributes, mut events) = (HashSet::new(), HashSet::new());
    for plan in plans {
        plan.attributes(&mut attributes);
        plan.event_names(&mut events);
    }
    let attributes: Vec<String> = attributes.into_iter().collect();
    let (to_counter, batches) = sync_channel::<Vec<Scanned>>(IN_FLIGHT);
    let (recycler, recycled) = channel::<Vec<Scanned>>();
    let attributes = &attributes;
    thread::scope(|scope| {
        let counter = scope.spawn(move || {
            let mut counts = Counts::new(plans, at);
            for mut batch in batches {
                for scanned in &mut batch {
                    scanned.parse_attributes(Attributes::Only(attributes));
                    counts.add(&scanned.customer);
                }
                // The reader may have finished: then the batch is simply dropped.
                let _ = recycler.send(batch);
            }
            counts.finish()
        });
        let mut batch = Vec::with_capacity(HANDOVER);
        let mut spare: Vec<Scanned> = Vec::new();
        let read = tx.for_each_evaluated(Events::Named(&events), |customer| {
            // Hand the filled customer over; the store refills an old one's buffers next.
            let mut filled = spare.pop().unwrap_or_default();
            std::mem::swap(customer, &mut filled);
            batch.push(filled);
            if batch.len() == HANDOVER {
                let next = match recycled.try_recv() {
                    Ok(mut old) => {
                        spare.append(&mut old);
                        old
                    }
                    Err(_) => Vec::with_capacity(HANDOVER),
                };
                // The counter only stops when this side hangs up.
                let _ = to_counter.send(std::mem::replace(&mut batch, next));
            }
            Ok::<_, StoreError>(())
        });
        if !batch.is_empty() {
            let _ = to_counter.send(batch);
        }
        drop(to_counter);
        let results = counter
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read.map(|()| results)
    })
}

/// Funnels being counted, one customer at a time (the store streams customers to a callback).
pub struct Counts<'p> {
    plans: &'p [AudiencePlan],
    results: Vec<Estimate>,
    at: Millis,
}

impl<'p> Counts<'p> {
    pub fn new(plans: &'p [AudiencePlan], at: Millis) -> Counts<'p> {
        let zero = |clause: &String| ClauseCount {
            clause: clause.clone(),
            alone: 0,
            cumulative: 0,
        };
        let results = plans
            .iter()
            .map(|plan| Estimate {
                campaign: plan.campaign.clone(),
                customers: 0,
                clauses: plan
                    .clauses
                    .iter()
                    .map(|(clause, _)| zero(clause))
                    .collect(),
                exclude: plan.exclude.as_ref().map(|(clause, _)| zero(clause)),
                audience: 0,
            })
            .collect();
        Counts { plans, results, at }
    }

    pub fn add(&mut self, customer: &Customer) {
        for (plan, result) in self.plans.iter().zip(self.results.iter_mut()) {
            count_customer(plan, result, customer, self.at);
        }
    }

    pub fn finish(self) -> Vec<Estimate> {
        self.results
    }
}

fn count_customer(plan: &AudiencePlan, result: &mut Estimate, customer: &Customer, at: Millis) {
    result.customers += 1;
    let mut in_audience = true;
    for ((_, cond), count) in plan.clauses.iter().zip(result.clauses.iter_mut()) {
        let holds = cond.eval(customer, at);
        count.alone += u64::from(holds);
        in_audience &= holds;
        count.cumulative += u64::from(in_audience);
    }
    let excluded = match (&plan.exclude, result.exclude.as_mut()) {
        (Some((_, cond)), Some(count)) => {
            let holds = cond.eval(customer, at);
            count.alone += u64::from(holds);
            count.cumulative += u64::from(holds && in_audience);
            holds
        }
        _ => false,
    };
    result.audience += u64::from(in_audience && !excluded);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Item;
    use crate::check::CheckOptions;
    use crate::eval::Event;

    fn plan_and_customers() -> (Vec<AudiencePlan>, Vec<Customer>) {
        let mut sources = crate::project::Sources::default();
        sources.add(
            "a.nudge",
            r#"customer { age: number }
               event purchase
               campaign "c" {
                 audience customer.age >= 18 and did purchase and has tag "VIP"
                 exclude has tag "投诉客户"
                 trigger at 2027-01-01 10:00
                 send task "call" assign ["alice"]
               }"#,
        );
        let now = "2026-11-21T00:00:00Z".parse().unwrap();
        let project = crate::project::analyze(sources, &CheckOptions { now });
        assert!(project.errors() == 0, "{:#?}", project.diagnostics);
        let schema = project.schema();
        let compiler = Compiler::new(&schema, &project.modules);
        let plans = project.modules[0]
            .1
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Campaign(c) => Some(AudiencePlan::new(&compiler, c, Tz::UTC)),
                _ => None,
            })
            .collect();
        let person = |age: u32, bought: bool, tags: &[&str]| Customer {
            id: format!("c{age}"),
            attributes: serde_json::json!({ "age": age })
                .as_object()
                .unwrap()
                .clone(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            events: if bought {
                vec![Event {
                    id: 1,
                    name: "purchase".into(),
                    at: 0,
                    properties: Default::default(),
                }]
            } else {
                Vec::new()
            },
        };
        let customers = vec![
            person(30, true, &["VIP"]),
            person(31, true, &["VIP", "投诉客户"]),
            person(17, true, &["VIP"]),
            person(40, false, &["VIP"]),
            person(50, true, &[]),
        ];
        (plans, customers)
    }

    #[test]
    fn plans_name_the_attributes_they_read() {
        let (plans, _) = plan_and_customers();
        let mut names = HashSet::new();
        plans[0].attributes(&mut names);
        assert_eq!(names, HashSet::from(["age".to_string()]));
        let mut events = HashSet::new();
        plans[0].event_names(&mut events);
        assert_eq!(events, HashSet::from(["purchase".to_string()]));
    }

    #[test]
    fn funnel_counts_alone_and_cumulative() {
        let (plans, customers) = plan_and_customers();
        let [result] = estimate(&plans, customers, 1_000).try_into().unwrap();
        let counts: Vec<(u64, u64)> = result
            .clauses
            .iter()
            .map(|c| (c.alone, c.cumulative))
            .collect();
        assert_eq!(counts, vec![(4, 4), (4, 3), (4, 2)]);
        assert_eq!(result.clauses[1].clause, "did purchase");
        let exclude = result.exclude.unwrap();
        assert_eq!((exclude.alone, exclude.cumulative), (1, 1));
        assert_eq!((result.customers, result.audience), (5, 1));
    }

    /// Customers `0..n` of a shop whose attributes, tags and purchases vary from one to the
    /// next, so that a customer refilled in place shows any trace of the one before.
    fn varied_customer(i: usize) -> Customer {
        let mut attributes = serde_json::Map::new();
        if !i.is_multiple_of(3) {
            attributes.insert("age".into(), (10 + i % 40).into());
        }
        let tags = [
            ("VIP", i.is_multiple_of(2)),
            ("投诉客户", i.is_multiple_of(5)),
        ];
        Customer {
            id: format!("c{i:04}"),
            attributes,
            tags: tags
                .iter()
                .filter(|(_, held)| *held)
                .map(|(tag, _)| tag.to_string())
                .collect(),
            // Views, which no audience counts, between the purchases: the pass leaves them out.
            events: (0..2 * (i % 4))
                .map(|n| Event {
                    id: n as i64,
                    name: ["view", "purchase"][n % 2].into(),
                    at: 60_000 * n as Millis,
                    properties: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_store_pass_counts_what_counting_each_customer_counts() {
        // Several handovers between the threads and a partial last one: batches go back and
        // forth and their customers are refilled with others.
        let (plans, _) = plan_and_customers();
        let customers: Vec<Customer> = (0..5 * HANDOVER + 7).map(varied_customer).collect();
        let mut store = crate::store::Store::open_in_memory().unwrap();
        let at = |millis| chrono::DateTime::from_timestamp_millis(millis).unwrap();
        store
            .transaction(|tx| {
                for customer in &customers {
                    tx.upsert_customer(&customer.id, &customer.attributes)?;
                    for tag in &customer.tags {
                        tx.add_tag(&customer.id, tag, at(0))?;
                    }
                    for event in &customer.events {
                        tx.add_event(&crate::store::NewEvent {
                            customer: &customer.id,
                            name: &event.name,
                            at: at(event.at),
                            properties: "{}",
                        })?;
                    }
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let expected = estimate(&plans, customers, 3_600_000);
        assert_eq!(expected[0].audience, 17, "some customers are in, most not");
        let counted = store
            .scratch(|tx| estimate_store(tx, &plans, 3_600_000))
            .unwrap();
        assert_eq!(counted, expected);
    }
}
