//! Audience evaluation: is this customer in the audience at this instant?
//!
//! Expressions are compiled once against the schema — segment references inlined, literals typed,
//! date-times resolved to instants in the right time zone — and then evaluated per customer, at
//! the instant a trigger fires (LANGUAGE.md §7). Window boundaries, exactly:
//! - `within last D` at instant t covers [t − D, t];
//! - `since S` covers [S, t]; `between A and B` covers [A, B] (and never past t);
//! - with no window, all history up to t.
//!
//! Events after t never count: the audience is decided at the moment the trigger fires.
//! A test on a missing attribute or property is false (only `is not set` is true for it).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Deref;
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::DateTime;
use chrono_tz::Tz;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use smallvec::SmallVec;

use crate::ast::*;
use crate::check::{instant, Schema};

/// Milliseconds since the Unix epoch, UTC: the engine's instant.
pub type Millis = i64;

/// An engine instant as a date-time (the epoch for instants out of chrono's range).
pub fn to_time(ms: Millis) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// One event of a customer's history.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The store's identity of the event: stable across runs, so it keys trigger occurrences.
    pub id: i64,
    /// Interned: reading an event allocates nothing, and copies touch no shared counter.
    pub name: Name,
    pub at: Millis,
    pub properties: Properties,
}

/// An event's name, interned for the life of the process. Copying one writes nothing: with an
/// `Arc<str>`, a thread decoding events (taking references) and another evaluating them (reading
/// the bytes next to the counts) made a handful of cache lines go back and forth between cores
/// for every event. The distinct names are few: a store's event names, kept once each.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(&'static str);

