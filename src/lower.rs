//! Stage 2 — lower: pest pairs → the typed syntax tree of `ast`, with spans.
//!
//! Literals become typed values here (durations in seconds, times of day, dates), so this is
//! where impossible literals are reported: `25:00`, `2026-02-30`, `0m`, `\q`.
//! Boolean precedence (`not` > `and` > `or`) is applied by pest's Pratt parser.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::*;
use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::parse::{ParsedItem, Rule};

/// The largest count the language accepts (`pace N`, `at least N times`): anything larger is a typo.
pub const MAX_COUNT: u64 = 1_000_000_000;

/// The longest duration the language accepts: anything longer is a typo.
pub const MAX_DURATION_SECONDS: i64 = 100 * 365 * 86_400;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::kw_or, Assoc::Left))
        .op(Op::infix(Rule::kw_and, Assoc::Left))
        .op(Op::prefix(Rule::kw_not))
});

/// Lowers the parsed items of one file.
pub fn lower_items(file: FileId, items: Vec<ParsedItem<'_>>) -> (Module, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut module = Module::default();
    for item in items {
        let mut lower = Lower {
            file,
            base: item.base,
            diagnostics: &mut diagnostics,
        };
        if let Some(item) = lower.item(item.pair) {
            module.items.push(item);
        }
    }
    (module, diagnostics)
}

struct Lower<'d> {
    file: FileId,
    base: usize,
    diagnostics: &'d mut Vec<Diagnostic>,
}

type P<'i> = Pair<'i, Rule>;

