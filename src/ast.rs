//! The syntax tree of a Nudge file, produced by `lower` and read by `check` and the interpreter.
//!
//! Every node carries the byte span of its source text. Spans deliberately compare equal to each
//! other, so the derived `PartialEq` of every node compares meaning, not position: a file and its
//! reformatted twin have equal trees.

use chrono::{FixedOffset, NaiveDateTime, NaiveTime};

/// Index of a source file in a [`crate::source::SourceMap`].
pub type FileId = usize;

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl PartialEq for Span {
    /// Always equal: see the module documentation.
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A name written by the user, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A string literal: `value` has its escapes decoded; `span` covers the quotes.
#[derive(Clone, Debug, PartialEq)]
pub struct Str {
    pub value: String,
    pub span: Span,
}

/// One file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    pub items: Vec<Item>,
    /// Items that did not parse, by keyword and name (`segment`, `high_intent`): the checker
    /// knows they exist, so their users are not also told the name is unknown.
    pub unparsed: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Customer(CustomerDecl),
    Event(EventDecl),
    Channel(ChannelDecl),
    Segment(SegmentDecl),
    Campaign(Box<Campaign>),
    TagRule(TagRule),
    Policy(Policy),
}

// ───────────────────────── declarations ─────────────────────────

#[derive(Clone, Debug, PartialEq)]
pub struct CustomerDecl {
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EventDecl {
    pub name: Ident,
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: TypeRef,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TypeRef {
    pub ty: Type,
    pub optional: bool,
    pub span: Span,
}

/// The value types of the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Text,
    Number,
    Bool,
    Time,
    Duration,
    Zone,
}

impl Type {
    pub const ALL: [(&'static str, Type); 6] = [
        ("text", Type::Text),
        ("number", Type::Number),
        ("bool", Type::Bool),
        ("time", Type::Time),
        ("duration", Type::Duration),
        ("zone", Type::Zone),
    ];

    pub fn name(self) -> &'static str {
        Type::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("?", |(n, _)| n)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChannelDecl {
    pub name: Ident,
    /// `kind wecom`; without it the channel's name is its kind.
    pub kind: Option<Ident>,
    /// `to customer.phone`
    pub to: Option<AttrPath>,
    /// `reachable did message within last 48h`
    pub reachable: Option<Expr>,
    pub span: Span,
}

/// The built-in channel kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Sms,
    Email,
    Push,
    Wecom,
    Moments,
    Task,
}

impl ChannelKind {
    pub const ALL: [(&'static str, ChannelKind); 6] = [
        ("sms", ChannelKind::Sms),
        ("email", ChannelKind::Email),
        ("push", ChannelKind::Push),
        ("wecom", ChannelKind::Wecom),
        ("moments", ChannelKind::Moments),
        ("task", ChannelKind::Task),
    ];

    pub fn from_name(name: &str) -> Option<ChannelKind> {
        ChannelKind::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        ChannelKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// The customer attribute that holds the address of an undeclared channel of this kind.
    pub fn default_address(self) -> Option<&'static str> {
        match self {
            ChannelKind::Sms => Some("phone"),
            ChannelKind::Email => Some("email"),
            ChannelKind::Push => Some("push_token"),
            ChannelKind::Wecom | ChannelKind::Moments => Some("wecom_id"),
            ChannelKind::Task => None,
        }
    }

    /// Whether a delivery on this kind goes to an employee (who posts it, or does the task),
    /// not to the customer's address: what `assign … evenly` balances.
    pub fn through_employee(self) -> bool {
        matches!(self, ChannelKind::Moments | ChannelKind::Task)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SegmentDecl {
    pub name: Ident,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TagRule {
    pub tag: Str,
    pub expr: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub timezone: Option<Str>,
    pub cap: Option<Cap>,
    pub quiet: Option<Quiet>,
    pub span: Span,
}

// ───────────────────────── campaigns ─────────────────────────

#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    pub name: Str,
    pub status: Status,
    pub timezone: Option<Str>,
    pub start: Option<DateTimeLit>,
    pub end: Option<DateTimeLit>,
    pub audience: Option<Expr>,
    pub exclude: Option<Expr>,
    pub trigger: Option<Trigger>,
    pub wait: Option<Wait>,
    pub quiet: Option<Quiet>,
    pub pace: Option<Pace>,
    pub cap: Option<Cap>,
    pub rate: Option<Rate>,
    pub actions: Vec<Action>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Status {
    Draft,
    #[default]
    Active,
    Paused,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub kind: TriggerKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TriggerKind {
    /// `trigger at 2026-03-01 20:00`
    At(DateTimeLit),
    /// `trigger every day at 10:00, 20:00 [for 7d after customer.registered_at]`
    Every {
        schedule: Schedule,
        for_after: Option<ForAfter>,
    },
    /// `trigger on EVENT [where C] [after|every N times] [unless B [where C] within W]`
    On {
        event: Ident,
        filter: Option<Expr>,
        occurrence: Option<Occurrence>,
        unless: Option<Box<Unless>>,
    },
    /// `trigger on tag added "X"` / `on tag removed "X"`
    Tag { change: TagChange, tag: Str },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Days {
        days: Vec<Spanned<DayOfWeekSet>>,
        times: Vec<TimeOfDay>,
    },
    /// A cron expression as the user wrote it (standard 5-field, or 6/7 fields with seconds/year).
    Cron(Str),
}

/// `day`, `weekday`, `weekend` or one named day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayOfWeekSet {
    EveryDay,
    Weekdays,
    Weekend,
    Day(chrono::Weekday),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForAfter {
    pub duration: DurationLit,
    pub attr: AttrPath,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Occurrence {
    pub mode: OccurrenceMode,
    pub n: Count,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OccurrenceMode {
    /// `after N times`: once, when the count reaches N.
    After,
    /// `every N times`: at N, 2N, 3N, …
    Every,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unless {
    pub event: Ident,
    pub filter: Option<Expr>,
    pub within: DurationLit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagChange {
    Added,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    For(DurationLit),
    Until(TimeOfDay),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quiet {
    pub from: TimeOfDay,
    pub to: TimeOfDay,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub count: Count,
    pub per: DurationLit,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cap {
    pub count: Count,
    pub per: DurationLit,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub count: Count,
    pub per: RateUnit,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    pub fn name(self) -> &'static str {
        match self {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Send(Send),
    AddTag(Str),
    RemoveTag(Str),
    Split(Split),
}

/// `send CHANNEL CONTENT` and its `fallback`s, tried in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Send {
    pub primary: Delivery,
    pub fallbacks: Vec<Delivery>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub channel: Ident,
    pub content: Content,
    pub employee: Option<EmployeeChoice>,
    pub assign: Option<Assign>,
    pub span: Span,
}

/// Content as written; which parts a channel needs depends on its kind, which the checker knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Content {
    /// The leading string: the text of an sms, the instruction of a task.
    pub lead: Option<Str>,
    pub parts: Vec<ContentPart>,
    pub span: Span,
}

impl Content {
    pub fn part(&self, key: ContentKey) -> Option<&Str> {
        self.parts.iter().find(|p| p.key == key).map(|p| &p.value)
    }

    /// Every string of the content, in source order.
    pub fn strings(&self) -> impl Iterator<Item = &Str> {
        self.lead.iter().chain(self.parts.iter().map(|p| &p.value))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContentPart {
    pub key: ContentKey,
    pub key_span: Span,
    pub value: Str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentKey {
    Subject,
    Body,
    Title,
    Text,
    Image,
    Video,
    Link,
}

impl ContentKey {
    pub const ALL: [(&'static str, ContentKey); 7] = [
        ("subject", ContentKey::Subject),
        ("body", ContentKey::Body),
        ("title", ContentKey::Title),
        ("text", ContentKey::Text),
        ("image", ContentKey::Image),
        ("video", ContentKey::Video),
        ("link", ContentKey::Link),
    ];

    pub fn name(self) -> &'static str {
        ContentKey::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

/// `by employee last_added | first_added | ["e1", "e2"]`
#[derive(Clone, Debug, PartialEq)]
pub struct EmployeeChoice {
    pub rule: EmployeeRule,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EmployeeRule {
    LastAdded,
    FirstAdded,
    /// The first listed employee who has the customer.
    Priority(Vec<Str>),
}

/// `assign ["alice", "bob"] evenly`
#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    pub employees: Vec<Str>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub arms: Vec<SplitArm>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SplitArm {
    pub share: Spanned<f64>,
    /// `None` for the control group.
    pub variant: Option<Str>,
    pub actions: Vec<Action>,
    pub span: Span,
}

// ───────────────────────── expressions ─────────────────────────

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Bool(bool),
    HasTag(Str),
    Did(Did),
    /// A bare name: a segment in an audience, a bool property in a `where`.
    Name(Ident),
    /// `SUBJECT TEST`, or a bool attribute on its own (`customer.vip`).
    Test {
        subject: Subject,
        test: Option<Test>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    Attr(AttrPath),
    /// An event property, inside `where`.
    Property(Ident),
}

impl Subject {
    pub fn span(&self) -> Span {
        match self {
            Subject::Attr(a) => a.span,
            Subject::Property(p) => p.span,
        }
    }
}

/// `customer.NAME`
#[derive(Clone, Debug, PartialEq)]
pub struct AttrPath {
    pub name: Ident,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub kind: TestKind,
    /// The operator and operand, e.g. `>= 18`.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestKind {
    Compare(CmpOp, Literal),
    In { negated: bool, values: Vec<Literal> },
    Contains(Literal),
    IsSet { negated: bool },
    Window(Window),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// `did [not] EVENT [where COND] [COUNT] [WINDOW]`
#[derive(Clone, Debug, PartialEq)]
pub struct Did {
    pub negated: bool,
    pub event: Ident,
    pub filter: Option<Box<Expr>>,
    pub count: Option<CountTest>,
    pub window: Option<Window>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountTest {
    pub mode: CountMode,
    pub n: Count,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountMode {
    AtLeast,
    AtMost,
    Exactly,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Window {
    /// `within last D`: [t − D, t]
    WithinLast(DurationLit),
    /// `since DATETIME`: [since, t]
    Since(DateTimeLit),
    /// `between A and B`: [A, B]
    Between(DateTimeLit, DateTimeLit),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub value: Value,
    pub span: Span,
}

/// A literal value, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
    DateTime(DateTimeValue),
    Duration(i64),
    TimeOfDay(NaiveTime),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            Value::DateTime(_) => "time",
            Value::Duration(_) => "duration",
            Value::TimeOfDay(_) => "time of day",
        }
    }
}

// ───────────────────────── typed literals ─────────────────────────

/// A value with the span it was written at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// A whole number written by the user (`pace 1 per 1h`, `at least 3 times`).
pub type Count = Spanned<u64>;

/// A duration in whole seconds, always > 0 once lowered without errors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DurationLit {
    pub seconds: i64,
    pub span: Span,
}

impl DurationLit {
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.seconds)
    }
}

/// A time of day, `HH:MM`.
pub type TimeOfDay = Spanned<NaiveTime>;

/// A date or date-time. Without an offset it is local to the campaign's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTimeValue {
    pub local: NaiveDateTime,
    pub offset: Option<FixedOffset>,
}

pub type DateTimeLit = Spanned<DateTimeValue>;