impl Name {
    pub fn new(name: &str) -> Name {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(&known) = names.get(name) {
            return Name(known);
        }
        let kept: &'static str = Box::leak(name.into());
        names.insert(kept);
        Name(kept)
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl From<&str> for Name {
    fn from(name: &str) -> Name {
        Name::new(name)
    }
}

impl From<String> for Name {
    fn from(name: String) -> Name {
        Name::new(&name)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An event's properties as stored (a JSON object), parsed on first use: most events are only
/// counted, and parsing every one would dominate whole-audience evaluation. The text is kept as
/// bytes, checked as UTF-8 only by that parse; short texts (most of a shop's: a page, an
/// amount) are kept inline, so reading an event allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct Properties {
    raw: SmallVec<[u8; INLINE_PROPERTIES]>,
    parsed: std::sync::OnceLock<Map<String, Json>>,
}

/// Properties texts up to this many bytes are kept inside the event.
const INLINE_PROPERTIES: usize = 32;

impl Properties {
    pub fn new(raw: String) -> Properties {
        Properties {
            raw: SmallVec::from_vec(raw.into_bytes()),
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// Replaces the text and forgets the parsed map, keeping the text's allocation: a pass over
    /// the store refills one slot per event instead of allocating per event.
    pub fn set_raw(&mut self, raw: &[u8]) {
        self.raw.clear();
        self.raw.extend_from_slice(raw);
        self.parsed.take();
    }

    /// The properties; text that is not a JSON object reads as no properties.
    pub fn map(&self) -> &Map<String, Json> {
        self.parsed
            .get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or_default())
    }

    /// One property, as [`Properties::map`] has it. Unless the map was made already, the text
    /// is read for this one value, the others skipped unparsed: a `where` filter tests one or
    /// two properties of each event it looks at, and making the map allocated every key and
    /// value of every such event (measured: a tenth of an incremental run's allocations).
    pub fn get(&self, name: &str) -> Option<Cow<'_, Json>> {
        if let Some(map) = self.parsed.get() {
            return map.get(name).map(Cow::Borrowed);
        }
        let mut found = None;
        serde_json::Deserializer::from_slice(&self.raw)
            .deserialize_map(OneProperty {
                name,
                found: &mut found,
            })
            .ok()?;
        found.map(Cow::Owned)
    }
}

/// Reads the value of one member of a JSON object, skipping the others unparsed. Of members
/// with the same key, the last counts, as in a parsed map.
struct OneProperty<'n, 'f> {
    name: &'n str,
    found: &'f mut Option<Json>,
}

impl<'de> Visitor<'de> for OneProperty<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(JsonKey(key)) = map.next_key()? {
            if key == self.name {
                *self.found = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A JSON object key, borrowed from the text when it has no escapes.
#[derive(Deserialize)]
pub(crate) struct JsonKey<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl From<Map<String, Json>> for Properties {
    fn from(map: Map<String, Json>) -> Properties {
        Properties {
            raw: SmallVec::from_vec(Json::Object(map.clone()).to_string().into_bytes()),
            parsed: std::sync::OnceLock::from(map),
        }
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        self.map() == other.map()
    }
}

/// What evaluation needs to know about one customer. `events` are sorted by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Customer {
    pub id: String,
    pub attributes: Map<String, Json>,
    pub tags: Tags,
    pub events: Vec<Event>,
}

/// A customer's tags, hashed with foldhash rather than std's SipHash, whose resistance to chosen
/// keys buys nothing for a shop's own tags: hashing, mostly of the tags a pass reads and tests,
/// was 3.6% of an estimate's instructions, and foldhash took 2.4% off them (callgrind).
pub type Tags = HashSet<String, foldhash::fast::RandomState>;

impl Customer {
    /// Adds an event where it belongs in time order (after the events at the same instant with
    /// smaller ids, as the store orders them).
    pub fn insert_event(&mut self, event: Event) {
        let at = self
            .events
            .partition_point(|e| (e.at, e.id) <= (event.at, event.id));
        self.events.insert(at, event);
    }
}

/// A compiled condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Const(bool),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    HasTag(String),
    Did(Box<DidCond>),
    Test {
        source: Source,
        ty: Type,
        test: TestCond,
    },
}

/// Where a tested value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Attribute(String),
    Property(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DidCond {
    pub negated: bool,
    pub event: String,
    pub filter: Option<Cond>,
    pub count: (CountMode, u64),
    pub window: Option<WindowCond>,
}

/// A window with its fixed ends resolved to instants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowCond {
    Last(Millis),
    Since(Millis),
    Between(Millis, Millis),
}

impl WindowCond {
    /// The inclusive range this window covers when evaluated at `at`.
    pub fn range(self, at: Millis) -> (Millis, Millis) {
        match self {
            WindowCond::Last(length) => (at.saturating_sub(length), at),
            WindowCond::Since(from) => (from, at),
            WindowCond::Between(from, to) => (from, to.min(at)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestCond {
    /// A bool value on its own.
    IsTrue,
    Compare(CmpOp, Scalar<'static>),
    In {
        negated: bool,
        values: Vec<Scalar<'static>>,
    },
    Contains(String),
    IsSet {
        negated: bool,
    },
    Window(WindowCond),
}

/// A typed value. A text read from a customer or an event borrows it: evaluation tests
/// attributes of every customer against every campaign, and copying each text it compared
/// (10 allocations a customer) cost `estimate` 6.4% of its instructions (callgrind).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Text(Cow<'a, str>),
    Number(f64),
    Bool(bool),
    Time(Millis),
    Duration(i64),
}

/// Compiles expressions of one project; segment references are inlined (the checker has
/// already refused cycles and unknown names).
pub struct Compiler<'a> {
    schema: &'a Schema,
    segments: HashMap<&'a str, &'a Expr>,
    /// Each declared channel's `reachable` condition.
    reachable: HashMap<&'a str, &'a Expr>,
    /// The zone of date-times written without an offset.
    zone: Tz,
}

impl<'a> Compiler<'a> {
    pub fn new(schema: &'a Schema, modules: &'a [(FileId, Module)]) -> Compiler<'a> {
        let items = || modules.iter().flat_map(|(_, m)| &m.items);
        let segments = items()
            .filter_map(|item| match item {
                Item::Segment(s) => Some((s.name.name.as_str(), &s.expr)),
                _ => None,
            })
            .collect();
        let reachable = items()
            .filter_map(|item| match item {
                Item::Channel(c) => c.reachable.as_ref().map(|r| (c.name.name.as_str(), r)),
                _ => None,
            })
            .collect();
        Compiler {
            schema,
            segments,
            reachable,
            zone: schema.default_timezone.unwrap_or(Tz::UTC),
        }
    }

    /// A channel's `reachable` condition, if it declares one (in the project's zone).
    pub fn reachable(&self, channel: &str) -> Option<Cond> {
        self.reachable
            .get(channel)
            .map(|expr| self.compile(expr, None))
    }

    /// A segment's definition, by name (for tools that show what a segment expands to).
    pub fn segment(&self, name: &str) -> Option<&'a Expr> {
        self.segments.get(name).copied()
    }

    /// The zone segments are written in: the policy's, else UTC.
    pub fn project_zone(&self) -> Tz {
        self.schema.default_timezone.unwrap_or(Tz::UTC)
    }

    /// This compiler with date-times written without an offset read in `zone`.
    fn in_zone(&self, zone: Tz) -> Compiler<'a> {
        Compiler {
            schema: self.schema,
            segments: self.segments.clone(),
            reachable: self.reachable.clone(),
            zone,
        }
    }

    /// Compiles a campaign-level expression, whose local date-times are in `zone`. Segments it
    /// uses keep the project's zone, since campaigns share them.
    pub fn compile_in(&self, expr: &Expr, zone: Tz) -> Cond {
        self.in_zone(zone).compile(expr, None)
    }

    /// Compiles an expression over customers (`event` is `None`) or over one event's properties.
    pub fn compile(&self, expr: &Expr, event: Option<&str>) -> Cond {
        match &expr.kind {
            ExprKind::And(a, b) => Cond::And(
                Box::new(self.compile(a, event)),
                Box::new(self.compile(b, event)),
            ),
            ExprKind::Or(a, b) => Cond::Or(
                Box::new(self.compile(a, event)),
                Box::new(self.compile(b, event)),
            ),
            ExprKind::Not(inner) => Cond::Not(Box::new(self.compile(inner, event))),
            ExprKind::Bool(b) => Cond::Const(*b),
            ExprKind::HasTag(tag) => Cond::HasTag(tag.value.clone()),
            ExprKind::Did(did) => Cond::Did(Box::new(self.compile_did(did))),
            ExprKind::Name(name) => match event {
                Some(_) => Cond::Test {
                    source: Source::Property(name.name.clone()),
                    ty: Type::Bool,
                    test: TestCond::IsTrue,
                },
                None => match self.segments.get(name.name.as_str()) {
                    // Segments are written in the project's zone, whatever campaign uses them.
                    Some(segment) => self.in_zone(self.project_zone()).compile(segment, None),
                    None => Cond::Const(false),
                },
            },
            ExprKind::Test { subject, test } => self.compile_test(subject, test.as_ref(), event),
        }
    }

    fn compile_did(&self, did: &Did) -> DidCond {
        let count = did
            .count
            .map_or((CountMode::AtLeast, 1), |c| (c.mode, c.n.value));
        DidCond {
            negated: did.negated,
            event: did.event.name.clone(),
            filter: did
                .filter
                .as_ref()
                .map(|f| self.compile(f, Some(&did.event.name))),
            count,
            window: did.window.map(|w| self.window(w)),
        }
    }

    fn window(&self, window: Window) -> WindowCond {
        let at = |t: &DateTimeLit| instant(&t.value, self.zone).timestamp_millis();
        match window {
            Window::WithinLast(d) => WindowCond::Last(d.seconds.saturating_mul(1000)),
            Window::Since(t) => WindowCond::Since(at(&t)),
            Window::Between(a, b) => WindowCond::Between(at(&a), at(&b)),
        }
    }

    fn compile_test(&self, subject: &Subject, test: Option<&Test>, event: Option<&str>) -> Cond {
        let (source, ty) = match subject {
            Subject::Attr(attr) => (
                Source::Attribute(attr.name.name.clone()),
                self.schema.attributes.get(&attr.name.name).map(|f| f.ty),
            ),
            Subject::Property(p) => (
                Source::Property(p.name.clone()),
                event
                    .and_then(|e| self.schema.events.get(e))
                    .and_then(|e| e.fields.get(&p.name))
                    .map(|f| f.ty),
            ),
        };
        let ty = ty.unwrap_or(Type::Text);
        let test = match test.map(|t| &t.kind) {
            None => TestCond::IsTrue,
            Some(TestKind::Compare(op, literal)) => TestCond::Compare(*op, self.scalar(literal)),
            Some(TestKind::In { negated, values }) => TestCond::In {
                negated: *negated,
                values: values.iter().map(|v| self.scalar(v)).collect(),
            },
            Some(TestKind::Contains(literal)) => match &literal.value {
                Value::Text(t) => TestCond::Contains(t.clone()),
                _ => TestCond::Contains(String::new()),
            },
            Some(TestKind::IsSet { negated }) => TestCond::IsSet { negated: *negated },
            Some(TestKind::Window(w)) => TestCond::Window(self.window(*w)),
        };
        Cond::Test { source, ty, test }
    }

    fn scalar(&self, literal: &Literal) -> Scalar<'static> {
        match &literal.value {
            Value::Text(t) => Scalar::Text(Cow::Owned(t.clone())),
            Value::Number(n) => Scalar::Number(*n),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::DateTime(dt) => Scalar::Time(instant(dt, self.zone).timestamp_millis()),
            Value::Duration(s) => Scalar::Duration(*s),
            Value::TimeOfDay(t) => Scalar::Text(Cow::Owned(t.format("%H:%M").to_string())),
        }
    }
}

impl Cond {
    /// Whether `customer` satisfies the condition at instant `at`.
    pub fn eval(&self, customer: &Customer, at: Millis) -> bool {
        self.eval_in(customer, None, at)
    }

    fn eval_in(&self, customer: &Customer, event: Option<&Event>, at: Millis) -> bool {
        match self {
            Cond::Const(b) => *b,
            Cond::And(a, b) => a.eval_in(customer, event, at) && b.eval_in(customer, event, at),
            Cond::Or(a, b) => a.eval_in(customer, event, at) || b.eval_in(customer, event, at),
            Cond::Not(inner) => !inner.eval_in(customer, event, at),
            Cond::HasTag(tag) => customer.tags.contains(tag),
            Cond::Did(did) => did.eval(customer, at),
            Cond::Test { source, ty, test } => {
                let raw = match source {
                    Source::Attribute(name) => customer.attributes.get(name).map(Cow::Borrowed),
                    Source::Property(name) => event.and_then(|e| e.properties.get(name)),
                };
                let value = raw.as_deref().and_then(|json| typed(json, *ty));
                test.eval(value.as_ref(), at)
            }
        }
    }

    /// Whether one event satisfies a `where` condition.
    pub fn matches_event(&self, customer: &Customer, event: &Event) -> bool {
        self.eval_in(customer, Some(event), event.at)
    }

    /// Calls `out` with the name of every event the condition counts.
    pub fn event_names<'c>(&'c self, out: &mut impl FnMut(&'c str)) {
        match self {
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.event_names(out);
                b.event_names(out);
            }
            Cond::Not(inner) => inner.event_names(out),
            Cond::Did(did) => out(&did.event),
            Cond::Const(_) | Cond::HasTag(_) | Cond::Test { .. } => {}
        }
    }

    /// The earliest instant after `at` at which the condition may change its value for
    /// `customer` with the clock alone, no event or attribute changing: events leaving a
    /// `within last` window until the count no longer gives the current truth, or a time
    /// attribute entering or leaving a window. `None` when the
    /// clock alone never changes it. It may be early (an atom changing under `and`/`or` need
    /// not change the whole), never late: a run that re-evaluates the customer then finds the
    /// truth. (Windows in `where` filters move with each event's own time, not with the clock.)
    pub fn next_change(&self, customer: &Customer, at: Millis) -> Option<Millis> {
        let mut next = None;
        self.clock_changes(customer, at, &mut |t| {
            if t > at {
                next = Some(next.map_or(t, |n: Millis| n.min(t)));
            }
        });
        next
    }

    fn clock_changes(&self, customer: &Customer, at: Millis, out: &mut impl FnMut(Millis)) {
        match self {
            Cond::Const(_) | Cond::HasTag(_) => {}
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.clock_changes(customer, at, out);
                b.clock_changes(customer, at, out);
            }
            Cond::Not(inner) => inner.clock_changes(customer, at, out),
            Cond::Did(did) => {
                if let Some(WindowCond::Last(length)) = did.window {
                    if let Some(leaves) = did.first_leave_changing_truth(customer, at, length) {
                        out(leaves);
                    }
                }
            }
            Cond::Test {
                source: Source::Attribute(name),
                ty,
                test: TestCond::Window(window),
            } => {
                let value = customer.attributes.get(name).and_then(|v| typed(v, *ty));
                if let Some(Scalar::Time(t)) = value {
                    // The value enters every kind of window at its own instant; it leaves a
                    // `within last D` window D later.
                    out(t);
                    if let WindowCond::Last(length) = window {
                        out(t.saturating_add(*length).saturating_add(1));
                    }
                }
            }
            Cond::Test { .. } => {}
        }
    }
}