/// The children of a pair that carry meaning: keywords are dropped.
fn parts(pair: P<'_>) -> impl Iterator<Item = P<'_>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

fn is_keyword(rule: Rule) -> bool {
    KEYWORD_RULES[rule as usize]
}

/// Which rules are keywords (`kw_…`), computed once from the rule names.
static KEYWORD_RULES: LazyLock<Vec<bool>> = LazyLock::new(|| {
    let rules = Rule::all_rules();
    let mut table = vec![false; rules.iter().map(|r| *r as usize).max().unwrap_or(0) + 1];
    for rule in rules {
        table[*rule as usize] = format!("{rule:?}").starts_with("kw_");
    }
    table
});

impl Lower<'_> {
    /// The pair's span without the whitespace and comments pest may include at its end, so
    /// labels underline exactly the text.
    fn span(&self, pair: &P<'_>) -> Span {
        let s = pair.as_span();
        let start = self.base + s.start();
        Span::new(start, start + trimmed_len(pair.as_str()))
    }

    fn ident(&self, pair: P<'_>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item(&mut self, pair: P<'_>) -> Option<Item> {
        Some(match pair.as_rule() {
            Rule::customer_decl => Item::Customer(CustomerDecl {
                span: self.span(&pair),
                fields: self.fields(parts(pair)),
            }),
            Rule::event_decl => {
                let span = self.span(&pair);
                let mut inner = parts(pair);
                let name = self.ident(inner.next()?);
                Item::Event(EventDecl {
                    name,
                    fields: self.fields(inner),
                    span,
                })
            }
            Rule::channel_decl => Item::Channel(self.channel(pair)?),
            Rule::segment_decl => {
                let span = self.span(&pair);
                let mut inner = parts(pair);
                let name = self.ident(inner.next()?);
                let expr = self.expr(inner.next()?);
                Item::Segment(SegmentDecl { name, expr, span })
            }
            Rule::tag_rule => {
                let span = self.span(&pair);
                let mut inner = parts(pair);
                let tag = self.string(inner.next()?);
                let expr = self.expr(inner.next()?);
                Item::TagRule(TagRule { tag, expr, span })
            }
            Rule::policy => Item::Policy(self.policy(pair)),
            Rule::campaign => Item::Campaign(Box::new(self.campaign(pair)?)),
            _ => return None,
        })
    }

    fn fields<'i>(&mut self, pairs: impl Iterator<Item = P<'i>>) -> Vec<FieldDecl> {
        pairs
            .filter_map(|field| {
                let mut inner = field.into_inner();
                let name = self.ident(inner.next()?);
                let ty = self.type_ref(inner.next()?)?;
                Some(FieldDecl { name, ty })
            })
            .collect()
    }

    fn type_ref(&mut self, pair: P<'_>) -> Option<TypeRef> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name_pair = inner.next()?;
        let optional = inner.next().is_some();
        let name = name_pair.as_str();
        match Type::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, ty)) => Some(TypeRef {
                ty: *ty,
                optional,
                span,
            }),
            None => {
                let name_span = self.span(&name_pair);
                let help = type_alias(name)
                    .map(|t| format!("did you mean `{t}`?"))
                    .or_else(|| did_you_mean(name, Type::ALL.iter().map(|(n, _)| *n)))
                    .unwrap_or_else(|| {
                        "the types are `text`, `number`, `bool`, `time`, `duration` and `zone`"
                            .into()
                    });
                let d = Diagnostic::new(
                    Code::UnknownType,
                    self.file,
                    name_span,
                    format!("unknown type `{name}`"),
                )
                .label("not a type")
                .help(help);
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn channel(&mut self, pair: P<'_>) -> Option<ChannelDecl> {
        let span = self.span(&pair);
        let mut inner = parts(pair);
        let name = self.ident(inner.next()?);
        let mut decl = ChannelDecl {
            name,
            kind: None,
            to: None,
            reachable: None,
            span,
        };
        let mut seen = Seen::default();
        for part in inner {
            let part_span = self.span(&part);
            match part.as_rule() {
                Rule::channel_kind => {
                    self.once(&mut seen, "kind", keyword_span(part_span, "kind"));
                    decl.kind = parts(part).next().map(|p| self.ident(p));
                }
                Rule::channel_to => {
                    self.once(&mut seen, "to", keyword_span(part_span, "to"));
                    decl.to = parts(part).next().map(|p| self.attr_path(p));
                }
                Rule::channel_reachable => {
                    self.once(&mut seen, "reachable", keyword_span(part_span, "reachable"));
                    decl.reachable = parts(part).next().map(|p| self.expr(p));
                }
                _ => {}
            }
        }
        Some(decl)
    }

    /// Reports a clause given twice, pointing at both.
    fn once(&mut self, seen: &mut Seen, clause: &'static str, span: Span) {
        if let Some(first) = seen.0.insert(clause, span) {
            let file = self.file;
            self.diagnostics.push(
                Diagnostic::new(
                    Code::DuplicateClause,
                    file,
                    span,
                    format!("`{clause}` is given twice"),
                )
                .label("second one")
                .also(file, first, "first one")
                .help(format!("keep one `{clause}`")),
            );
        }
    }

    fn policy(&mut self, pair: P<'_>) -> Policy {
        let mut policy = Policy {
            timezone: None,
            cap: None,
            quiet: None,
            span: self.span(&pair),
        };
        let mut seen = Seen::default();
        for clause in parts(pair) {
            let span = self.span(&clause);
            match clause.as_rule() {
                Rule::timezone_clause => {
                    self.once(&mut seen, "timezone", keyword_span(span, "timezone"));
                    policy.timezone = parts(clause).next().map(|p| self.string(p));
                }
                Rule::cap_clause => {
                    self.once(&mut seen, "cap", keyword_span(span, "cap"));
                    policy.cap = self.cap(clause);
                }
                Rule::quiet_clause => {
                    self.once(&mut seen, "quiet", keyword_span(span, "quiet"));
                    policy.quiet = self.quiet(clause);
                }
                _ => {}
            }
        }
        policy
    }

    fn campaign(&mut self, pair: P<'_>) -> Option<Campaign> {
        let span = self.span(&pair);
        let mut inner = parts(pair);
        let name = self.string(inner.next()?);
        let mut c = Campaign {
            name,
            status: Status::Active,
            timezone: None,
            start: None,
            end: None,
            audience: None,
            exclude: None,
            trigger: None,
            wait: None,
            quiet: None,
            pace: None,
            cap: None,
            rate: None,
            actions: Vec::new(),
            span,
        };
        let mut seen = Seen::default();
        for clause in inner {
            let span = self.span(&clause);
            let rule = clause.as_rule();
            if let Some(name) = setting_name(rule) {
                self.once(&mut seen, name, keyword_span(span, name));
            }
            match rule {
                Rule::status_clause => {
                    c.status = match parts(clause).next().map(|p| p.as_str()) {
                        Some("draft") => Status::Draft,
                        Some("paused") => Status::Paused,
                        _ => Status::Active,
                    }
                }
                Rule::timezone_clause => c.timezone = parts(clause).next().map(|p| self.string(p)),
                Rule::start_clause => c.start = parts(clause).next().and_then(|p| self.datetime(p)),
                Rule::end_clause => c.end = parts(clause).next().and_then(|p| self.datetime(p)),
                Rule::audience_clause => c.audience = parts(clause).next().map(|p| self.expr(p)),
                Rule::exclude_clause => c.exclude = parts(clause).next().map(|p| self.expr(p)),
                Rule::trigger_clause => c.trigger = self.trigger(clause),
                Rule::wait_clause => c.wait = self.wait(clause),
                Rule::quiet_clause => c.quiet = self.quiet(clause),
                Rule::pace_clause => {
                    let mut inner = parts(clause);
                    let count = self.integer(inner.next()?);
                    let per = self.duration(inner.next()?);
                    c.pace = Some(Pace { count, per, span });
                }
                Rule::cap_clause => c.cap = self.cap(clause),
                Rule::rate_clause => {
                    let mut inner = parts(clause);
                    let count = self.integer(inner.next()?);
                    let per = match inner.next()?.as_str() {
                        "second" => RateUnit::Second,
                        "minute" => RateUnit::Minute,
                        "hour" => RateUnit::Hour,
                        _ => RateUnit::Day,
                    };
                    c.rate = Some(Rate { count, per, span });
                }
                _ => self.action(clause, &mut c.actions),
            }
        }
        Some(c)
    }

    /// Lowers one action clause onto `actions`; a `fallback` joins the `send` before it.
    fn action(&mut self, clause: P<'_>, actions: &mut Vec<Action>) {
        let span = self.span(&clause);
        match clause.as_rule() {
            Rule::send_clause | Rule::shorthand_send => {
                if let Some(primary) = self.delivery(clause) {
                    actions.push(Action::Send(Send {
                        primary,
                        fallbacks: Vec::new(),
                    }));
                }
            }
            Rule::fallback_clause => {
                let Some(delivery) = self.delivery(clause) else {
                    return;
                };
                match actions.last_mut() {
                    Some(Action::Send(send)) => send.fallbacks.push(delivery),
                    _ => {
                        let keyword = Span::new(span.start, span.start + "fallback".len());
                        let d = Diagnostic::new(
                            Code::FallbackWithoutSend,
                            self.file,
                            keyword,
                            "`fallback` must follow a `send`",
                        )
                        .label("no `send` right before this")
                        .help("put the `fallback` directly after the `send` it backs up");
                        self.diagnostics.push(d);
                        // Still an action: the campaign is not also reported as doing nothing.
                        actions.push(Action::Send(Send {
                            primary: delivery,
                            fallbacks: Vec::new(),
                        }));
                    }
                }
            }
            Rule::add_tag_clause => {
                if let Some(tag) = parts(clause).next() {
                    actions.push(Action::AddTag(self.string(tag)));
                }
            }
            Rule::remove_tag_clause => {
                if let Some(tag) = parts(clause).next() {
                    actions.push(Action::RemoveTag(self.string(tag)));
                }
            }
            Rule::split_clause => {
                let arms = parts(clause)
                    .filter_map(|arm| self.split_arm(arm))
                    .collect();
                actions.push(Action::Split(Split { arms, span }));
            }
            _ => {}
        }
    }

    fn split_arm(&mut self, pair: P<'_>) -> Option<SplitArm> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let share_pair = inner.next()?;
        let share = Spanned {
            value: self.percent(&share_pair),
            span: self.span(&share_pair),
        };
        let mut arm = SplitArm {
            share,
            variant: None,
            actions: Vec::new(),
            span,
        };
        for part in inner {
            match part.as_rule() {
                Rule::kw_control => {}
                Rule::string => arm.variant = Some(self.string(part)),
                _ => self.action(part, &mut arm.actions),
            }
        }
        Some(arm)
    }

    fn delivery(&mut self, clause: P<'_>) -> Option<Delivery> {
        let span = self.span(&clause);
        let mut inner = parts(clause);
        let mut first = inner.next()?;
        if first.as_rule() == Rule::delivery {
            // `send CHANNEL …` / `fallback CHANNEL …`: the delivery is one level down.
            inner = parts(first);
            first = inner.next()?;
        }
        let channel = self.ident(first);
        let content = self.content(inner.next()?);
        let mut delivery = Delivery {
            channel,
            content,
            employee: None,
            assign: None,
            span,
        };
        let mut seen = Seen::default();
        for option in inner {
            let option_span = self.span(&option);
            match option.as_rule() {
                Rule::by_employee => {
                    self.once(&mut seen, "by employee", keyword_span(option_span, "by"));
                    let choice = parts(option).next()?;
                    let rule = match choice.as_str() {
                        "last_added" => EmployeeRule::LastAdded,
                        "first_added" => EmployeeRule::FirstAdded,
                        _ => EmployeeRule::Priority(self.string_list(choice)),
                    };
                    delivery.employee = Some(EmployeeChoice {
                        rule,
                        span: option_span,
                    });
                }
                Rule::assign => {
                    self.once(&mut seen, "assign", keyword_span(option_span, "assign"));
                    let employees = parts(option).next().map(|l| self.string_list(l));
                    delivery.assign = Some(Assign {
                        employees: employees.unwrap_or_default(),
                        span: option_span,
                    });
                }
                _ => {}
            }
        }
        Some(delivery)
    }

    fn content(&mut self, pair: P<'_>) -> Content {
        let span = self.span(&pair);
        let mut content = Content {
            lead: None,
            parts: Vec::new(),
            span,
        };
        for part in pair.into_inner() {
            match part.as_rule() {
                Rule::string => content.lead = Some(self.string(part)),
                Rule::content_part => {
                    let mut inner = part.into_inner();
                    let (Some(key), Some(value)) = (inner.next(), inner.next()) else {
                        continue;
                    };
                    let key_span = self.span(&key);
                    let key = ContentKey::ALL
                        .iter()
                        .find(|(n, _)| *n == key.as_str())
                        .map_or(ContentKey::Text, |(_, k)| *k);
                    content.parts.push(ContentPart {
                        key,
                        key_span,
                        value: self.string(value),
                    });
                }
                _ => {}
            }
        }
        content
    }

    fn string_list(&mut self, pair: P<'_>) -> Vec<Str> {
        pair.into_inner().map(|s| self.string(s)).collect()
    }

    // ───────────────────────── triggers and timing ─────────────────────────

    fn trigger(&mut self, clause: P<'_>) -> Option<Trigger> {
        let pair = parts(clause).next()?;
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = parts(pair);
        let kind = match rule {
            // An impossible date is reported; the campaign still has its trigger.
            Rule::trigger_at => TriggerKind::At(self.datetime(inner.next()?).unwrap_or(Spanned {
                value: DateTimeValue {
                    local: NaiveDateTime::default(),
                    offset: None,
                },
                span,
            })),
            Rule::trigger_every => {
                let schedule_pair = inner.next()?;
                let schedule = if schedule_pair.as_rule() == Rule::cron_schedule {
                    Schedule::Cron(self.string(schedule_pair.into_inner().next()?))
                } else {
                    self.day_schedule(schedule_pair)
                };
                let for_after = inner.next().and_then(|p| {
                    let mut f = parts(p);
                    let duration = self.duration(f.next()?);
                    let attr = self.attr_path(f.next()?);
                    Some(ForAfter { duration, attr })
                });
                TriggerKind::Every {
                    schedule,
                    for_after,
                }
            }
            Rule::trigger_tag => {
                let change = match inner.next()?.as_str() {
                    "added" => TagChange::Added,
                    _ => TagChange::Removed,
                };
                TriggerKind::Tag {
                    change,
                    tag: self.string(inner.next()?),
                }
            }
            _ => {
                let event = self.ident(inner.next()?);
                let (mut filter, mut occurrence, mut unless) = (None, None, None);
                for part in inner {
                    match part.as_rule() {
                        Rule::where_clause => filter = self.where_clause(part),
                        Rule::occurrence => occurrence = self.occurrence(part),
                        _ => unless = self.unless(part).map(Box::new),
                    }
                }
                TriggerKind::On {
                    event,
                    filter,
                    occurrence,
                    unless,
                }
            }
        };
        Some(Trigger { kind, span })
    }

    fn day_schedule(&mut self, pair: P<'_>) -> Schedule {
        let mut days = Vec::new();
        let mut times = Vec::new();
        for part in parts(pair) {
            let span = self.span(&part);
            match part.as_rule() {
                Rule::day_name => days.push(Spanned {
                    value: day_set(part.as_str()),
                    span,
                }),
                _ => times.extend(self.time_of_day(part)),
            }
        }
        Schedule::Days { days, times }
    }

    fn occurrence(&mut self, pair: P<'_>) -> Option<Occurrence> {
        let mut inner = pair.into_inner();
        let mode = match inner.next()?.as_rule() {
            Rule::kw_after => OccurrenceMode::After,
            _ => OccurrenceMode::Every,
        };
        let n = self.integer(inner.next()?);
        Some(Occurrence { mode, n })
    }

    fn unless(&mut self, pair: P<'_>) -> Option<Unless> {
        let mut inner = parts(pair);
        let event = self.ident(inner.next()?);
        let mut filter = None;
        let mut next = inner.next()?;
        if next.as_rule() == Rule::where_clause {
            filter = self.where_clause(next);
            next = inner.next()?;
        }
        let within = self.duration(next);
        Some(Unless {
            event,
            filter,
            within,
        })
    }

    fn wait(&mut self, clause: P<'_>) -> Option<Wait> {
        let pair = parts(clause).next()?;
        Some(match pair.as_rule() {
            Rule::wait_until => Wait::Until(self.time_of_day(parts(pair).next()?)?),
            _ => Wait::For(self.duration(pair)),
        })
    }

    fn quiet(&mut self, clause: P<'_>) -> Option<Quiet> {
        let span = self.span(&clause);
        let mut inner = parts(clause);
        let from = self.time_of_day(inner.next()?)?;
        let to = self.time_of_day(inner.next()?)?;
        Some(Quiet { from, to, span })
    }

    fn cap(&mut self, clause: P<'_>) -> Option<Cap> {
        let span = self.span(&clause);
        let mut inner = parts(clause);
        let count = self.integer(inner.next()?);
        let per = self.duration(inner.next()?);
        Some(Cap { count, per, span })
    }

    // ───────────────────────── expressions ─────────────────────────

    fn expr(&mut self, pair: P<'_>) -> Expr {
        let base = self.base;
        PRATT
            .map_primary(|primary| self.primary(primary))
            .map_prefix(move |op, rhs| Expr {
                span: Span::new(base + op.as_span().start(), rhs.span.end),
                kind: ExprKind::Not(Box::new(rhs)),
            })
            .map_infix(|lhs, op, rhs| {
                let span = lhs.span.to(rhs.span);
                let kind = match op.as_rule() {
                    Rule::kw_and => ExprKind::And(Box::new(lhs), Box::new(rhs)),
                    _ => ExprKind::Or(Box::new(lhs), Box::new(rhs)),
                };
                Expr { kind, span }
            })
            .parse(pair.into_inner())
    }

    fn primary(&mut self, pair: P<'_>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::paren | Rule::where_paren => {
                let inner = pair
                    .into_inner()
                    .next()
                    .expect("parentheses hold an expression");
                let mut expr = self.expr(inner);
                expr.span = span;
                return expr;
            }
            Rule::has_tag => match parts(pair).next() {
                Some(tag) => ExprKind::HasTag(self.string(tag)),
                None => ExprKind::Bool(true),
            },
            Rule::bool_lit => ExprKind::Bool(pair.as_str() == "true"),
            Rule::did => self.did(pair),
            // subject_test / property_test
            _ => {
                let mut inner = pair.into_inner();
                let subject_pair = inner.next().expect("a test has a subject");
                let subject = if subject_pair.as_rule() == Rule::attr_path {
                    Subject::Attr(self.attr_path(subject_pair))
                } else {
                    Subject::Property(self.ident(subject_pair))
                };
                match (subject, inner.next()) {
                    (Subject::Property(name), None) => ExprKind::Name(name),
                    (subject, test) => ExprKind::Test {
                        subject,
                        test: test.map(|t| self.test(t)),
                    },
                }
            }
        };
        Expr { kind, span }
    }

    fn where_clause(&mut self, pair: P<'_>) -> Option<Expr> {
        parts(pair).next().map(|e| self.expr(e))
    }

    fn did(&mut self, pair: P<'_>) -> ExprKind {
        let mut did = Did {
            negated: false,
            event: Ident {
                name: String::new(),
                span: Span::default(),
            },
            filter: None,
            count: None,
            window: None,
        };
        for part in parts(pair) {
            match part.as_rule() {
                Rule::did_not => did.negated = true,
                Rule::ident => did.event = self.ident(part),
                Rule::where_clause => did.filter = self.where_clause(part).map(Box::new),
                Rule::count => did.count = self.count(part),
                _ => did.window = self.window(part),
            }
        }
        ExprKind::Did(did)
    }

    fn count(&mut self, pair: P<'_>) -> Option<CountTest> {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let mode_pair = inner.next()?;
        let mode = match mode_pair.into_inner().map(|p| p.as_rule()).last() {
            Some(Rule::kw_least) => CountMode::AtLeast,
            Some(Rule::kw_most) => CountMode::AtMost,
            _ => CountMode::Exactly,
        };
        let n = self.integer(inner.next()?);
        Some(CountTest { mode, n, span })
    }

    fn window(&mut self, pair: P<'_>) -> Option<Window> {
        let rule = pair.as_rule();
        let mut inner = parts(pair);
        Some(match rule {
            Rule::within_last => Window::WithinLast(self.duration(inner.next()?)),
            Rule::since => Window::Since(self.datetime(inner.next()?)?),
            _ => {
                let from = self.datetime(inner.next()?)?;
                let to = self.datetime(inner.next()?)?;
                Window::Between(from, to)
            }
        })
    }

    fn test(&mut self, pair: P<'_>) -> Test {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = parts(pair);
        let kind = match rule {
            Rule::compare => {
                let op = match inner.next().map(|p| p.as_str()) {
                    Some("==") => CmpOp::Eq,
                    Some("!=") => CmpOp::Ne,
                    Some("<") => CmpOp::Lt,
                    Some("<=") => CmpOp::Le,
                    Some(">") => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                TestKind::Compare(op, self.literal_or_blank(inner.next()))
            }
            Rule::in_list | Rule::not_in_list => TestKind::In {
                negated: rule == Rule::not_in_list,
                values: inner
                    .next()
                    .map(|list| list.into_inner().map(|v| self.literal(v)).collect())
                    .unwrap_or_default(),
            },
            Rule::contains => TestKind::Contains(self.literal_or_blank(inner.next())),
            Rule::is_set => TestKind::IsSet { negated: false },
            Rule::is_not_set => TestKind::IsSet { negated: true },
            _ => {
                // `within last`, `since` and `between` are windows; rebuild from this pair.
                let window = match rule {
                    Rule::within_last => inner.next().map(|d| Window::WithinLast(self.duration(d))),
                    Rule::since => inner
                        .next()
                        .and_then(|d| self.datetime(d))
                        .map(Window::Since),
                    _ => {
                        let from = inner.next().and_then(|d| self.datetime(d));
                        let to = inner.next().and_then(|d| self.datetime(d));
                        from.zip(to).map(|(a, b)| Window::Between(a, b))
                    }
                };
                match window {
                    Some(w) => TestKind::Window(w),
                    None => TestKind::IsSet { negated: false },
                }
            }
        };
        Test { kind, span }
    }

    fn literal_or_blank(&mut self, pair: Option<P<'_>>) -> Literal {
        match pair {
            Some(p) => self.literal(p),
            None => Literal {
                value: Value::Bool(false),
                span: Span::default(),
            },
        }
    }

    fn literal(&mut self, pair: P<'_>) -> Literal {
        let span = self.span(&pair);
        let value = match pair.as_rule() {
            Rule::string => Value::Text(self.string(pair).value),
            Rule::number => Value::Number(pair.as_str().parse().unwrap_or(0.0)),
            Rule::percent => Value::Number(self.percent(&pair)),
            Rule::bool_lit => Value::Bool(pair.as_str() == "true"),
            Rule::duration => Value::Duration(self.duration(pair).seconds),
            Rule::time_of_day => match self.time_of_day(pair) {
                Some(t) => Value::TimeOfDay(t.value),
                None => Value::Bool(false),
            },
            _ => match self.datetime(pair) {
                Some(dt) => Value::DateTime(dt.value),
                None => Value::Bool(false),
            },
        };
        Literal { value, span }
    }

    fn attr_path(&mut self, pair: P<'_>) -> AttrPath {
        let span = self.span(&pair);
        let word = pair
            .into_inner()
            .find(|p| p.as_rule() == Rule::word)
            .expect("a path has a name");
        AttrPath {
            name: self.ident(word),
            span,
        }
    }

    // ───────────────────────── literals ─────────────────────────

    fn string(&mut self, pair: P<'_>) -> Str {
        let span = self.span(&pair);
        let inner = pair.into_inner().next().expect("a string has a body");
        let raw = inner.as_str();
        let raw_start = self.base + inner.as_span().start();
        Str {
            value: self.unescape(raw, raw_start),
            span,
        }
    }

    /// Decodes `\"`, `\\`, `\n`, `\t` and `\u{…}`; reports any other escape on its exact text.
    fn unescape(&mut self, raw: &str, raw_start: usize) -> String {
        if !raw.contains('\\') {
            return raw.to_string();
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, escape)) = chars.next() else {
                break;
            };
            let decoded = match escape {
                '"' => Some('"'),
                '\\' => Some('\\'),
                'n' => Some('\n'),
                't' => Some('\t'),
                'u' => unicode_escape(&raw[i..]).map(|(c, len)| {
                    // Skip the rest of `u{…}`.
                    for _ in 0..len - 2 {
                        chars.next();
                    }
                    c
                }),
                _ => None,
            };
            match decoded {
                Some(c) => out.push(c),
                None => {
                    let end = raw_start + i + 1 + escape.len_utf8();
                    let text = &raw[i..i + 1 + escape.len_utf8()];
                    let d = Diagnostic::new(
                        Code::BadEscape,
                        self.file,
                        Span::new(raw_start + i, end),
                        format!("unknown escape `{text}`"),
                    )
                    .label("not an escape")
                    .help("the escapes are `\\\"`, `\\\\`, `\\n`, `\\t` and `\\u{4E2D}`; write `\\\\` for a backslash");
                    self.diagnostics.push(d);
                }
            }
        }
        out
    }

    fn integer(&mut self, pair: P<'_>) -> Count {
        let span = self.span(&pair);
        let value = pair
            .as_str()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_COUNT);
        let value = value.unwrap_or_else(|| {
            let d = Diagnostic::new(
                Code::NumberTooLarge,
                self.file,
                span,
                format!("`{}` is too large", pair.as_str()),
            )
            .label("too large to be meant")
            .help("counts go up to 1000000000");
            self.diagnostics.push(d);
            MAX_COUNT
        });
        Spanned { value, span }
    }

    fn percent(&mut self, pair: &P<'_>) -> f64 {
        pair.as_str().trim_end_matches('%').parse().unwrap_or(0.0)
    }

    fn duration(&mut self, pair: P<'_>) -> DurationLit {
        let span = self.span(&pair);
        let text = pair.as_str();
        match duration_seconds(text) {
            Some(0) => {
                let d = Diagnostic::new(
                    Code::ZeroDuration,
                    self.file,
                    span,
                    format!("duration `{text}` is zero"),
                )
                .label("zero")
                .help("durations must be greater than zero, e.g. `10m`");
                self.diagnostics.push(d);
                DurationLit { seconds: 0, span }
            }
            Some(seconds) if seconds <= MAX_DURATION_SECONDS => DurationLit { seconds, span },
            _ => {
                let d = Diagnostic::new(
                    Code::DurationTooLong,
                    self.file,
                    span,
                    format!("duration `{text}` is longer than 100 years"),
                )
                .label("too long")
                .help("durations are at most 100 years (`36500d`)");
                self.diagnostics.push(d);
                DurationLit {
                    seconds: MAX_DURATION_SECONDS,
                    span,
                }
            }
        }
    }

    fn time_of_day(&mut self, pair: P<'_>) -> Option<TimeOfDay> {
        let span = self.span(&pair);
        let text = pair.as_str();
        let (h, m) = text.split_once(':')?;
        match NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0) {
            Some(value) => Some(Spanned { value, span }),
            None => {
                let d = Diagnostic::new(
                    Code::InvalidTime,
                    self.file,
                    span,
                    format!("`{text}` is not a time of day"),
                )
                .label("no such time")
                .help("hours go from 00 to 23 and minutes from 00 to 59, e.g. `09:30`");
                self.diagnostics.push(d);
                None
            }
        }
    }

    fn datetime(&mut self, pair: P<'_>) -> Option<DateTimeLit> {
        let span = self.span(&pair);
        let text = pair.as_str();
        match parse_datetime(text) {
            Ok(value) => Some(Spanned { value, span }),
            Err(why) => {
                let d = Diagnostic::new(Code::InvalidTime, self.file, span, format!("`{text}` is not {why}"))
                    .label("no such date or time")
                    .help("write dates as `2026-03-01`, date-times as `2026-03-01 09:00` or `2026-03-01T09:00+08:00`");
                self.diagnostics.push(d);
                None
            }
        }
    }
}

