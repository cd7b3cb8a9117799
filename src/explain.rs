//! Why did (or didn't) this customer get this campaign? (LANGUAGE.md §8, `nudge explain`.)
//!
//! For one customer and one campaign:
//! - the `audience` and `exclude` expressions as trees of clauses, each evaluated on its own at
//!   one instant, with the value it saw (a count of events, an attribute, a tag);
//! - the trigger's occurrences for the customer, each with whether the audience admitted the
//!   customer when it fired and what the store recorded for it;
//! - the history of outcomes the store recorded, with their reasons, as stored.
//!
//! Every leaf is compiled and evaluated by [`crate::eval`], exactly as a run does, so the tree
//! cannot disagree with the interpreter; `and` / `or` / `not` combine their children's values.
//! Reading only: the store is never changed.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value as Json;

use crate::ast::{Campaign, Expr, ExprKind, Status, Subject};
use crate::check::instant;
use crate::eval::{Compiler, Cond, Customer, Millis};
use crate::project::Project;
use crate::run::campaign_begin;
use crate::store::{rfc3339, Delivery, Store, StoreError, Tx};
use crate::trigger::{Occurrence, TriggerPlan};

/// How many of the latest trigger occurrences an explanation lists (a daily schedule over a
/// year has hundreds; the latest say what is going on).
pub const LISTED_OCCURRENCES: usize = 20;

/// Everything `nudge explain` tells about one customer and one campaign.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    pub campaign: String,
    pub customer: String,
    /// The instant the clauses are evaluated at (RFC 3339, UTC).
    pub at: String,
    pub at_from: AtFrom,
    /// `active`, `draft` or `paused`: only active campaigns fire.
    pub status: &'static str,
    pub audience: Option<Node>,
    pub exclude: Option<Node>,
    /// The audience holds (or there is none) and `exclude` does not, at `at`.
    pub in_audience: bool,
    pub trigger: Option<TriggerReport>,
    /// Every outcome recorded for this customer and campaign, by due time.
    pub history: Vec<HistoryEntry>,
}

/// Where the instant of an explanation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AtFrom {
    /// Given by the caller (`--at`).
    Given,
    /// The `now` of the store's last run: the state its history reflects.
    LastRun,
    /// The clock: the store has never been run.
    Clock,
}

/// One clause of an expression, evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    /// The clause as source text (the printer's).
    pub text: String,
    pub holds: bool,
    #[serde(flatten)]
    pub detail: Detail,
}

/// What a clause is, with the value it saw. `and` / `or` chains are flattened (`a and b and c`
/// has three children); `not` has one child; a segment has one, its definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    And {
        children: Vec<Node>,
    },
    Or {
        children: Vec<Node>,
    },
    Not {
        children: Vec<Node>,
    },
    Segment {
        name: String,
        children: Vec<Node>,
    },
    /// `has tag "X"`: whether the customer has the tag.
    HasTag {
        has: bool,
    },
    /// `did …`: how many of the customer's events match, in the window.
    Did {
        count: u64,
    },
    /// A test of a customer attribute: the stored value (`null` when not set).
    Attribute {
        name: String,
        value: Json,
    },
    /// `true` or `false`.
    Constant,
}

impl Node {
    /// The clauses this one is made of (empty for a leaf).
    pub fn children(&self) -> &[Node] {
        match &self.detail {
            Detail::And { children }
            | Detail::Or { children }
            | Detail::Not { children }
            | Detail::Segment { children, .. } => children,
            _ => &[],
        }
    }
}

/// The campaign's trigger and its occurrences for the customer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TriggerReport {
    /// The trigger as written (`on order where amount > 100`).
    pub text: String,
    /// Where the campaign's occurrences begin: its `start`, else the first run that saw it;
    /// `None` when neither exists yet (the campaign has not begun).
    pub begins: Option<String>,
    /// How far runs have handled the campaign's occurrences (the last run's `now`).
    pub handled_until: Option<String>,
    /// The latest occurrences up to `at` (at most [`LISTED_OCCURRENCES`]), oldest first.
    pub occurrences: Vec<OccurrenceReport>,
    /// How many earlier occurrences are not listed.
    pub earlier: usize,
}

