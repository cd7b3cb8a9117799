//! Properties of the front end: it never panics, its spans are always valid, nesting beyond the
//! limit is an error (never a stack overflow), and printed expressions parse back unchanged.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use nudge::ast::*;
use nudge::check::CheckOptions;
use nudge::diagnostics::Code;
use nudge::project::{self, Sources};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    "2026-11-21T00:00:00Z".parse().unwrap()
}

/// Analyses one file beside the example schema; asserts every diagnostic's span is valid.
fn analyze(text: &str) -> nudge::Project {
    let mut sources = Sources::default();
    sources.add(
        "schema.nudge",
        std::fs::read_to_string("rules/schema.nudge").unwrap(),
    );
    sources.add("input.nudge", text);
    let project = project::analyze(sources, &CheckOptions { now: now() });
    for d in &project.diagnostics {
        for label in std::iter::once(&d.primary).chain(&d.secondary) {
            let file = &project.sources.get(label.file).text;
            assert!(
                label.span.start <= label.span.end && label.span.end <= file.len(),
                "{d:?}"
            );
            assert!(
                file.is_char_boundary(label.span.start) && file.is_char_boundary(label.span.end),
                "{d:?}"
            );
        }
        // Rendering must not panic either.
        let _ = nudge::diagnostics::render(
            &project.sources,
            d,
            nudge::diagnostics::Style {
                color: false,
                width: 80,
            },
        );
    }
    project
}

fn example_rules() -> String {
    let mut text = String::new();
    let mut paths: Vec<_> = std::fs::read_dir("rules")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths.iter().filter(|p| !p.ends_with("schema.nudge")) {
        text.push_str(&std::fs::read_to_string(path).unwrap());
    }
    text
}

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "{{",
    "}}",
    ",",
    ";",
    ":",
    "=",
    "==",
    "not ",
    " and ",
    " or ",
    "did ",
    "where ",
    "at least ",
    "times",
    "within last ",
    "30m",
    "0m",
    "25:00",
    "2026-02-30",
    "customer.",
    "campaign \"x\" {",
    "segment s = ",
    "tag ",
    "#",
    "\n",
    "城市",
    "%",
    "-",
    "9999999999999999999999",
    "every \"",
    "on tag added ",
    "split {",
    "control",
    "fallback ",
    "send sms ",
    "\u{0}",
    "\u{FEFF}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        analyze(&text);
    }

    #[test]
    fn arbitrary_instants_never_panic(text in "\\PC{0,30}|[0-9: T+Z-]{0,30}") {
        let _ = nudge::cli::parse_instant(&text);
    }

    #[test]
    fn mutated_rules_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..20, prop::sample::select(FRAGMENTS)), 1..6)
    ) {
        let mut text = example_rules();
        for (at, delete, insert) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + delete).min(text.len());
            while !text.is_char_boundary(end) { end += 1; }
            text.replace_range(start..end, insert);
        }
        analyze(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for text in [
        format!(
            "segment s = {}true{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        ),
        format!("segment s = {}true", "not ".repeat(100_000)),
        format!("segment s = {}true", "(not ".repeat(50_000)),
        format!("segment s = {}", "(".repeat(100_000)),
    ] {
        let project = analyze(&text);
        assert_eq!(
            project.diagnostics[0].code,
            Code::TooDeep,
            "{:?}",
            project.diagnostics
        );
    }
}

#[test]
fn nesting_up_to_the_limit_works() {
    let depth = nudge::parse::MAX_NESTING;
    let text = format!(
        "segment s = {}true{}\ncampaign \"c\" {{ audience s trigger on share send sms \"x\" }}",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let project = analyze(&text);
    assert!(project.diagnostics.is_empty(), "{:?}", project.diagnostics);
    let text = format!(
        "segment s = {}true\ncampaign \"c\" {{ audience s trigger on share send sms \"x\" }}",
        "not ".repeat(depth)
    );
    assert!(analyze(&text).diagnostics.is_empty());
}

// ───────────────────────── print → parse round trip ─────────────────────────

fn expr(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn ident(name: &str) -> Ident {
    Ident {
        name: name.to_string(),
        span: Span::default(),
    }
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}|[\"\\\\{}\n\t]{0,4}"
}

fn datetime() -> impl Strategy<Value = DateTimeValue> {
    (
        2000i32..2100,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        prop::option::of(-14i32..15),
    )
        .prop_map(|(y, mo, d, h, mi, offset)| DateTimeValue {
            local: NaiveDate::from_ymd_opt(y, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, 0)
                .unwrap(),
            offset: offset.map(|o| FixedOffset::east_opt(o * 3600).unwrap()),
        })
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        text().prop_map(Value::Text),
        (-10_000i64..10_000, 0u8..3)
            .prop_map(|(n, d)| Value::Number(n as f64 / 10f64.powi(d as i32))),
        any::<bool>().prop_map(Value::Bool),
        datetime().prop_map(Value::DateTime),
        (1i64..10_000_000).prop_map(Value::Duration),
        (0u32..24, 0u32..60)
            .prop_map(|(h, m)| Value::TimeOfDay(chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap())),
    ]
    .prop_map(|value| Literal {
        value,
        span: Span::default(),
    })
}

fn window() -> impl Strategy<Value = Window> {
    let spanned = |value| Spanned {
        value,
        span: Span::default(),
    };
    prop_oneof![
        (1i64..100_000_000).prop_map(|s| Window::WithinLast(DurationLit {
            seconds: s,
            span: Span::default()
        })),
        datetime().prop_map(move |t| Window::Since(spanned(t))),
        (datetime(), datetime()).prop_map(move |(a, b)| Window::Between(spanned(a), spanned(b))),
    ]
}

fn test_kind() -> impl Strategy<Value = TestKind> {
    let op = prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ]);
    prop_oneof![
        (op, literal()).prop_map(|(op, l)| TestKind::Compare(op, l)),
        (any::<bool>(), prop::collection::vec(literal(), 0..3))
            .prop_map(|(negated, values)| TestKind::In { negated, values }),
        literal().prop_map(TestKind::Contains),
        any::<bool>().prop_map(|negated| TestKind::IsSet { negated }),
        window().prop_map(TestKind::Window),
    ]
}

