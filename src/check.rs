//! Stage 3 — check: names, types and campaign rules, across all the files of a project.
//!
//! The checker never stops at the first problem: it reports everything it can find in one pass,
//! and keeps going after an error with the best guess it has.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ast::*;
use crate::diagnostics::{did_you_mean, Code, Diagnostic};
use crate::schedule::CronSchedule;

/// The longest `unless … within` window (seed 002: "up to 30 days").
pub const MAX_UNLESS_WINDOW_SECONDS: i64 = 30 * 86_400;
/// A longer SMS is split into several messages (70 UCS-2 characters; 67 per part once split).
pub const SMS_SINGLE_LIMIT: usize = 70;
const SMS_PART_LENGTH: usize = 67;
/// WeCom's limit on tag names (seed 001).
pub const TAG_NAME_LIMIT: usize = 16;

pub struct CheckOptions {
    /// What "in the past" means for the back-fill warning.
    pub now: DateTime<Utc>,
}

/// A declared field: a customer attribute or an event property.
#[derive(Clone, Debug)]
pub struct Field {
    pub ty: Type,
    pub optional: bool,
    pub file: FileId,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct EventSchema {
    pub fields: BTreeMap<String, Field>,
    /// `None` for the built-in `tag_added` / `tag_removed`.
    pub declared: Option<(FileId, Span)>,
}

#[derive(Clone, Debug)]
pub struct ChannelSchema {
    pub kind: ChannelKind,
    /// The customer attribute holding the address; `None` for tasks.
    pub address: Option<String>,
    pub declared: Option<(FileId, Span)>,
}

/// Everything a project declares, as the checker and the interpreter see it.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub attributes: BTreeMap<String, Field>,
    pub events: BTreeMap<String, EventSchema>,
    pub channels: BTreeMap<String, ChannelSchema>,
    pub segments: BTreeMap<String, (FileId, Span)>,
    /// The policy's time zone, when it names a valid one.
    pub default_timezone: Option<Tz>,
    /// The policy's quiet hours, which apply to campaigns without their own.
    pub default_quiet: Option<Quiet>,
    /// The policy's cap, counted across every campaign.
    pub policy_cap: Option<Cap>,
}

pub const BUILTIN_EVENTS: [&str; 2] = ["tag_added", "tag_removed"];

impl Schema {
    /// The time zone of a campaign: its own, else the policy's, else UTC.
    pub fn campaign_zone(&self, campaign: &Campaign) -> Tz {
        campaign
            .timezone
            .as_ref()
            .and_then(|tz| tz.value.parse().ok())
            .or(self.default_timezone)
            .unwrap_or(Tz::UTC)
    }

    /// The channel a campaign names: a declared one, else a built-in kind of that name.
    pub fn channel(&self, name: &str) -> Option<ChannelSchema> {
        self.channels.get(name).cloned().or_else(|| {
            ChannelKind::from_name(name).map(|kind| ChannelSchema {
                kind,
                address: kind.default_address().map(str::to_string),
                declared: None,
            })
        })
    }
}

/// Checks a whole project. `modules` are the lowered files; the result is in no particular order.
pub fn check(modules: &[(FileId, Module)], options: &CheckOptions) -> Vec<Diagnostic> {
    let mut checker = Checker::new(options);
    checker.collect_declarations(modules);
    checker.check_items(modules);
    checker.report_segment_cycles();
    checker.report_unused_segments();
    checker.diagnostics
}

/// Builds the schema alone (for the interpreter, once `check` found no errors).
pub fn schema(modules: &[(FileId, Module)]) -> Schema {
    let options = CheckOptions { now: Utc::now() };
    let mut checker = Checker::new(&options);
    checker.collect_declarations(modules);
    checker.schema
}

struct Checker<'a> {
    diagnostics: Vec<Diagnostic>,
    schema: Schema,
    segment_exprs: HashMap<&'a str, (FileId, &'a SegmentDecl)>,
    used_segments: HashSet<String>,
    /// Names of items that exist but could not be read (syntax errors, unknown channel kinds):
    /// their users are not also told the name is unknown. Keyed by item keyword.
    broken: HashSet<(&'static str, String)>,
    /// The time zone of dates written without an offset in the item being checked.
    zone: Tz,
    /// The file whose items are being checked.
    file: FileId,
    options: &'a CheckOptions,
}

/// Where an expression is evaluated: over a customer, or over one event's properties.
#[derive(Clone, Copy)]
enum Scope<'s> {
    Customer,
    Event(&'s str),
}

