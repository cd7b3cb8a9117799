//! Every example of the specification parses, means what it says, and checks without errors.

use chrono::{DateTime, Utc};
use nudge::ast::*;
use nudge::check::CheckOptions;
use nudge::diagnostics::{Code, Diagnostic};
use nudge::project::{self, Sources};

fn now() -> DateTime<Utc> {
    "2026-11-21T00:00:00Z".parse().unwrap()
}

/// The spec beside the repository when there is one (so the test follows it), else our copy.
fn spec() -> String {
    std::fs::read_to_string("../shared/LANGUAGE.md")
        .or_else(|_| std::fs::read_to_string("tests/fixtures/LANGUAGE.md"))
        .unwrap()
}

/// The fenced code blocks of §2–§6: the ones written in Nudge.
fn nudge_blocks(spec: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut section = 0;
    let mut current: Option<String> = None;
    for line in spec.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            section = rest.split('.').next().unwrap().trim().parse().unwrap_or(0);
        }
        if line.starts_with("```") {
            match current.take() {
                Some(block) if (2..=6).contains(&section) => blocks.push(block),
                Some(_) => {}
                None => current = Some(String::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

fn errors(diagnostics: &[Diagnostic]) -> Vec<&Diagnostic> {
    diagnostics.iter().filter(|d| d.is_error()).collect()
}

#[test]
fn every_block_of_the_spec_parses_on_its_own() {
    let blocks = nudge_blocks(&spec());
    assert!(blocks.len() >= 5, "found only {} blocks", blocks.len());
    for block in &blocks {
        let (module, diagnostics) = nudge::parse(0, block);
        assert!(diagnostics.is_empty(), "{block}\n{diagnostics:#?}");
        assert!(!module.unwrap().items.is_empty());
    }
}

#[test]
fn the_spec_examples_check_together_without_errors() {
    let mut sources = Sources::default();
    for (i, block) in nudge_blocks(&spec()).into_iter().enumerate() {
        sources.add(format!("block{i}.nudge"), block);
    }
    sources.add(
        "inline.nudge",
        std::fs::read_to_string("tests/fixtures/inline_examples.nudge").unwrap(),
    );
    let project = project::analyze(sources, &CheckOptions { now: now() });
    assert!(
        errors(&project.diagnostics).is_empty(),
        "{:#?}",
        project.diagnostics
    );
    // The spec's campaign starts in the past, and `buyers` is shown but not used.
    let warnings: Vec<Code> = project.diagnostics.iter().map(|d| d.code).collect();
    assert!(warnings.contains(&Code::Backfill));
    assert!(warnings.contains(&Code::UnusedSegment));
}

fn campaign(source: &str) -> Campaign {
    let (module, diagnostics) = nudge::parse(0, source);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    match module.unwrap().items.remove(0) {
        Item::Campaign(c) => *c,
        other => panic!("not a campaign: {other:?}"),
    }
}

#[test]
fn the_spec_campaign_means_what_it_says() {
    let blocks = nudge_blocks(&spec());
    let block = blocks
        .iter()
        .find(|b| b.contains("campaign \"春节促销\""))
        .unwrap();
    let c = campaign(block);
    assert_eq!(c.name.value, "春节促销");
    assert_eq!(c.status, Status::Active);
    assert_eq!(c.timezone.unwrap().value, "Asia/Shanghai");
    assert_eq!(
        c.start.unwrap().value.local.to_string(),
        "2026-01-20 00:00:00"
    );
    assert_eq!(
        c.end.unwrap().value.local.to_string(),
        "2026-02-10 23:59:00"
    );
    assert!(matches!(c.audience.unwrap().kind, ExprKind::And(..)));
    let Some(Trigger {
        kind:
            TriggerKind::On {
                event,
                filter,
                unless,
                occurrence,
            },
        ..
    }) = c.trigger
    else {
        panic!("not an event trigger")
    };
    assert_eq!(event.name, "page_view");
    assert!(filter.is_some() && occurrence.is_none());
    let unless = unless.unwrap();
    assert_eq!(
        (unless.event.name.as_str(), unless.within.seconds),
        ("share", 1200)
    );
    assert_eq!(
        c.wait,
        Some(Wait::For(DurationLit {
            seconds: 600,
            span: Span::default()
        }))
    );
    let quiet = c.quiet.unwrap();
    assert_eq!(
        (quiet.from.value.to_string(), quiet.to.value.to_string()),
        ("22:00:00".into(), "08:00:00".into())
    );
    let pace = c.pace.unwrap();
    assert_eq!((pace.count.value, pace.per.seconds), (1, 3600));
    let cap = c.cap.unwrap();
    assert_eq!((cap.count.value, cap.per.seconds), (2, 7 * 86_400));
    let rate = c.rate.unwrap();
    assert_eq!((rate.count.value, rate.per), (600, RateUnit::Minute));
    let [Action::Send(send)] = c.actions.as_slice() else {
        panic!("one send")
    };
    assert_eq!(send.primary.channel.name, "sms");
    assert_eq!(send.fallbacks[0].channel.name, "email");
    assert_eq!(
        send.fallbacks[0]
            .content
            .part(ContentKey::Subject)
            .unwrap()
            .value,
        "新春特惠"
    );
}

#[test]
fn not_binds_tighter_than_and_which_binds_tighter_than_or() {
    let (module, _) = nudge::parse(
        0,
        "segment s = not has tag \"a\" or has tag \"b\" and has tag \"c\"",
    );
    let Item::Segment(s) = &module.unwrap().items[0] else {
        panic!()
    };
    let ExprKind::Or(left, right) = &s.expr.kind else {
        panic!("or at the top: {:?}", s.expr)
    };
    assert!(matches!(left.kind, ExprKind::Not(_)));
    assert!(matches!(right.kind, ExprKind::And(..)));
}

#[test]
fn between_inside_a_boolean_expression() {
    let (module, d) = nudge::parse(
        0,
        "segment s = did purchase between 2026-01-01 and 2026-02-01 and has tag \"x\"",
    );
    assert!(d.is_empty(), "{d:#?}");
    let Item::Segment(s) = &module.unwrap().items[0] else {
        panic!()
    };
    let ExprKind::And(left, _) = &s.expr.kind else {
        panic!("{:?}", s.expr)
    };
    let ExprKind::Did(did) = &left.kind else {
        panic!()
    };
    assert!(matches!(did.window, Some(Window::Between(..))));
}

#[test]
fn text_is_a_type_and_a_property_name() {
    let (module, d) = nudge::parse(0, "event message { text: text }");
    assert!(d.is_empty());
    let Item::Event(e) = &module.unwrap().items[0] else {
        panic!()
    };
    assert_eq!(
        (e.fields[0].name.name.as_str(), e.fields[0].ty.ty),
        ("text", Type::Text)
    );
}

#[test]
fn literals_are_typed() {
    let c = campaign(
        "campaign \"c\" { trigger on x where a == \"\\u{4E2D}\\t\\\"\" and b > -7.5 and c == 40% \
         wait 1h30m send sms \"x\" }",
    );
    let Some(Trigger {
        kind: TriggerKind::On {
            filter: Some(filter),
            ..
        },
        ..
    }) = c.trigger
    else {
        panic!()
    };
    let printed = filter.to_string();
    assert_eq!(printed, "a == \"中\\t\\\"\" and b > -7.5 and c == 40");
    assert_eq!(
        c.wait,
        Some(Wait::For(DurationLit {
            seconds: 5400,
            span: Span::default()
        }))
    );
}

#[test]
fn unicode_identifiers_and_comments_anywhere() {
    let source = "customer { 城市: text # 城市\n }\nsegment 上海客户 = # comment\n customer.城市 == \"上海\"";
    let (module, d) = nudge::parse(0, source);
    assert!(d.is_empty(), "{d:#?}");
    assert_eq!(module.unwrap().items.len(), 2);
}

#[test]
fn spans_point_at_the_source_but_do_not_affect_equality() {
    let (a, _) = nudge::parse(0, "segment s = has tag \"x\"");
    let (b, _) = nudge::parse(0, "segment   s =\n   has tag   \"x\"   # same meaning");
    assert_eq!(a, b);
    let Item::Segment(s) = &b.unwrap().items[0] else {
        panic!()
    };
    assert_eq!((s.expr.span.start, s.expr.span.end), (17, 30));
}
