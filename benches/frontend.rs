//! Front-end throughput: parse + lower + check of a generated project.
//!
//! Run with `cargo bench --bench frontend`. Prints lines per second for a ~20,000-line project
//! and the time to check a 1,000-line file (best of several runs, release build).

use std::time::{Duration, Instant};

use nudge::check::CheckOptions;
use nudge::project::{self, Sources};

const SCHEMA: &str = include_str!("../rules/schema.nudge");

/// One campaign with its segment and tag rule, exercising most of the language (~24 lines).
fn campaign(i: usize) -> String {
    format!(
        r#"# Campaign {i}: generated for the benchmark.
segment buyers_{i} = did purchase where amount > {amount} and sku != "SKU{i}" at least 2 times within last 30d
segment city_{i}   = customer.city in ["上海", "北京", "深圳"] and customer.age >= 18 and not has tag "投诉客户"

tag "意向{i}" when did message where text contains "报价{i}" or did page_view where page == "/p/{i}"

campaign "促销活动 {i}" {{
  status    active
  timezone  "Asia/Shanghai"
  end       2027-12-31 23:59
  audience  buyers_{i} and city_{i} or has tag "意向{i}"
  exclude   did not_interested at least 3 times or customer.phone is not set
  trigger   on page_view where page == "/pricing/{i}" unless share within 20m
  wait      10m
  quiet     22:00 to 08:00
  pace      1 per 1h
  cap       2 per customer per 7d
  rate      600 per minute
  send      sms "{{{{customer.name}}}}，活动 {i} 开始了，回复 TD 退订"
  fallback  email subject "活动 {i}" body "{{{{customer.name}}}}，您好！"
  add tag   "参与{i}"
}}

"#,
        amount = 50 + i % 200
    )
}

fn project(lines_wanted: usize, per_file: usize) -> Sources {
    let mut sources = Sources::default();
    sources.add("schema.nudge", SCHEMA);
    let mut lines = SCHEMA.lines().count();
    let mut i = 0;
    while lines < lines_wanted {
        let mut file = String::new();
        for _ in 0..per_file {
            file.push_str(&campaign(i));
            i += 1;
        }
        lines += file.lines().count();
        sources.add(format!("campaigns_{i}.nudge"), file);
    }
    sources
}

fn line_count(sources: &Sources) -> usize {
    sources
        .map
        .iter()
        .map(|(_, f)| f.text.lines().count())
        .sum()
}

/// Best wall time of `runs` analyses of a fresh copy of the project.
fn best_of(runs: usize, make: impl Fn() -> Sources) -> (Duration, usize) {
    let options = CheckOptions {
        now: "2026-11-21T00:00:00Z".parse().unwrap(),
    };
    let mut best = Duration::MAX;
    let mut diagnostics = 0;
    for _ in 0..runs {
        let sources = make();
        let start = Instant::now();
        let project = project::analyze(sources, &options);
        best = best.min(start.elapsed());
        diagnostics = project.diagnostics.len();
    }
    (best, diagnostics)
}

fn main() {
    let big = project(20_000, 10);
    let lines = line_count(&big);
    let files = big.map.len();
    let (time, diagnostics) = best_of(5, || project(20_000, 10));
    assert_eq!(diagnostics, 0, "the generated project must check clean");
    println!(
        "project: {lines} lines in {files} files: {:.1} ms, {:.0} lines/s",
        time.as_secs_f64() * 1e3,
        lines as f64 / time.as_secs_f64()
    );

    let one_file = || {
        let mut sources = Sources::default();
        sources.add("schema.nudge", SCHEMA);
        let mut text = String::new();
        let mut i = 0;
        while text.lines().count() < 1_000 {
            text.push_str(&campaign(i));
            i += 1;
        }
        sources.add("one.nudge", text);
        sources
    };
    let lines = line_count(&one_file());
    let (time, _) = best_of(20, one_file);
    println!(
        "one file: {lines} lines (with schema): {:.2} ms",
        time.as_secs_f64() * 1e3
    );
}