const NAMES: &[&str] = &["a", "vip", "高意向客户", "_x1", "sku", "texts", "ands"];

/// Conditions over an event's properties (what may follow `where`).
fn where_expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| expr(ExprKind::Bool(b))),
        prop::sample::select(NAMES).prop_map(|n| expr(ExprKind::Name(ident(n)))),
        (prop::sample::select(NAMES), test_kind()).prop_map(|(n, t)| expr(ExprKind::Test {
            subject: Subject::Property(ident(n)),
            test: Some(Test {
                kind: t,
                span: Span::default()
            }),
        })),
    ];
    leaf.prop_recursive(4, 16, 2, combine)
}

fn combine(inner: BoxedStrategy<Expr>) -> impl Strategy<Value = Expr> {
    prop_oneof![
        (inner.clone(), inner.clone())
            .prop_map(|(a, b)| expr(ExprKind::And(Box::new(a), Box::new(b)))),
        (inner.clone(), inner.clone())
            .prop_map(|(a, b)| expr(ExprKind::Or(Box::new(a), Box::new(b)))),
        inner.prop_map(|a| expr(ExprKind::Not(Box::new(a)))),
    ]
}

/// Audience expressions.
fn customer_expr() -> impl Strategy<Value = Expr> {
    let count = (
        prop::sample::select(vec![
            CountMode::AtLeast,
            CountMode::AtMost,
            CountMode::Exactly,
        ]),
        0u64..50,
    )
        .prop_map(|(mode, n)| CountTest {
            mode,
            n: Spanned {
                value: n,
                span: Span::default(),
            },
            span: Span::default(),
        });
    let did = (
        any::<bool>(),
        prop::sample::select(NAMES),
        prop::option::of(where_expr()),
        prop::option::of(count),
        prop::option::of(window()),
    )
        .prop_map(|(negated, event, filter, count, window)| {
            expr(ExprKind::Did(Did {
                negated,
                event: ident(event),
                filter: filter.map(Box::new),
                count,
                window,
            }))
        });
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| expr(ExprKind::Bool(b))),
        text().prop_map(|t| expr(ExprKind::HasTag(Str {
            value: t,
            span: Span::default()
        }))),
        prop::sample::select(NAMES).prop_map(|n| expr(ExprKind::Name(ident(n)))),
        (prop::sample::select(NAMES), prop::option::of(test_kind())).prop_map(|(n, t)| expr(
            ExprKind::Test {
                subject: Subject::Attr(AttrPath {
                    name: ident(n),
                    span: Span::default()
                }),
                test: t.map(|kind| Test {
                    kind,
                    span: Span::default()
                }),
            }
        )),
        did,
    ];
    leaf.prop_recursive(4, 24, 2, combine)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn printed_expressions_parse_back_equal(original in customer_expr()) {
        let source = format!("segment s = {original}");
        let (module, diagnostics) = nudge::parse(0, &source);
        prop_assert!(diagnostics.is_empty(), "{source}\n{diagnostics:#?}");
        let Item::Segment(segment) = &module.unwrap().items[0] else { panic!() };
        prop_assert_eq!(&segment.expr, &original, "{}", source);
    }
}