/// What `{{event.x}}` may refer to in a campaign's messages.
enum TemplateEvent<'s> {
    None(&'static str),
    Event(&'s str),
}

impl<'a> Checker<'a> {
    fn new(options: &'a CheckOptions) -> Checker<'a> {
        Checker {
            diagnostics: Vec::new(),
            schema: Schema::default(),
            segment_exprs: HashMap::new(),
            used_segments: HashSet::new(),
            broken: HashSet::new(),
            zone: Tz::UTC,
            file: 0,
            options,
        }
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn new_diag(&self, code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, self.file, span, message)
    }

    // ───────────────────────── declarations ─────────────────────────

    fn collect_declarations(&mut self, modules: &'a [(FileId, Module)]) {
        for name in BUILTIN_EVENTS {
            let mut fields = BTreeMap::new();
            fields.insert(
                "tag".to_string(),
                Field {
                    ty: Type::Text,
                    optional: false,
                    file: 0,
                    span: Span::default(),
                },
            );
            self.schema.events.insert(
                name.to_string(),
                EventSchema {
                    fields,
                    declared: None,
                },
            );
        }
        self.schema.attributes.insert(
            "id".to_string(),
            Field {
                ty: Type::Text,
                optional: false,
                file: 0,
                span: Span::default(),
            },
        );
        let mut campaigns: HashMap<&str, (FileId, Span)> = HashMap::new();
        let mut tag_rules: HashMap<&str, (FileId, Span)> = HashMap::new();
        let mut policy: Option<(FileId, Span)> = None;
        for (file, module) in modules {
            self.file = *file;
            for (keyword, name) in &module.unparsed {
                let keyword = match keyword.as_str() {
                    "segment" => "segment",
                    "event" => "event",
                    "channel" => "channel",
                    "customer" => "customer",
                    _ => continue,
                };
                self.broken
                    .insert((keyword, name.clone().unwrap_or_default()));
            }
            for item in &module.items {
                match item {
                    Item::Customer(decl) => {
                        for field in &decl.fields {
                            self.declare_attribute(field);
                        }
                    }
                    Item::Event(decl) => self.declare_event(decl),
                    Item::Channel(decl) => self.declare_channel(decl),
                    Item::Segment(decl) => {
                        if self.duplicate(
                            &decl.name.name,
                            decl.name.span,
                            "segment",
                            self.schema.segments.get(&decl.name.name).copied(),
                        ) {
                            continue;
                        }
                        self.schema
                            .segments
                            .insert(decl.name.name.clone(), (*file, decl.name.span));
                        self.segment_exprs.insert(&decl.name.name, (*file, decl));
                    }
                    Item::Campaign(c) => {
                        let first = campaigns.get(c.name.value.as_str()).copied();
                        if !self.duplicate(&c.name.value, c.name.span, "campaign", first) {
                            campaigns.insert(&c.name.value, (*file, c.name.span));
                        }
                    }
                    Item::TagRule(rule) => {
                        let first = tag_rules.get(rule.tag.value.as_str()).copied();
                        if !self.duplicate(&rule.tag.value, rule.tag.span, "tag rule", first) {
                            tag_rules.insert(&rule.tag.value, (*file, rule.tag.span));
                        }
                    }
                    Item::Policy(p) => {
                        let keyword = Span::new(p.span.start, p.span.start + "policy".len());
                        if let Some((first_file, first_span)) = policy {
                            let d = self
                                .new_diag(Code::DuplicateClause, keyword, "`policy` is given twice")
                                .label("second policy")
                                .also(first_file, first_span, "first policy")
                                .help("a project has one policy: merge them");
                            self.push(d);
                        } else {
                            policy = Some((*file, keyword));
                            self.schema.default_timezone =
                                p.timezone.as_ref().and_then(|tz| tz.value.parse().ok());
                            self.schema.default_quiet = p.quiet;
                            self.schema.policy_cap = p.cap;
                        }
                    }
                }
            }
        }
    }

    /// Reports `name` defined twice; true if it was.
    fn duplicate(
        &mut self,
        name: &str,
        span: Span,
        what: &str,
        first: Option<(FileId, Span)>,
    ) -> bool {
        let Some((first_file, first_span)) = first else {
            return false;
        };
        let d = self
            .new_diag(
                Code::DuplicateName,
                span,
                format!("{what} `{name}` is defined twice"),
            )
            .label("defined again here")
            .also(first_file, first_span, "first defined here")
            .help(format!("rename one of them or remove the second {what}"));
        self.push(d);
        true
    }

    fn field(&self, decl: &FieldDecl) -> Field {
        Field {
            ty: decl.ty.ty,
            optional: decl.ty.optional,
            file: self.file,
            span: decl.name.span,
        }
    }

    fn declare_attribute(&mut self, decl: &FieldDecl) {
        let first = self
            .schema
            .attributes
            .get(&decl.name.name)
            .filter(|f| f.span != Span::default() || decl.name.name != "id")
            .map(|f| (f.file, f.span));
        if decl.name.name == "id" {
            let d = self
                .new_diag(
                    Code::DuplicateName,
                    decl.name.span,
                    "attribute `id` is built in",
                )
                .label("already declared by Nudge")
                .help("every customer has a text `id`; remove this line");
            self.push(d);
            return;
        }
        if !self.duplicate(&decl.name.name, decl.name.span, "attribute", first) {
            let field = self.field(decl);
            self.schema.attributes.insert(decl.name.name.clone(), field);
        }
    }

    fn declare_event(&mut self, decl: &EventDecl) {
        let name = &decl.name.name;
        if BUILTIN_EVENTS.contains(&name.as_str()) {
            let d = self
                .new_diag(
                    Code::DuplicateName,
                    decl.name.span,
                    format!("event `{name}` is built in"),
                )
                .label("already declared by Nudge")
                .help("`tag_added` and `tag_removed` exist already, with a `tag: text` property");
            self.push(d);
            return;
        }
        let first = self.schema.events.get(name).and_then(|e| e.declared);
        if self.duplicate(name, decl.name.span, "event", first) {
            return;
        }
        let mut fields: BTreeMap<String, Field> = BTreeMap::new();
        for field in &decl.fields {
            let first = fields.get(&field.name.name).map(|f| (f.file, f.span));
            if !self.duplicate(&field.name.name, field.name.span, "property", first) {
                fields.insert(field.name.name.clone(), self.field(field));
            }
        }
        self.schema.events.insert(
            name.clone(),
            EventSchema {
                fields,
                declared: Some((self.file, decl.name.span)),
            },
        );
    }

    fn declare_channel(&mut self, decl: &ChannelDecl) {
        let name = &decl.name.name;
        let first = self.schema.channels.get(name).and_then(|c| c.declared);
        if self.duplicate(name, decl.name.span, "channel", first) {
            return;
        }
        let kind_ident = decl.kind.as_ref().unwrap_or(&decl.name);
        let Some(kind) = ChannelKind::from_name(&kind_ident.name) else {
            let kinds = ChannelKind::ALL.iter().map(|(n, _)| *n);
            let help = did_you_mean(&kind_ident.name, kinds).unwrap_or_else(|| {
                "the kinds are `sms`, `email`, `push`, `wecom`, `moments` and `task`; \
                 name one with `kind`: `channel vip_sms kind sms { … }`"
                    .to_string()
            });
            self.broken.insert(("channel", name.clone()));
            let d = self
                .new_diag(
                    Code::UnknownChannelKind,
                    kind_ident.span,
                    format!("unknown channel kind `{}`", kind_ident.name),
                )
                .label("not a channel kind")
                .help(help);
            self.push(d);
            return;
        };
        let address = decl
            .to
            .as_ref()
            .map(|to| to.name.name.clone())
            .or_else(|| kind.default_address().map(str::to_string));
        self.schema.channels.insert(
            name.clone(),
            ChannelSchema {
                kind,
                address,
                declared: Some((self.file, decl.name.span)),
            },
        );
    }

    // ───────────────────────── items ─────────────────────────

    fn check_items(&mut self, modules: &'a [(FileId, Module)]) {
        for (file, module) in modules {
            self.file = *file;
            for item in &module.items {
                self.zone = self.schema.default_timezone.unwrap_or(Tz::UTC);
                match item {
                    Item::Customer(_) | Item::Event(_) => {}
                    Item::Channel(decl) => self.check_channel(decl),
                    Item::Segment(decl) => self.check_expr(&decl.expr, Scope::Customer),
                    Item::TagRule(rule) => {
                        self.check_tag_name(&rule.tag);
                        self.check_expr(&rule.expr, Scope::Customer);
                    }
                    Item::Policy(policy) => self.check_policy(policy),
                    Item::Campaign(campaign) => self.check_campaign(campaign),
                }
            }
        }
    }

    fn check_channel(&mut self, decl: &ChannelDecl) {
        if let Some(to) = &decl.to {
            if self.check_attr(to).is_some_and(|f| f.ty != Type::Text) {
                let ty = self.schema.attributes[&to.name.name].ty;
                let d = self
                    .new_diag(
                        Code::TypeMismatch,
                        to.span,
                        format!(
                            "`customer.{}` is {}, but addresses are text",
                            to.name.name,
                            article(ty)
                        ),
                    )
                    .label(ty.name());
                self.push(d);
            }
        } else if let Some(channel) = self.schema.channels.get(&decl.name.name).cloned() {
            self.check_address(&channel, decl.name.span, &decl.name.name);
        }
        if let Some(reachable) = &decl.reachable {
            self.check_expr(reachable, Scope::Customer);
        }
    }

    /// A channel's address attribute must be declared.
    fn check_address(&mut self, channel: &ChannelSchema, span: Span, name: &str) {
        let Some(address) = &channel.address else {
            return;
        };
        if self.schema.attributes.contains_key(address) {
            return;
        }
        let d = self
            .new_diag(
                Code::MissingAddress,
                span,
                format!("channel `{name}` sends to `customer.{address}`, which is not declared"),
            )
            .label(format!("needs `customer.{address}`"))
            .help(format!(
                "declare it: `customer {{ {address}: text? }}`, or say where the address is: \
                 `channel {name} {{ to customer.… }}`"
            ));
        self.push(d);
    }

    fn check_policy(&mut self, policy: &Policy) {
        if let Some(tz) = &policy.timezone {
            self.check_timezone(tz);
        }
        if let Some(cap) = &policy.cap {
            self.check_cap(cap);
        }
        if let Some(quiet) = &policy.quiet {
            self.check_quiet(quiet);
        }
    }

    fn check_timezone(&mut self, tz: &Str) -> Option<Tz> {
        if let Ok(zone) = tz.value.parse::<Tz>() {
            return Some(zone);
        }
        let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
        let help = did_you_mean(&tz.value, names).unwrap_or_else(|| {
            "use an IANA zone name such as `Asia/Shanghai` or `UTC`".to_string()
        });
        let d = self
            .new_diag(
                Code::InvalidTimezone,
                tz.span,
                format!("unknown time zone `{}`", tz.value),
            )
            .label("not an IANA time zone")
            .help(help);
        self.push(d);
        None
    }

    /// `message` says what the zero does, quoting the user's clause: "`pace 0` lets nothing through".
    fn check_nonzero(&mut self, count: Count, message: &str, help: &str) {
        if count.value == 0 {
            let d = self
                .new_diag(Code::ZeroCount, count.span, message)
                .label("zero")
                .help(help);
            self.push(d);
        }
    }

    fn check_cap(&mut self, cap: &Cap) {
        self.check_nonzero(
            cap.count,
            "`cap 0` blocks every delivery",
            "a cap counts from 1, e.g. `cap 3 per customer per 1d`; to stop a campaign, set `status paused`",
        );
    }

    fn check_quiet(&mut self, quiet: &Quiet) {
        if quiet.from.value == quiet.to.value {
            let d = self
                .new_diag(
                    Code::EmptyQuietHours,
                    quiet.from.span.to(quiet.to.span),
                    "quiet hours start and end at the same time",
                )
                .label("empty window")
                .help("give the window a length, e.g. `quiet 22:00 to 08:00`");
            self.push(d);
        }
    }

    fn check_tag_name(&mut self, tag: &Str) {
        let length = tag.value.chars().count();
        if length > TAG_NAME_LIMIT {
            let d = self
                .new_diag(
                    Code::TagTooLong,
                    tag.span,
                    format!("tag `{}` is {length} characters long", tag.value),
                )
                .label(format!("more than {TAG_NAME_LIMIT} characters"))
                .help(format!(
                    "WeCom allows tag names of at most {TAG_NAME_LIMIT} characters"
                ));
            self.push(d);
        }
    }

    // ───────────────────────── campaigns ─────────────────────────

    fn check_campaign(&mut self, c: &Campaign) {
        let zone = c
            .timezone
            .as_ref()
            .and_then(|tz| self.check_timezone(tz))
            .or(self.schema.default_timezone)
            .unwrap_or(Tz::UTC);
        self.zone = zone;
        self.check_start_end(c, zone);
        match &c.audience {
            Some(audience) => self.check_expr(audience, Scope::Customer),
            None => {
                let d = self
                    .new_diag(
                        Code::NoAudience,
                        c.name.span,
                        format!(
                            "campaign `{}` has no audience, so it targets every customer",
                            c.name.value
                        ),
                    )
                    .label("no `audience`")
                    .help("add `audience …`, or `audience true` to target everyone on purpose");
                self.push(d);
            }
        }
        if let Some(exclude) = &c.exclude {
            self.check_expr(exclude, Scope::Customer);
        }
        let template_event = match &c.trigger {
            Some(trigger) => self.check_trigger(trigger),
            None => {
                let d = self
                    .new_diag(
                        Code::MissingTrigger,
                        c.name.span,
                        format!("campaign `{}` has no trigger", c.name.value),
                    )
                    .label("never fires")
                    .help("add one, e.g. `trigger at 2026-03-01 20:00` or `trigger on purchase`");
                self.push(d);
                TemplateEvent::None("the campaign has no trigger")
            }
        };
        if let Some(quiet) = &c.quiet {
            self.check_quiet(quiet);
        }
        if let Some(pace) = &c.pace {
            self.check_nonzero(
                pace.count,
                "`pace 0` lets nothing through",
                "write how many deliveries a customer may get per period, e.g. `pace 1 per 1h`",
            );
        }
        if let Some(cap) = &c.cap {
            self.check_cap(cap);
        }
        if let Some(rate) = &c.rate {
            self.check_nonzero(
                rate.count,
                "`rate 0` sends nothing",
                "write how many deliveries may go out, e.g. `rate 600 per minute`",
            );
        }
        if c.actions.is_empty() {
            let d = self
                .new_diag(
                    Code::MissingAction,
                    c.name.span,
                    format!("campaign `{}` does nothing", c.name.value),
                )
                .label("no action")
                .help("add a `send`, `add tag`, `remove tag` or `split`");
            self.push(d);
        }
        self.check_actions(&c.actions, &template_event);
    }

    fn check_start_end(&mut self, c: &Campaign, zone: Tz) {
        let start = c.start.map(|s| (s, instant(&s.value, zone)));
        let end = c.end.map(|e| (e, instant(&e.value, zone)));
        if let (Some((s, start_at)), Some((e, end_at))) = (start, end) {
            if end_at <= start_at {
                let d = self
                    .new_diag(
                        Code::EndBeforeStart,
                        e.span,
                        "the campaign ends before it starts",
                    )
                    .label("ends here")
                    .also(self.file, s.span, "starts here")
                    .help("`end` must be later than `start`");
                self.push(d);
            }
        }
        if let Some((s, start_at)) = start {
            if start_at < self.options.now {
                let d = self
                    .new_diag(
                        Code::Backfill,
                        s.span,
                        format!("campaign `{}` starts in the past", c.name.value),
                    )
                    .label("before now")
                    .help("its first run will catch up on every trigger since the start; remove `start` to begin from the first run instead");
                self.push(d);
            }
        }
    }

    /// Checks a trigger, and says what `{{event.x}}` refers to in the campaign's messages.
    fn check_trigger<'t>(&mut self, trigger: &'t Trigger) -> TemplateEvent<'t> {
        match &trigger.kind {
            TriggerKind::At(_) => TemplateEvent::None("the trigger is a date, not an event"),
            TriggerKind::Every {
                schedule,
                for_after,
            } => {
                if let Schedule::Cron(text) = schedule {
                    if let Err(why) = CronSchedule::parse(&text.value) {
                        let d = self
                            .new_diag(Code::InvalidCron, text.span, format!("invalid cron schedule `{}`", text.value))
                            .label(why)
                            .help("write standard cron: `minute hour day-of-month month day-of-week`, e.g. `\"0 10 * * 1-5\"`");
                        self.push(d);
                    }
                }
                if let Some(for_after) = for_after {
                    self.check_time_attr(&for_after.attr);
                }
                TemplateEvent::None("the trigger is a schedule, not an event")
            }
            TriggerKind::On {
                event,
                filter,
                occurrence,
                unless,
            } => {
                let known = self.check_event(event);
                if let (Some(filter), true) = (filter, known) {
                    self.check_expr(filter, Scope::Event(&event.name));
                }
                if let Some(occurrence) = occurrence {
                    let message = match occurrence.mode {
                        OccurrenceMode::After => "`after 0 times` fires before anything happened",
                        OccurrenceMode::Every => "`every 0 times` never fires",
                    };
                    self.check_nonzero(occurrence.n, message, "count from 1: `after 3 times`");
                }
                if let Some(unless) = unless {
                    if self.check_event(&unless.event) {
                        if let Some(filter) = &unless.filter {
                            self.check_expr(filter, Scope::Event(&unless.event.name));
                        }
                    }
                    if unless.within.seconds > MAX_UNLESS_WINDOW_SECONDS {
                        let d = self
                            .new_diag(
                                Code::WindowTooLong,
                                unless.within.span,
                                "an `unless … within` window is at most 30 days",
                            )
                            .label("longer than 30d")
                            .help("shorten the window to `30d` or less");
                        self.push(d);
                    }
                }
                if known {
                    TemplateEvent::Event(&event.name)
                } else {
                    TemplateEvent::None("")
                }
            }
            TriggerKind::Tag { tag, change } => {
                self.check_tag_name(tag);
                TemplateEvent::Event(match change {
                    TagChange::Added => "tag_added",
                    TagChange::Removed => "tag_removed",
                })
            }
        }
    }

    /// Reports an undeclared event; true if it is known.
    fn check_event(&mut self, event: &Ident) -> bool {
        if self.schema.events.contains_key(&event.name) {
            return true;
        }
        if self.broken.contains(&("event", event.name.clone())) {
            return false;
        }
        let candidates: Vec<&str> = self.schema.events.keys().map(String::as_str).collect();
        let help = did_you_mean(&event.name, candidates)
            .unwrap_or_else(|| format!("declare it: `event {} {{ … }}`", event.name));
        let d = self
            .new_diag(
                Code::UnknownEvent,
                event.span,
                format!("unknown event `{}`", event.name),
            )
            .label("this event is not declared")
            .help(help);
        self.push(d);
        false
    }

    fn check_actions(&mut self, actions: &[Action], template_event: &TemplateEvent<'_>) {
        for action in actions {
            match action {
                Action::Send(send) => {
                    for delivery in std::iter::once(&send.primary).chain(&send.fallbacks) {
                        self.check_delivery(delivery, template_event);
                    }
                }
                Action::AddTag(tag) | Action::RemoveTag(tag) => self.check_tag_name(tag),
                Action::Split(split) => self.check_split(split, template_event),
            }
        }
    }

    fn check_split(&mut self, split: &Split, template_event: &TemplateEvent<'_>) {
        let mut variants: HashMap<&str, Span> = HashMap::new();
        for arm in &split.arms {
            if arm.share.value <= 0.0 {
                let d = self
                    .new_diag(Code::ZeroCount, arm.share.span, "a 0% share reaches nobody")
                    .label("zero")
                    .help("remove this arm, or give it a share");
                self.push(d);
            }
            if let Some(variant) = &arm.variant {
                let first = variants
                    .get(variant.value.as_str())
                    .map(|s| (self.file, *s));
                if !self.duplicate(&variant.value, variant.span, "variant", first) {
                    variants.insert(&variant.value, variant.span);
                }
            }
            self.check_actions(&arm.actions, template_event);
        }
        let total: f64 = split.arms.iter().map(|a| a.share.value).sum();
        if (total - 100.0).abs() > 1e-9 {
            let keyword = Span::new(split.span.start, split.span.start + "split".len());
            let d = self
                .new_diag(
                    Code::SplitTotal,
                    keyword,
                    format!("split shares add up to {}%, not 100%", format_number(total)),
                )
                .label("shares do not add up")
                .help("make the shares add up to 100%; give the rest to `control` to hold it out");
            self.push(d);
        }
    }

    fn check_delivery(&mut self, delivery: &Delivery, template_event: &TemplateEvent<'_>) {
        let name = &delivery.channel.name;
        if self.broken.contains(&("channel", name.clone())) {
            return;
        }
        let Some(channel) = self.schema.channel(name) else {
            let mut candidates: Vec<&str> =
                self.schema.channels.keys().map(String::as_str).collect();
            candidates.extend(ChannelKind::ALL.iter().map(|(n, _)| *n));
            let help = did_you_mean(name, candidates.iter().copied()).unwrap_or_else(|| {
                let kind = guess_kind(&delivery.content);
                let address = kind.default_address().unwrap_or("phone");
                let declared: Vec<String> = self
                    .schema
                    .channels
                    .keys()
                    .map(|c| format!("`{c}`"))
                    .collect();
                let known = if declared.is_empty() {
                    String::new()
                } else {
                    format!("the declared channels are {}; or ", declared.join(", "))
                };
                format!(
                    "{known}declare it: `channel {name} kind {} {{ to customer.{address} }}`",
                    kind.name()
                )
            });
            let d = self
                .new_diag(
                    Code::UnknownChannel,
                    delivery.channel.span,
                    format!("unknown channel `{name}`"),
                )
                .label("not a declared channel or a built-in kind")
                .help(help);
            self.push(d);
            return;
        };
        if channel.declared.is_none() {
            self.check_address(&channel, delivery.channel.span, name);
        }
        self.check_content(delivery, channel.kind);
        self.check_employees(delivery, channel.kind);
        for text in delivery.content.strings() {
            self.check_template(text, template_event);
        }
        if channel.kind == ChannelKind::Sms {
            if let Some(text) = &delivery.content.lead {
                self.check_sms_length(text);
            }
        }
    }

    /// One error per message whose parts do not fit its channel: the first problem, where it is,
    /// and how the message is written.
    fn check_content(&mut self, delivery: &Delivery, kind: ChannelKind) {
        if let Some((span, message)) = content_problem(delivery, kind) {
            let d = self
                .new_diag(Code::WrongContent, span, message)
                .label(format!("not how {} is written", article_kind(kind)))
                .help(format!("write it as: `{}`", content_example(kind)));
            self.push(d);
        }
    }

    fn check_employees(&mut self, delivery: &Delivery, kind: ChannelKind) {
        let takes_employee = matches!(
            kind,
            ChannelKind::Moments | ChannelKind::Wecom | ChannelKind::Task
        );
        if let (Some(choice), false) = (&delivery.employee, takes_employee) {
            let d = self
                .new_diag(
                    Code::MisplacedOption,
                    choice.span,
                    format!("{} is not sent by an employee", article_kind(kind)),
                )
                .label("`by employee` does not apply")
                .help("`by employee` is for `moments`, `wecom` and `task` channels");
            self.push(d);
        }
        if let Some(assign) = &delivery.assign {
            if kind != ChannelKind::Task {
                let d = self
                    .new_diag(
                        Code::MisplacedOption,
                        assign.span,
                        format!("{} cannot be assigned", article_kind(kind)),
                    )
                    .label("`assign` does not apply")
                    .help("`assign` divides manual tasks among employees: use it with `task`");
                self.push(d);
            } else if assign.employees.is_empty() {
                let d = self
                    .new_diag(
                        Code::ZeroCount,
                        assign.span,
                        "`assign` needs at least one employee",
                    )
                    .label("empty list")
                    .help("list who does the task: `assign [\"alice\", \"bob\"] evenly`");
                self.push(d);
            }
        }
        if let Some(EmployeeChoice {
            rule: EmployeeRule::Priority(list),
            span,
        }) = &delivery.employee
        {
            if list.is_empty() {
                let d = self
                    .new_diag(
                        Code::ZeroCount,
                        *span,
                        "`by employee` needs at least one employee",
                    )
                    .label("empty list")
                    .help("list employees in priority order, or use `last_added` / `first_added`");
                self.push(d);
            }
        }
        if kind == ChannelKind::Task && delivery.assign.is_none() && delivery.employee.is_none() {
            let d = self
                .new_diag(
                    Code::MisplacedOption,
                    delivery.channel.span,
                    "a task needs someone to do it",
                )
                .label("no employee")
                .help("add `assign [\"alice\", \"bob\"] evenly` or `by employee last_added`");
            self.push(d);
        }
    }

    fn check_sms_length(&mut self, text: &Str) {
        let length = template_free_length(&text.value);
        if length > SMS_SINGLE_LIMIT {
            let parts = length.div_ceil(SMS_PART_LENGTH);
            let d = self
                .new_diag(Code::SmsTooLong, text.span, format!("sms text is {length} characters long"))
                .label(format!("sent as {parts} messages"))
                .help(format!(
                    "an SMS holds {SMS_SINGLE_LIMIT} characters; longer texts are split and billed per part"
                ));
            self.push(d);
        }
    }

    /// Checks every `{{…}}` in a message.
    fn check_template(&mut self, text: &Str, template_event: &TemplateEvent<'_>) {
        // Offsets into the source are exact only when the string has no escapes.
        let exact = text.span.end - text.span.start == text.value.len() + 2;
        let locate = |range: std::ops::Range<usize>| {
            if exact {
                Span::new(
                    text.span.start + 1 + range.start,
                    text.span.start + 1 + range.end,
                )
            } else {
                text.span
            }
        };
        for placeholder in placeholders(&text.value) {
            match placeholder {
                Err(at) => {
                    let d = self
                        .new_diag(Code::BadTemplate, locate(at..at + 2), "`{{` is not closed")
                        .label("opened here")
                        .help("close it: `{{customer.name}}`");
                    self.push(d);
                }
                Ok((path, range)) => self.check_variable(path, locate(range), template_event),
            }
        }
    }

    fn check_variable(&mut self, path: &str, span: Span, template_event: &TemplateEvent<'_>) {
        let (root, name) = path.split_once('.').unwrap_or((path, ""));
        match root {
            "customer" if self.schema.attributes.contains_key(name) => {}
            "customer" => {
                let help = self.attribute_help(name);
                let d = self
                    .new_diag(
                        Code::UnknownVariable,
                        span,
                        format!("unknown attribute `customer.{name}`"),
                    )
                    .label("not a declared attribute")
                    .help(help);
                self.push(d);
            }
            "event" => match template_event {
                TemplateEvent::None("") => {}
                TemplateEvent::None(why) => {
                    let d = self
                        .new_diag(
                            Code::NoTriggerEvent,
                            span,
                            format!("`{{{{{path}}}}}` has no event to read"),
                        )
                        .label(*why)
                        .help("`{{event.…}}` works in campaigns triggered `on` an event");
                    self.push(d);
                }
                TemplateEvent::Event(event) => {
                    let fields = &self.schema.events[*event].fields;
                    if !fields.contains_key(name) {
                        let help = property_help(event, fields, name, "event.");
                        let d = self
                            .new_diag(
                                Code::UnknownVariable,
                                span,
                                format!("unknown property `event.{name}`"),
                            )
                            .label(format!("not a property of `{event}`"))
                            .help(help);
                        self.push(d);
                    }
                }
            },
            _ => {
                let d = self
                    .new_diag(Code::UnknownVariable, span, format!("unknown variable `{path}`"))
                    .label("not a variable")
                    .help("variables are `{{customer.NAME}}` and, in event-triggered campaigns, `{{event.NAME}}`");
                self.push(d);
            }
        }
    }

    // ───────────────────────── expressions ─────────────────────────

    fn check_expr(&mut self, expr: &Expr, scope: Scope<'_>) {
        match &expr.kind {
            ExprKind::And(a, b) | ExprKind::Or(a, b) => {
                self.check_expr(a, scope);
                self.check_expr(b, scope);
            }
            ExprKind::Not(inner) => self.check_expr(inner, scope),
            ExprKind::Bool(_) => {}
            ExprKind::HasTag(tag) => self.check_tag_name(tag),
            ExprKind::Did(did) => self.check_did(did),
            ExprKind::Name(name) => self.check_name(name, scope),
            ExprKind::Test { subject, test } => self.check_test(subject, test.as_ref(), scope),
        }
    }

    fn check_did(&mut self, did: &Did) {
        if self.check_event(&did.event) {
            if let Some(filter) = &did.filter {
                self.check_expr(filter, Scope::Event(&did.event.name));
            }
        }
        if let Some(count) = &did.count {
            if count.mode == CountMode::AtLeast && count.n.value == 0 {
                self.check_nonzero(
                    count.n,
                    "`at least 0 times` is always true",
                    "count from 1, or remove the condition",
                );
            }
        }
        if let Some(window) = &did.window {
            self.check_window(window);
        }
    }

    fn check_window(&mut self, window: &Window) {
        if let Window::Between(from, to) = window {
            if instant(&to.value, self.zone) <= instant(&from.value, self.zone) {
                let d = self
                    .new_diag(
                        Code::EmptyWindow,
                        from.span.to(to.span),
                        "this window ends before it starts",
                    )
                    .label("empty window")
                    .help("write the earlier date first: `between 2026-01-01 and 2026-02-01`");
                self.push(d);
            }
        }
    }

    /// A bare name: a segment over customers, a bool property over events.
    fn check_name(&mut self, name: &Ident, scope: Scope<'_>) {
        match scope {
            Scope::Customer => {
                self.used_segments.insert(name.name.clone());
                if self.schema.segments.contains_key(&name.name)
                    || self.broken.contains(&("segment", name.name.clone()))
                {
                    return;
                }
                let candidates: Vec<&str> =
                    self.schema.segments.keys().map(String::as_str).collect();
                let help = did_you_mean(&name.name, candidates).unwrap_or_else(|| {
                    if self.schema.attributes.contains_key(&name.name) {
                        format!("attributes are written `customer.{}`", name.name)
                    } else {
                        format!("define it: `segment {} = …`", name.name)
                    }
                });
                let d = self
                    .new_diag(
                        Code::UnknownSegment,
                        name.span,
                        format!("unknown segment `{}`", name.name),
                    )
                    .label("no segment has this name")
                    .help(help);
                self.push(d);
            }
            Scope::Event(event) => {
                if let Some(field) = self.property(name, event) {
                    if field.ty != Type::Bool {
                        let d = self
                            .new_diag(
                                Code::TypeMismatch,
                                name.span,
                                format!(
                                    "`{}` is {}, not a condition",
                                    name.name,
                                    article(field.ty)
                                ),
                            )
                            .label(field.ty.name())
                            .help(format!("compare it, e.g. `{} == …`", name.name));
                        self.push(d);
                    }
                }
            }
        }
    }

    /// Looks up an event property, reporting it if unknown.
    fn property(&mut self, name: &Ident, event: &str) -> Option<Field> {
        let fields = &self.schema.events.get(event)?.fields;
        if let Some(field) = fields.get(&name.name) {
            return Some(field.clone());
        }
        let help = property_help(event, fields, &name.name, "");
        let d = self
            .new_diag(
                Code::UnknownProperty,
                name.span,
                format!("event `{event}` has no property `{}`", name.name),
            )
            .label("not a property of this event")
            .help(help);
        self.push(d);
        None
    }

    /// Looks up a customer attribute, reporting it if unknown.
    fn check_attr(&mut self, attr: &AttrPath) -> Option<Field> {
        if let Some(field) = self.schema.attributes.get(&attr.name.name) {
            return Some(field.clone());
        }
        if self
            .broken
            .iter()
            .any(|(keyword, _)| *keyword == "customer")
        {
            return None;
        }
        let help = self.attribute_help(&attr.name.name);
        let d = self
            .new_diag(
                Code::UnknownAttribute,
                attr.name.span,
                format!("unknown attribute `customer.{}`", attr.name.name),
            )
            .label("not declared in `customer { … }`")
            .help(help);
        self.push(d);
        None
    }

    fn attribute_help(&self, name: &str) -> String {
        let candidates = self.schema.attributes.keys().map(String::as_str);
        match crate::diagnostics::closest(name, candidates) {
            Some(close) => format!("did you mean `customer.{close}`?"),
            None => format!("declare it: `customer {{ {name}: text }}`"),
        }
    }

    fn check_time_attr(&mut self, attr: &AttrPath) {
        if let Some(field) = self.check_attr(attr) {
            if field.ty != Type::Time {
                self.push(self.not_a_time(
                    attr.span,
                    &format!("customer.{}", attr.name.name),
                    field.ty,
                ));
            }
        }
    }

    fn not_a_time(&self, span: Span, what: &str, ty: Type) -> Diagnostic {
        self.new_diag(
            Code::NotATime,
            span,
            format!("`{what}` is {}, not a time", article(ty)),
        )
        .label(ty.name())
        .help("time windows apply to attributes of type `time`, such as `customer.registered_at`")
    }

    fn check_test(&mut self, subject: &Subject, test: Option<&Test>, scope: Scope<'_>) {
        let (field, shown) = match (subject, scope) {
            (Subject::Attr(attr), _) => (
                self.check_attr(attr),
                format!("customer.{}", attr.name.name),
            ),
            (Subject::Property(name), Scope::Event(event)) => {
                (self.property(name, event), name.name.clone())
            }
            (Subject::Property(name), Scope::Customer) => {
                let help = if self.schema.attributes.contains_key(&name.name) {
                    format!("attributes are written `customer.{}`", name.name)
                } else {
                    "in an audience, test attributes (`customer.age >= 18`) or behaviour (`did purchase where amount > 100`)".to_string()
                };
                let d = self
                    .new_diag(
                        Code::UnknownAttribute,
                        name.span,
                        format!("unknown name `{}`", name.name),
                    )
                    .label("not an attribute or a segment")
                    .help(help);
                self.push(d);
                (None, String::new())
            }
        };
        let Some(field) = field else { return };
        let subject_span = subject.span();
        let Some(test) = test else {
            if field.ty != Type::Bool {
                let d = self
                    .new_diag(
                        Code::TypeMismatch,
                        subject_span,
                        format!("`{shown}` is {}, not a condition", article(field.ty)),
                    )
                    .label(field.ty.name())
                    .help(format!(
                        "compare it, e.g. `{shown} == …`, or test `{shown} is set`"
                    ));
                self.push(d);
            }
            return;
        };
        match &test.kind {
            TestKind::Compare(op, literal) => {
                let orderable = matches!(field.ty, Type::Number | Type::Time | Type::Duration);
                if !matches!(op, CmpOp::Eq | CmpOp::Ne) && !orderable {
                    let op_span = Span::new(test.span.start, test.span.start + op.symbol().len());
                    let d = self
                        .new_diag(
                            Code::TypeMismatch,
                            op_span,
                            format!("`{}` does not apply to {}", op.symbol(), field.ty.name()),
                        )
                        .label(format!("{} has no order", field.ty.name()))
                        .help("use `==`, `!=`, `in […]` or `contains`");
                    self.push(d);
                } else {
                    self.check_literal(&shown, subject_span, field.ty, literal);
                }
            }
            TestKind::In { values, .. } => {
                for literal in values {
                    self.check_literal(&shown, subject_span, field.ty, literal);
                }
            }
            TestKind::Contains(literal) => {
                if field.ty != Type::Text {
                    let d = self
                        .new_diag(
                            Code::TypeMismatch,
                            subject_span,
                            format!(
                                "`contains` needs text, but `{shown}` is {}",
                                article(field.ty)
                            ),
                        )
                        .label(field.ty.name());
                    self.push(d);
                } else {
                    self.check_literal(&shown, subject_span, field.ty, literal);
                }
            }
            TestKind::IsSet { .. } => {}
            TestKind::Window(window) => {
                if field.ty != Type::Time {
                    self.push(self.not_a_time(subject_span, &shown, field.ty));
                }
                self.check_window(window);
            }
        }
    }

    /// A literal compared with a field must have the field's type.
    fn check_literal(&mut self, shown: &str, subject_span: Span, ty: Type, literal: &Literal) {
        let fits = matches!(
            (ty, &literal.value),
            (Type::Text, Value::Text(_))
                | (Type::Number, Value::Number(_))
                | (Type::Bool, Value::Bool(_))
                | (Type::Time, Value::DateTime(_))
                | (Type::Duration, Value::Duration(_))
                | (Type::Zone, Value::Text(_))
        );
        if !fits {
            let written = literal_text(&literal.value);
            let help = match (ty, &literal.value) {
                (Type::Number, Value::Text(t)) if t.trim().parse::<f64>().is_ok() => Some(format!(
                    "remove the quotes to compare with the number {}",
                    t.trim()
                )),
                (Type::Text, Value::Number(n)) => Some(format!(
                    "put it in quotes to compare with the text \"{}\"",
                    format_number(*n)
                )),
                (Type::Time, Value::TimeOfDay(_)) => {
                    Some("compare a time with a date, e.g. `2026-03-01 10:00`".to_string())
                }
                _ => None,
            };
            let d = self
                .new_diag(
                    Code::TypeMismatch,
                    literal.span,
                    format!(
                        "cannot compare `{shown}` ({}) with `{written}` ({})",
                        ty.name(),
                        literal.value.type_name()
                    ),
                )
                .label(literal.value.type_name())
                .also(self.file, subject_span, ty.name())
                .maybe_help(help);
            self.push(d);
            return;
        }
        if let (Type::Zone, Value::Text(zone)) = (ty, &literal.value) {
            self.check_timezone(&Str {
                value: zone.clone(),
                span: literal.span,
            });
        }
    }

    // ───────────────────────── segments ─────────────────────────

    fn report_segment_cycles(&mut self) {
        let mut names: Vec<&'a str> = self.segment_exprs.keys().copied().collect();
        names.sort_unstable();
        let mut reported: HashSet<&str> = HashSet::new();
        for start in names {
            if reported.contains(start) {
                continue;
            }
            if let Some(cycle) = self.find_cycle(start) {
                reported.extend(cycle.iter().map(|(name, _, _)| *name));
                self.push_cycle(&cycle);
            }
        }
    }

    /// A path of references from `start` back to itself: (segment, file, reference span).
    fn find_cycle(&self, start: &'a str) -> Option<Vec<(&'a str, FileId, Span)>> {
        let mut path: Vec<(&'a str, FileId, Span)> = Vec::new();
        let mut visited: HashSet<&str> = HashSet::new();
        self.walk(start, start, &mut path, &mut visited)
            .then_some(path)
    }

    fn walk(
        &self,
        start: &'a str,
        current: &'a str,
        path: &mut Vec<(&'a str, FileId, Span)>,
        visited: &mut HashSet<&'a str>,
    ) -> bool {
        if !visited.insert(current) {
            return false;
        }
        let Some((file, decl)) = self.segment_exprs.get(current) else {
            return false;
        };
        for reference in segment_references(&decl.expr) {
            let Some((name, _)) = self.segment_exprs.get_key_value(reference.name.as_str()) else {
                continue;
            };
            path.push((current, *file, reference.span));
            if *name == start || self.walk(start, name, path, visited) {
                return true;
            }
            path.pop();
        }
        false
    }

    fn push_cycle(&mut self, cycle: &[(&str, FileId, Span)]) {
        let (first, first_file, first_span) = cycle[0];
        let chain: Vec<&str> = cycle.iter().map(|(n, _, _)| *n).chain([first]).collect();
        let mut d = Diagnostic::new(
            Code::SegmentCycle,
            first_file,
            first_span,
            format!("segment `{first}` refers to itself: {}", chain.join(" → ")),
        )
        .label(format!("`{first}` uses `{}`", chain[1]))
        .help("a segment cannot depend on itself; break the chain");
        for (i, (name, file, span)) in cycle.iter().enumerate().skip(1) {
            d = d.also(*file, *span, format!("`{name}` uses `{}`", chain[i + 1]));
        }
        self.push(d);
    }

    fn report_unused_segments(&mut self) {
        let mut unused: Vec<(&String, &(FileId, Span))> = self
            .schema
            .segments
            .iter()
            .filter(|(name, _)| !self.used_segments.contains(*name))
            .collect();
        unused.sort_by_key(|(_, (file, span))| (*file, span.start));
        let diagnostics: Vec<Diagnostic> = unused
            .into_iter()
            .map(|(name, (file, span))| {
                Diagnostic::new(
                    Code::UnusedSegment,
                    *file,
                    *span,
                    format!("segment `{name}` is never used"),
                )
                .label("defined but not used")
                .help("use it in an `audience`, `exclude` or another segment, or remove it")
            })
            .collect();
        self.diagnostics.extend(diagnostics);
    }
}

/// "did you mean `amount`?", else which properties the event has.
fn property_help(
    event: &str,
    fields: &BTreeMap<String, Field>,
    name: &str,
    prefix: &str,
) -> String {
    if let Some(close) = crate::diagnostics::closest(name, fields.keys().map(String::as_str)) {
        return format!("did you mean `{prefix}{close}`?");
    }
    let names: Vec<String> = fields.keys().map(|k| format!("`{prefix}{k}`")).collect();
    match names.as_slice() {
        [] => format!("event `{event}` has no properties"),
        [one] => format!("`{event}` has only {one}"),
        [init @ .., last] => format!("`{event}` has {} and {last}", init.join(", ")),
    }
}

/// The first way a message's parts do not fit its channel's kind.
fn content_problem(delivery: &Delivery, kind: ChannelKind) -> Option<(Span, String)> {
    use ContentKey::*;
    let content = &delivery.content;
    let social = matches!(kind, ChannelKind::Wecom | ChannelKind::Moments);
    let (takes_lead, required, allowed): (bool, &[ContentKey], &[ContentKey]) = match kind {
        ChannelKind::Sms | ChannelKind::Task => (true, &[], &[]),
        ChannelKind::Email => (false, &[Subject, Body], &[Subject, Body]),
        ChannelKind::Push => (false, &[Title, Body], &[Title, Body]),
        // A leading text is the post's text when no `text` part is given.
        ChannelKind::Wecom | ChannelKind::Moments => (
            content.part(Text).is_none(),
            &[],
            &[Text, Image, Video, Link, Title],
        ),
    };
    let what = article_kind(kind);
    let mut seen: Vec<ContentKey> = Vec::new();
    for (i, part) in content.parts.iter().enumerate() {
        let after_link = i > 0 && content.parts[i - 1].key == Link;
        if !allowed.contains(&part.key) {
            return Some((
                part.key_span,
                format!("`{}` is not part of {what}", part.key.name()),
            ));
        }
        if social && part.key == Title && !after_link {
            return Some((
                part.key_span,
                "`title` names a link: put it right after `link \"…\"`".into(),
            ));
        }
        if seen.contains(&part.key) {
            return Some((
                part.key_span,
                format!("`{}` is given twice", part.key.name()),
            ));
        }
        seen.push(part.key);
    }
    match (&content.lead, takes_lead) {
        (Some(lead), false) => return Some((lead.span, format!("{what} needs named parts"))),
        (None, true) if !social => {
            return Some((delivery.channel.span, format!("{what} needs its text")))
        }
        _ => {}
    }
    let missing: Vec<String> = required
        .iter()
        .filter(|k| !seen.contains(k))
        .map(|k| format!("`{}`", k.name()))
        .collect();
    if !missing.is_empty() {
        return Some((
            delivery.channel.span,
            format!("{what} needs {}", missing.join(" and ")),
        ));
    }
    if social && content.lead.is_none() && content.parts.is_empty() {
        return Some((delivery.channel.span, format!("{what} has no content")));
    }
    None
}

/// The channel kind a message's parts suggest, for "declare it" help.
fn guess_kind(content: &Content) -> ChannelKind {
    if content.part(ContentKey::Subject).is_some() {
        ChannelKind::Email
    } else if content.part(ContentKey::Title).is_some() && content.part(ContentKey::Body).is_some()
    {
        ChannelKind::Push
    } else if !content.parts.is_empty() {
        ChannelKind::Wecom
    } else {
        ChannelKind::Sms
    }
}

/// The segment names an expression refers to directly.
pub fn segment_references(expr: &Expr) -> Vec<&Ident> {
    let mut found = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match &e.kind {
            ExprKind::And(a, b) | ExprKind::Or(a, b) => {
                stack.push(b);
                stack.push(a);
            }
            ExprKind::Not(inner) => stack.push(inner),
            ExprKind::Name(name) => found.push(name),
            _ => {}
        }
    }
    found
}

/// The instant a date-time literal denotes in `zone` (its own offset wins when written).
pub fn instant(value: &DateTimeValue, zone: Tz) -> DateTime<Utc> {
    match value.offset {
        Some(offset) => offset
            .from_local_datetime(&value.local)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&value.local)),
        None => crate::time::local_to_utc(zone, value.local),
    }
}