/// One firing of the trigger for the customer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OccurrenceReport {
    /// The store's key of the occurrence (`event:<id>`, `at:<ms>`).
    pub key: String,
    pub fired_at: String,
    /// The event that fired it, for event triggers.
    pub event: Option<EventRef>,
    /// Whether the audience held at the fire time (true without `audience`).
    pub audience: bool,
    /// Whether `exclude` held at the fire time.
    pub excluded: bool,
    /// Whether a run has reached the fire time.
    pub handled: bool,
    /// The outcomes recorded for it, one per `send` (see `history` for the details).
    pub outcomes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRef {
    pub id: i64,
    pub name: String,
    pub at: String,
}

/// One recorded outcome, as the store has it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub occurrence: String,
    /// `sent`, `queued`, `expired`, `unreachable`, … as stored.
    pub outcome: String,
    pub channel: Option<String>,
    /// The address used; for `moments` and `task`, the employee.
    pub address: Option<String>,
    pub variant: Option<String>,
    pub fired_at: String,
    pub due_at: String,
    /// Why, in the interpreter's words (quiet hours, pace, end, reachability…).
    pub reason: Option<String>,
}

impl From<&Delivery> for HistoryEntry {
    fn from(d: &Delivery) -> HistoryEntry {
        HistoryEntry {
            occurrence: d.occurrence.clone(),
            outcome: d.outcome.as_str().to_string(),
            channel: d.channel.clone(),
            address: d.address.clone(),
            variant: d.variant.clone(),
            fired_at: rfc3339(d.fired_at),
            due_at: rfc3339(d.due_at),
            reason: d.reason.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no campaign is named `{name}`")]
    UnknownCampaign {
        name: String,
        /// "did you mean `…`?" when a campaign's name is close.
        help: Option<String>,
    },
    #[error("no customer has the id `{0}`")]
    UnknownCustomer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Explains `campaign` for customer `customer` of a checked project (no errors), at `at`, or
/// by default at the store's last run (else the clock).
pub fn explain(
    project: &Project,
    store: &mut Store,
    campaign: &str,
    customer: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Explanation, ExplainError> {
    let (file, campaign) = find_campaign(project, campaign)?;
    let schema = project.schema();
    let compiler = Compiler::new(&schema, &project.modules);
    let trigger_text = campaign.trigger.as_ref().map(|t| {
        let text = &project.sources.get(file).text;
        text.get(t.span.start..t.span.end).unwrap_or("").to_string()
    });
    // A rolled-back transaction: one consistent snapshot, and nothing written.
    store.scratch(|tx| {
        let stored = tx
            .customer(customer)?
            .ok_or_else(|| ExplainError::UnknownCustomer(customer.to_string()))?;
        let events = tx.events_for_customer(customer, ..)?;
        let customer = crate::run::to_customer(&stored, events);
        let (at, at_from) = match at {
            Some(at) => (at, AtFrom::Given),
            None => match tx.last_run_now()? {
                Some(last) => (last, AtFrom::LastRun),
                None => (Utc::now(), AtFrom::Clock),
            },
        };
        let view = CampaignView {
            campaign,
            compiler: &compiler,
            zone: schema.campaign_zone(campaign),
            customer: &customer,
        };
        let verdict = view.verdict(at.timestamp_millis());
        let history: Vec<Delivery> = tx
            .deliveries_for_customer(&customer.id)?
            .into_iter()
            .filter(|d| d.campaign == campaign.name.value)
            .collect();
        let trigger = match trigger_text {
            Some(text) => Some(view.trigger(tx, text, at.timestamp_millis(), &history)?),
            None => None,
        };
        Ok(Explanation {
            campaign: campaign.name.value.clone(),
            customer: customer.id.clone(),
            at: rfc3339(at),
            at_from,
            status: status_name(campaign.status),
            in_audience: verdict.admits(),
            audience: verdict.audience,
            exclude: verdict.exclude,
            trigger,
            history: history.iter().map(HistoryEntry::from).collect(),
        })
    })
}

/// The campaign named `name`, with the file it is in; an unknown name suggests a close one.
fn find_campaign<'p>(
    project: &'p Project,
    name: &str,
) -> Result<(crate::ast::FileId, &'p Campaign), ExplainError> {
    let found = project.modules.iter().find_map(|(file, module)| {
        module.items.iter().find_map(|item| match item {
            crate::ast::Item::Campaign(c) if c.name.value == name => Some((*file, &**c)),
            _ => None,
        })
    });
    found.ok_or_else(|| ExplainError::UnknownCampaign {
        name: name.to_string(),
        help: crate::diagnostics::did_you_mean(
            name,
            project.campaigns().map(|c| c.name.value.as_str()),
        ),
    })
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Draft => "draft",
        Status::Active => "active",
        Status::Paused => "paused",
    }
}

/// The audience and exclusion of a campaign, evaluated at one instant.
struct Verdict {
    audience: Option<Node>,
    exclude: Option<Node>,
}

impl Verdict {
    /// In the audience (a campaign without one targets everyone) and not excluded.
    fn admits(&self) -> bool {
        self.audience.as_ref().is_none_or(|a| a.holds)
            && !self.exclude.as_ref().is_some_and(|e| e.holds)
    }
}

/// One campaign as seen by one customer.
struct CampaignView<'a> {
    campaign: &'a Campaign,
    compiler: &'a Compiler<'a>,
    /// The campaign's time zone, for its own date-times.
    zone: Tz,
    customer: &'a Customer,
}

impl CampaignView<'_> {
    fn verdict(&self, at: Millis) -> Verdict {
        let tree = |expr: &Expr| explain_expr(self.compiler, expr, self.zone, self.customer, at);
        Verdict {
            audience: self.campaign.audience.as_ref().map(tree),
            exclude: self.campaign.exclude.as_ref().map(tree),
        }
    }