impl DidCond {
    /// How many of the customer's events match the event name, filter and window at `at`.
    pub fn count_at(&self, customer: &Customer, at: Millis) -> u64 {
        let (from, to) = self.window.map_or((Millis::MIN, at), |w| w.range(at));
        self.matching(customer, from, to).count() as u64
    }

    /// The customer's events with this name that pass the filter, with times in `[from, to]`,
    /// oldest first.
    fn matching<'c>(
        &'c self,
        customer: &'c Customer,
        from: Millis,
        to: Millis,
    ) -> impl Iterator<Item = &'c Event> + 'c {
        let events = &customer.events;
        let start = events.partition_point(|e| e.at < from);
        let end = events.partition_point(|e| e.at <= to);
        events[start..end.max(start)]
            .iter()
            .filter(|e| *e.name == *self.event)
            .filter(move |e| {
                self.filter
                    .as_ref()
                    .is_none_or(|f| f.matches_event(customer, e))
            })
    }

    pub fn eval(&self, customer: &Customer, at: Millis) -> bool {
        self.holds_for(self.count_at(customer, at))
    }

    /// Whether the condition holds when `count` events match.
    fn holds_for(&self, count: u64) -> bool {
        let (mode, n) = self.count;
        let holds = match mode {
            CountMode::AtLeast => count >= n,
            CountMode::AtMost => count <= n,
            CountMode::Exactly => count == n,
        };
        holds != self.negated
    }

    /// With the clock alone, matching events only leave a `within last` window of `length`,
    /// oldest first, and the count only falls: the instant the first of them leaves after
    /// which the count no longer gives the truth it gives at `at` (`None`: none does).
    /// Events leaving together may skip that count; the answer is then early, never late.
    fn first_leave_changing_truth(
        &self,
        customer: &Customer,
        at: Millis,
        length: Millis,
    ) -> Option<Millis> {
        let from = at.saturating_sub(length);
        let count = self.matching(customer, from, at).count() as u64;
        let now = self.holds_for(count);
        let mut left = 0;
        self.matching(customer, from, at)
            .find(|_| {
                left += 1;
                self.holds_for(count - left) != now
            })
            .map(|event| event.at.saturating_add(length).saturating_add(1))
    }
}