/// Every `{{…}}` in a text: the trimmed path and its byte range, or the offset of an unclosed `{{`.
pub fn placeholders(text: &str) -> Vec<Result<(&str, std::ops::Range<usize>), usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| i + from) {
        match text[open + 2..].find("}}") {
            Some(close) => {
                let end = open + 2 + close + 2;
                found.push(Ok((text[open + 2..open + 2 + close].trim(), open..end)));
                from = end;
            }
            None => {
                found.push(Err(open));
                break;
            }
        }
    }
    found
}

/// The length of a message in characters, not counting its placeholders.
fn template_free_length(text: &str) -> usize {
    let placeholder_chars: usize = placeholders(text)
        .into_iter()
        .filter_map(Result::ok)
        .map(|(_, range)| text[range].chars().count())
        .sum();
    text.chars().count() - placeholder_chars
}

/// `150` not `150.0`; `3.5` as is.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn literal_text(value: &Value) -> String {
    match value {
        Value::Text(t) => format!("\"{t}\""),
        Value::Number(n) => format_number(*n),
        Value::Bool(b) => b.to_string(),
        Value::DateTime(dt) => dt.local.format("%Y-%m-%d %H:%M").to_string(),
        Value::Duration(s) => format!("{s}s"),
        Value::TimeOfDay(t) => t.format("%H:%M").to_string(),
    }
}

fn article(ty: Type) -> String {
    match ty {
        Type::Text => "text".to_string(),
        other => format!("a {}", other.name()),
    }
}

fn article_kind(kind: ChannelKind) -> String {
    match kind {
        ChannelKind::Email => "an email".to_string(),
        ChannelKind::Sms => "an sms".to_string(),
        ChannelKind::Wecom => "a wecom message".to_string(),
        ChannelKind::Moments => "a moments post".to_string(),
        other => format!("a {}", other.name()),
    }
}

fn content_example(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Sms => "send sms \"…\"",
        ChannelKind::Email => "send email subject \"…\" body \"…\"",
        ChannelKind::Push => "send push title \"…\" body \"…\"",
        ChannelKind::Wecom => "send wecom text \"…\" [image \"url\"] [link \"url\" title \"…\"]",
        ChannelKind::Moments => {
            "send moments text \"…\" [image \"url\"] [video \"url\"] [link \"url\" title \"…\"]"
        }
        ChannelKind::Task => "send task \"…\" assign [\"alice\", \"bob\"] evenly",
    }
}