    /// The trigger's occurrences for the customer up to `at`, matched with what the store
    /// recorded for each.
    fn trigger(
        &self,
        tx: &Tx,
        text: String,
        at: Millis,
        history: &[Delivery],
    ) -> Result<TriggerReport, StoreError> {
        let name = &self.campaign.name.value;
        let read = |key| -> Result<Option<Millis>, StoreError> {
            Ok(tx.progress(name, key)?.and_then(|v| v.parse().ok()))
        };
        let start = self
            .campaign
            .start
            .as_ref()
            .map(|t| instant(&t.value, self.zone).timestamp_millis());
        let begun = campaign_begin(tx, name, start)?;
        let handled_until = read("until")?;
        let occurrences = match (begun, &self.campaign.trigger) {
            (Some((begin, after)), Some(trigger)) => TriggerPlan::new(
                &trigger.kind,
                self.compiler,
                self.zone,
            )
            .occurrences(self.customer, begin, after, at),
            _ => Vec::new(),
        };
        let earlier = occurrences.len().saturating_sub(LISTED_OCCURRENCES);
        Ok(TriggerReport {
            text,
            begins: begun.map(|(begin, _)| show(begin)),
            handled_until: handled_until.map(show),
            occurrences: occurrences[earlier..]
                .iter()
                .map(|o| self.occurrence(o, handled_until, history))
                .collect(),
            earlier,
        })
    }