impl TestCond {
    fn eval(&self, value: Option<&Scalar>, at: Millis) -> bool {
        let Some(value) = value else {
            return matches!(self, TestCond::IsSet { negated: true });
        };
        match self {
            TestCond::IsTrue => *value == Scalar::Bool(true),
            TestCond::Compare(op, literal) => {
                compare(value, literal).is_some_and(|o| op_holds(*op, o))
            }
            TestCond::In { negated, values } => values.iter().any(|v| v == value) != *negated,
            TestCond::Contains(needle) => {
                matches!(value, Scalar::Text(text) if text.contains(needle.as_str()))
            }
            TestCond::IsSet { negated } => !negated,
            TestCond::Window(window) => match value {
                Scalar::Time(t) => {
                    let (from, to) = window.range(at);
                    from <= *t && *t <= to
                }
                _ => false,
            },
        }
    }
}

fn compare(a: &Scalar, b: &Scalar) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Scalar::Text(x), Scalar::Text(y)) => Some(x.cmp(y)),
        (Scalar::Number(x), Scalar::Number(y)) => x.partial_cmp(y),
        (Scalar::Bool(x), Scalar::Bool(y)) => Some(x.cmp(y)),
        (Scalar::Time(x), Scalar::Time(y)) => Some(x.cmp(y)),
        (Scalar::Duration(x), Scalar::Duration(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn op_holds(op: CmpOp, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => ordering == Equal,
        CmpOp::Ne => ordering != Equal,
        CmpOp::Lt => ordering == Less,
        CmpOp::Le => ordering != Greater,
        CmpOp::Gt => ordering == Greater,
        CmpOp::Ge => ordering != Less,
    }
}

/// A stored JSON value read as the declared type; `None` when missing or of another shape.
/// Times are RFC 3339 strings, or dates (`2026-03-01`, midnight UTC); durations are seconds.
pub fn typed(json: &Json, ty: Type) -> Option<Scalar<'_>> {
    match (ty, json) {
        (_, Json::Null) => None,
        (Type::Text | Type::Zone, Json::String(s)) => Some(Scalar::Text(Cow::Borrowed(s))),
        (Type::Text | Type::Zone, Json::Number(n)) => Some(Scalar::Text(Cow::Owned(n.to_string()))),
        (Type::Number, Json::Number(n)) => n.as_f64().map(Scalar::Number),
        (Type::Number, Json::String(s)) => s.trim().parse().ok().map(Scalar::Number),
        (Type::Bool, Json::Bool(b)) => Some(Scalar::Bool(*b)),
        (Type::Time, Json::String(s)) => parse_time(s).map(Scalar::Time),
        (Type::Duration, Json::Number(n)) => n.as_i64().map(Scalar::Duration),
        _ => None,
    }
}