#[derive(Default)]
struct Seen(HashMap<&'static str, Span>);

/// The length of `text` without trailing whitespace and `#` comments.
fn trimmed_len(text: &str) -> usize {
    let mut end = text.trim_end().len();
    loop {
        let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        match comment_start(&text[line_start..end]) {
            Some(at) => end = text[..line_start + at].trim_end().len(),
            None => return end,
        }
    }
}

/// Where a `#` comment starts on a line, outside string literals.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => return Some(i),
            _ => {}
        }
    }
    None
}

/// The name of a campaign clause that may be given only once (actions may repeat).
fn setting_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::status_clause => "status",
        Rule::timezone_clause => "timezone",
        Rule::start_clause => "start",
        Rule::end_clause => "end",
        Rule::audience_clause => "audience",
        Rule::exclude_clause => "exclude",
        Rule::trigger_clause => "trigger",
        Rule::wait_clause => "wait",
        Rule::quiet_clause => "quiet",
        Rule::pace_clause => "pace",
        Rule::cap_clause => "cap",
        Rule::rate_clause => "rate",
        _ => return None,
    })
}

/// Nudge's name for a type other languages call differently.
fn type_alias(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "string" | "str" | "varchar" => "text",
        "int" | "integer" | "float" | "double" | "decimal" | "money" => "number",
        "boolean" => "bool",
        "date" | "datetime" | "timestamp" | "instant" => "time",
        "interval" | "period" => "duration",
        "timezone" | "tz" | "time_zone" => "zone",
        _ => return None,
    })
}