    fn occurrence(
        &self,
        occurrence: &Occurrence,
        handled_until: Option<Millis>,
        history: &[Delivery],
    ) -> OccurrenceReport {
        let verdict = self.verdict(occurrence.fired_at);
        // Stored occurrences are the trigger's key plus which `send` (`event:17/send0`).
        let recorded = |d: &&Delivery| {
            d.occurrence
                .strip_prefix(occurrence.key.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        };
        OccurrenceReport {
            key: occurrence.key.clone(),
            fired_at: show(occurrence.fired_at),
            event: occurrence
                .event
                .and_then(|i| self.customer.events.get(i))
                .map(|e| EventRef {
                    id: e.id,
                    name: e.name.to_string(),
                    at: show(e.at),
                }),
            audience: verdict.audience.as_ref().is_none_or(|a| a.holds),
            excluded: verdict.exclude.as_ref().is_some_and(|e| e.holds),
            handled: handled_until.is_some_and(|until| occurrence.fired_at <= until),
            outcomes: history
                .iter()
                .filter(recorded)
                .map(|d| d.outcome.as_str().to_string())
                .collect(),
        }
    }
}

/// An expression as a tree of evaluated clauses, for `customer` at `at`. `zone` is the zone of
/// the expression's own date-times written without an offset (the campaign's); segments are
/// expanded in the project's zone, as the interpreter reads them.
pub fn explain_expr(
    compiler: &Compiler<'_>,
    expr: &Expr,
    zone: Tz,
    customer: &Customer,
    at: Millis,
) -> Node {
    let node = |detail: Detail, holds: bool| Node {
        text: expr.to_string(),
        holds,
        detail,
    };
    let subtree = |e: &Expr| explain_expr(compiler, e, zone, customer, at);
    match &expr.kind {
        ExprKind::And(..) => {
            let children: Vec<Node> = crate::estimate::conjuncts(expr)
                .into_iter()
                .map(subtree)
                .collect();
            let holds = children.iter().all(|c| c.holds);
            node(Detail::And { children }, holds)
        }
        ExprKind::Or(..) => {
            let children: Vec<Node> = crate::estimate::disjuncts(expr)
                .into_iter()
                .map(subtree)
                .collect();
            let holds = children.iter().any(|c| c.holds);
            node(Detail::Or { children }, holds)
        }
        ExprKind::Not(inner) => {
            let child = subtree(inner);
            let holds = !child.holds;
            node(
                Detail::Not {
                    children: vec![child],
                },
                holds,
            )
        }
        ExprKind::Name(name) => match compiler.segment(&name.name) {
            Some(definition) => {
                let child =
                    explain_expr(compiler, definition, compiler.project_zone(), customer, at);
                let holds = child.holds;
                let name = name.name.clone();
                node(
                    Detail::Segment {
                        name,
                        children: vec![child],
                    },
                    holds,
                )
            }
            None => leaf(compiler, expr, zone, customer, at),
        },
        _ => leaf(compiler, expr, zone, customer, at),
    }
}

/// A clause without sub-clauses: compiled and evaluated as a run would, with what it saw.
fn leaf(compiler: &Compiler<'_>, expr: &Expr, zone: Tz, customer: &Customer, at: Millis) -> Node {
    let cond = compiler.compile_in(expr, zone);
    let detail = match (&expr.kind, &cond) {
        (ExprKind::HasTag(tag), _) => Detail::HasTag {
            has: customer.tags.contains(&tag.value),
        },
        (_, Cond::Did(did)) => Detail::Did {
            count: did.count_at(customer, at),
        },
        (
            ExprKind::Test {
                subject: Subject::Attr(attr),
                ..
            },
            _,
        ) => Detail::Attribute {
            name: attr.name.name.clone(),
            value: customer
                .attributes
                .get(&attr.name.name)
                .cloned()
                .unwrap_or(Json::Null),
        },
        _ => Detail::Constant,
    };
    Node {
        text: expr.to_string(),
        holds: cond.eval(customer, at),
        detail,
    }
}

fn show(ms: Millis) -> String {
    rfc3339(crate::eval::to_time(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckOptions;
    use crate::eval::Event;

    /// A checked project with one campaign `c` whose audience is `audience`, in Shanghai time
    /// (the policy is UTC), so that local date-times of the campaign and of segments differ.
    fn project(audience: &str) -> Project {
        let mut sources = crate::project::Sources::default();
        sources.add(
            "a.nudge",
            format!(
                r#"customer {{ age: number  city: text?  vip: bool }}
                   event buy {{ amount: number }}
                   event share
                   segment big = did buy where amount > 100 since 2026-03-01 08:00
                   segment fans = has tag "fan" or not did share
                   campaign "c" {{
                     timezone "Asia/Shanghai"
                     audience {audience}
                     trigger on buy
                     send task "call" assign ["a"]
                   }}"#
            ),
        );
        let now = "2026-11-21T00:00:00Z".parse().unwrap();
        let project = crate::project::analyze(sources, &CheckOptions { now });
        assert_eq!(project.errors(), 0, "{:#?}", project.diagnostics);
        project
    }

    fn customer(tags: &[&str], buys: &[(Millis, f64)]) -> Customer {
        Customer {
            id: "x".into(),
            attributes: serde_json::json!({"age": 30, "vip": false})
                .as_object()
                .unwrap()
                .clone(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            events: buys
                .iter()
                .enumerate()
                .map(|(i, (at, amount))| Event {
                    id: i as i64,
                    name: "buy".into(),
                    at: *at,
                    properties: serde_json::json!({ "amount": amount })
                        .as_object()
                        .unwrap()
                        .clone()
                        .into(),
                })
                .collect(),
        }
    }

    /// The tree for the campaign's audience, and what the interpreter says of it.
    fn both(project: &Project, who: &Customer, at: Millis) -> (Node, bool) {
        let schema = project.schema();
        let compiler = Compiler::new(&schema, &project.modules);
        let campaign = project.campaigns().next().unwrap();
        let zone = schema.campaign_zone(campaign);
        let audience = campaign.audience.as_ref().unwrap();
        (
            explain_expr(&compiler, audience, zone, who, at),
            compiler.compile_in(audience, zone).eval(who, at),
        )
    }

    #[test]
    fn the_tree_agrees_with_the_interpreter() {
        // 2026-03-01 08:00 is 08:00 UTC for the segment (policy zone) but 00:00 UTC in the
        // campaign's Shanghai time: a buy at 04:00 UTC is on one side of each.
        let four_am = 1_772_337_600_000; // 2026-03-01T04:00:00Z
        let later = four_am + 86_400_000;
        let audiences = [
            "big",
            "did buy where amount > 100 since 2026-03-01 08:00",
            "fans and not customer.vip",
            "customer.age >= 18 and (big or customer.city is set) and not has tag \"x\"",
            "customer.city in [\"上海\"] or did not buy at least 2 times within last 1d",
            "true",
        ];
        let customers = [
            customer(&[], &[(four_am, 150.0)]),
            customer(&["fan"], &[(four_am, 150.0), (later, 50.0)]),
            customer(&["x"], &[]),
        ];
        for audience in audiences {
            let project = project(audience);
            for who in &customers {
                for at in [four_am, later, later + 86_400_000] {
                    let (tree, holds) = both(&project, who, at);
                    assert_eq!(tree.holds, holds, "{audience} for {who:?} at {at}");
                }
            }
        }
    }

    #[test]
    fn segments_expand_in_the_project_zone() {
        let four_am = 1_772_337_600_000;
        let project = project("big");
        let (tree, _) = both(&project, &customer(&[], &[(four_am, 150.0)]), four_am);
        let Detail::Segment { name, children } = &tree.detail else {
            panic!("{tree:?}")
        };
        assert_eq!(name, "big");
        // Since 08:00 UTC (the policy's zone), not 00:00 UTC (the campaign's): not counted.
        assert_eq!(children[0].detail, Detail::Did { count: 0 });
        assert!(!tree.holds);
    }

    #[test]
    fn chains_are_flattened_with_the_values_seen() {
        let project = project("customer.age >= 18 and customer.city is set and has tag \"fan\" or (fans or customer.vip)");
        let (tree, holds) = both(&project, &customer(&["fan"], &[]), 0);
        assert!(holds && tree.holds);
        let kinds: Vec<&Detail> = tree.children().iter().map(|c| &c.detail).collect();
        assert_eq!(
            kinds.len(),
            3,
            "`a and b and c or d or e`: one and, then d, e"
        );
        let Detail::And { children } = kinds[0] else {
            panic!("{kinds:?}")
        };
        assert_eq!(
            children.iter().map(|c| &c.detail).collect::<Vec<_>>(),
            vec![
                &Detail::Attribute {
                    name: "age".into(),
                    value: 30.into()
                },
                &Detail::Attribute {
                    name: "city".into(),
                    value: Json::Null
                },
                &Detail::HasTag { has: true },
            ]
        );
        assert_eq!(children[1].text, "customer.city is set");
        assert!(!children[1].holds && !tree.children()[0].holds);
    }
}