/// RFC 3339, or a plain date at midnight UTC.
pub fn parse_time(text: &str) -> Option<Millis> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckOptions;

    #[test]
    fn one_property_reads_as_the_parsed_map_has_it() {
        let texts = [
            r#"{"page":"/pricing","amount":150}"#,
            r#"{"amount":1,"amount":2}"#,
            r#"{"p\u0061ge":"/escaped","nested":{"page":"inner"}}"#,
            r#"{}"#,
            "not json",
            r#"["page"]"#,
        ];
        for text in texts {
            for name in ["page", "amount", "nested", "missing"] {
                let streamed = Properties::new(text.into()).get(name).map(Cow::into_owned);
                let parsed = Properties::new(text.into());
                let from_map = parsed.map().get(name).cloned();
                assert_eq!(streamed, from_map, "{name} of {text}");
                assert_eq!(parsed.get(name).map(Cow::into_owned), from_map);
            }
        }
    }

    const SCHEMA: &str = r#"
        customer { age: number  city: text  vip: bool  registered_at: time  phone: text? }
        event purchase { amount: number, sku: text }
        event share
        event app_launch { os: text }
    "#;

    fn ms(text: &str) -> Millis {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn an_inserted_event_goes_where_the_store_orders_it() {
        let event = |id, at| Event {
            id,
            name: "view".into(),
            at,
            properties: Properties::default(),
        };
        let mut customer = Customer {
            events: vec![event(1, 10), event(5, 20), event(2, 30)],
            ..Customer::default()
        };
        customer.insert_event(event(9, 20));
        customer.insert_event(event(3, 20));
        customer.insert_event(event(7, 40));
        customer.insert_event(event(8, 0));
        let order: Vec<_> = customer.events.iter().map(|e| (e.at, e.id)).collect();
        assert_eq!(
            order,
            [(0, 8), (10, 1), (20, 3), (20, 5), (20, 9), (30, 2), (40, 7)]
        );
    }

    /// Compiles `segment s = EXPR` in a project with SCHEMA (and `policy { timezone ZONE }`).
    fn cond(expr: &str, zone: Option<&str>) -> Cond {
        let mut sources = crate::project::Sources::default();
        sources.add("schema.nudge", SCHEMA);
        let policy = zone
            .map(|z| format!("policy {{ timezone \"{z}\" }}"))
            .unwrap_or_default();
        sources.add("s.nudge", format!("{policy}\nsegment s = {expr}"));
        let now = "2026-11-21T00:00:00Z".parse().unwrap();
        let project = crate::project::analyze(sources, &CheckOptions { now });
        let errors: Vec<_> = project
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let schema = project.schema();
        let compiler = Compiler::new(&schema, &project.modules);
        let expr = project.modules[1].1.items.iter().find_map(|i| match i {
            Item::Segment(s) => Some(s.expr.clone()),
            _ => None,
        });
        compiler.compile(&expr.unwrap(), None)
    }

    fn customer(events: &[(&str, &str, Json)]) -> Customer {
        Customer {
            id: "c1".into(),
            attributes: serde_json::json!({"age": 30, "city": "上海", "vip": true,
                "registered_at": "2026-03-01T00:00:00Z"})
            .as_object()
            .unwrap()
            .clone(),
            tags: ["VIP".to_string()].into_iter().collect(),
            events: events
                .iter()
                .enumerate()
                .map(|(i, (name, at, props))| Event {
                    id: i as i64,
                    name: (*name).into(),
                    at: ms(at),
                    properties: props.as_object().cloned().unwrap_or_default().into(),
                })
                .collect(),
        }
    }

    #[test]
    fn within_last_includes_both_ends() {
        let c = cond("did share within last 1h", None);
        let who = customer(&[("share", "2026-03-01T10:00:00Z", Json::Null)]);
        assert!(c.eval(&who, ms("2026-03-01T10:00:00Z")), "at t itself");
        assert!(
            c.eval(&who, ms("2026-03-01T11:00:00Z")),
            "exactly D before t"
        );
        assert!(
            !c.eval(&who, ms("2026-03-01T11:00:00.001Z")),
            "just over D before t"
        );
        assert!(
            !c.eval(&who, ms("2026-03-01T09:59:59.999Z")),
            "events after t never count"
        );
    }

    #[test]
    fn next_change_is_when_the_last_event_the_truth_needs_leaves_the_window() {
        let c = cond("not did share within last 1h or did purchase", None);
        let who = customer(&[
            ("share", "2026-03-01T09:00:00Z", Json::Null),
            ("purchase", "2026-03-01T10:00:00Z", Json::Null),
            ("share", "2026-03-01T10:10:00Z", Json::Null),
            ("share", "2026-03-01T10:20:00Z", Json::Null),
        ]);
        let at = ms("2026-03-01T10:30:00Z");
        let next = c.next_change(&who, at);
        // The 10:10 share leaving changes nothing: one share is still in the window. (The
        // 10:20 one leaving changes `did share`, not the whole: early, never late.)
        assert_eq!(next, Some(ms("2026-03-01T11:20:00.001Z")));
        assert!(c.eval(&who, next.unwrap() - 1) == c.eval(&who, at));
        assert_eq!(
            c.next_change(&who, ms("2026-03-01T12:00:00Z")),
            None,
            "nothing left in the window, and `did purchase` has none"
        );
    }

    #[test]
    fn next_change_looks_at_counts_and_filters() {
        let events = [
            (
                "app_launch",
                "2026-03-01T08:00:00Z",
                serde_json::json!({"os": "ios"}),
            ),
            (
                "app_launch",
                "2026-03-01T09:00:00Z",
                serde_json::json!({"os": "android"}),
            ),
            (
                "app_launch",
                "2026-03-01T10:00:00Z",
                serde_json::json!({"os": "ios"}),
            ),
            (
                "app_launch",
                "2026-03-01T11:00:00Z",
                serde_json::json!({"os": "ios"}),
            ),
        ];
        let who = customer(&events);
        let at = ms("2026-03-01T12:00:00Z");
        let leaves = |hour: &str| Some(ms(&format!("2026-03-01T{hour}:00:00.001Z")));
        let cases = [
            // Four launches: the count falls below 3 when the second leaves.
            (
                "did app_launch at least 3 times within last 6h",
                leaves("15"),
            ),
            // Four launches can only become five with a new event.
            ("did app_launch at least 5 times within last 6h", None),
            (
                "did app_launch at most 2 times within last 6h",
                leaves("15"),
            ),
            (
                "did app_launch exactly 4 times within last 6h",
                leaves("14"),
            ),
            (
                "did app_launch exactly 3 times within last 6h",
                leaves("14"),
            ),
            (
                "not did app_launch at least 3 times within last 6h",
                leaves("15"),
            ),
            // Three of them on iOS: the 08:00 one leaving leaves two.
            (
                "did app_launch where os == \"ios\" at least 3 times within last 6h",
                leaves("14"),
            ),
        ];
        for (text, expected) in cases {
            let c = cond(text, None);
            let next = c.next_change(&who, at);
            assert_eq!(next, expected, "{text}");
            if let Some(next) = next {
                assert!(c.eval(&who, next - 1) == c.eval(&who, at), "{text}");
                assert!(c.eval(&who, next) != c.eval(&who, at), "{text}");
            }
        }
    }

    #[test]
    fn next_change_of_a_time_attribute_is_when_it_enters_or_leaves_the_window() {
        let c = cond("customer.registered_at within last 30d", None);
        let who = customer(&[]);
        let registered = ms("2026-03-01T00:00:00Z");
        let before = ms("2026-02-01T00:00:00Z");
        assert_eq!(c.next_change(&who, before), Some(registered));
        assert!(!c.eval(&who, registered - 1) && c.eval(&who, registered));
        let leaves = registered + 30 * 86_400_000 + 1;
        assert_eq!(c.next_change(&who, registered), Some(leaves));
        assert!(c.eval(&who, leaves - 1) && !c.eval(&who, leaves));
        assert_eq!(c.next_change(&who, leaves), None);
        let since = cond("customer.registered_at since 2026-01-01", None);
        assert_eq!(since.next_change(&who, before), Some(registered));
        assert_eq!(since.next_change(&who, registered), None);
    }

    #[test]
    fn counts_filters_and_negation() {
        let c = cond(
            "did purchase where amount > 100 at least 2 times within last 30d",
            None,
        );
        let events = [
            (
                "purchase",
                "2026-03-01T10:00:00Z",
                serde_json::json!({"amount": 150}),
            ),
            (
                "purchase",
                "2026-03-02T10:00:00Z",
                serde_json::json!({"amount": 50}),
            ),
            (
                "purchase",
                "2026-03-03T10:00:00Z",
                serde_json::json!({"amount": 101}),
            ),
        ];
        let who = customer(&events);
        assert!(c.eval(&who, ms("2026-03-10T00:00:00Z")));
        assert!(
            !c.eval(&who, ms("2026-03-02T12:00:00Z")),
            "only one big purchase by then"
        );
        let none = cond("did not share", None);
        assert!(none.eval(&who, ms("2026-03-10T00:00:00Z")));
        let at_most = cond("did purchase at most 2 times", None);
        assert!(!at_most.eval(&who, ms("2026-03-10T00:00:00Z")));
        let exactly = cond("did purchase exactly 3 times", None);
        assert!(exactly.eval(&who, ms("2026-03-10T00:00:00Z")));
        let fewer = cond("did not purchase at least 4 times", None);
        assert!(fewer.eval(&who, ms("2026-03-10T00:00:00Z")));
    }

    #[test]
    fn between_is_inclusive_and_local_to_the_project_zone() {
        // 2026-03-01 09:00 in Shanghai is 01:00 UTC.
        let c = cond(
            "did share between 2026-03-01 09:00 and 2026-03-01 10:00",
            Some("Asia/Shanghai"),
        );
        let at_start = customer(&[("share", "2026-03-01T01:00:00Z", Json::Null)]);
        let at_end = customer(&[("share", "2026-03-01T02:00:00Z", Json::Null)]);
        let after = customer(&[("share", "2026-03-01T02:00:00.001Z", Json::Null)]);
        let now = ms("2026-04-01T00:00:00Z");
        assert!(c.eval(&at_start, now) && c.eval(&at_end, now) && !c.eval(&after, now));
    }

    #[test]
    fn attribute_tests() {
        let who = customer(&[]);
        let now = ms("2026-03-10T00:00:00Z");
        for (expr, expected) in [
            ("customer.age >= 30", true),
            ("customer.age > 30", false),
            ("customer.city in [\"上海\", \"北京\"]", true),
            ("customer.city not in [\"上海\"]", false),
            ("customer.city contains \"海\"", true),
            ("customer.vip", true),
            ("not customer.vip or has tag \"VIP\"", true),
            ("customer.phone is set", false),
            ("customer.phone is not set", true),
            ("customer.phone == \"1\" or customer.phone != \"1\"", false),
            ("customer.registered_at within last 9d", true),
            ("customer.registered_at within last 8d", false),
            ("customer.registered_at since 2026-03-01", true),
            ("customer.registered_at < 2026-03-01 00:00", false),
        ] {
            assert_eq!(cond(expr, None).eval(&who, now), expected, "{expr}");
        }
    }
}