/// The span of a clause's leading keyword.
fn keyword_span(clause: Span, keyword: &str) -> Span {
    Span::new(clause.start, (clause.start + keyword.len()).min(clause.end))
}

fn day_set(name: &str) -> DayOfWeekSet {
    match name {
        "day" => DayOfWeekSet::EveryDay,
        "weekday" => DayOfWeekSet::Weekdays,
        "weekend" => DayOfWeekSet::Weekend,
        _ => DayOfWeekSet::Day(name.parse::<Weekday>().unwrap_or(Weekday::Mon)),
    }
}

/// `\u{4E2D}` at the start of `text` → the character and the escape's length in bytes.
fn unicode_escape(text: &str) -> Option<(char, usize)> {
    let body = text.strip_prefix("\\u{")?;
    let close = body.find('}')?;
    let code = u32::from_str_radix(&body[..close], 16).ok()?;
    (close > 0 && close <= 6)
        .then(|| char::from_u32(code))
        .flatten()
        .map(|c| (c, 3 + close + 1))
}

/// `1h30m` → 5400. `None` on overflow.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number: i64 = 0;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = number.checked_mul(10)?.checked_add(i64::from(digit))?;
            continue;
        }
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            _ => 1,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        number = 0;
    }
    Some(total)
}

/// Parses the forms the grammar accepts: `2026-03-01`, `2026-03-01 09:00[:ss]`,
/// `2026-03-01T09:00[:ss]` with an optional `Z` or `±hh[:]mm` offset.
pub fn parse_datetime(text: &str) -> Result<DateTimeValue, &'static str> {
    let date = text.get(..10).ok_or("a date")?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| "a date")?;
    let rest = &text[10..];
    if rest.is_empty() {
        return Ok(DateTimeValue {
            local: date.and_time(NaiveTime::MIN),
            offset: None,
        });
    }
    let rest = rest.strip_prefix([' ', 'T']).ok_or("a date-time")?;
    let time_len = if rest.as_bytes().get(5) == Some(&b':') {
        8
    } else {
        5
    };
    let time_text = rest.get(..time_len).ok_or("a time of day")?;
    let format = if time_len == 8 { "%H:%M:%S" } else { "%H:%M" };
    let time = NaiveTime::parse_from_str(time_text, format).map_err(|_| "a time of day")?;
    let offset = match &rest[time_len..] {
        "" => None,
        "Z" => Some(FixedOffset::east_opt(0).expect("zero offset")),
        zone => Some(parse_offset(zone).ok_or("a valid offset")?),
    };
    Ok(DateTimeValue {
        local: NaiveDateTime::new(date, time),
        offset,
    })
}

/// `+08:00`, `-0500`
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let sign = match text.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_up() {
        assert_eq!(duration_seconds("1h30m"), Some(5400));
        assert_eq!(duration_seconds("1w"), Some(604_800));
        assert_eq!(duration_seconds("0m"), Some(0));
        assert_eq!(duration_seconds("99999999999999999999d"), None);
    }

    #[test]
    fn datetimes_in_every_form() {
        let plain = parse_datetime("2026-03-01").unwrap();
        assert_eq!(plain.local.to_string(), "2026-03-01 00:00:00");
        let local = parse_datetime("2026-03-01 09:00").unwrap();
        assert_eq!(local.local.to_string(), "2026-03-01 09:00:00");
        assert_eq!(local.offset, None);
        let offset = parse_datetime("2026-03-01T09:00+08:00").unwrap();
        assert_eq!(offset.offset.unwrap().local_minus_utc(), 8 * 3600);
        let utc = parse_datetime("2026-03-01T09:00:30Z").unwrap();
        assert_eq!(utc.local.to_string(), "2026-03-01 09:00:30");
        assert!(parse_datetime("2026-02-30").is_err());
        assert!(parse_datetime("2026-03-01 25:00").is_err());
        for junk in [
            "yesterday",
            "",
            "2026-03-01X",
            "2026-03-01 9",
            "2026-03-01 09:00+99:00",
            "2026-03-01 09:00城",
        ] {
            assert!(parse_datetime(junk).is_err(), "{junk}");
        }
    }
}
