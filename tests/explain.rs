//! `nudge explain` as a user runs it, on a small shop imported and run through the CLI: the
//! text and JSON output are pinned as snapshots in `tests/snapshots/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::nudge;

const RULES: &str = r#"customer { name: text  city: text?  phone: text? }
event purchase { amount: number }
event complaint
segment buyers = did purchase where amount > 100 at least 2 times within last 30d
campaign "回购提醒" {
  start    2026-03-01 00:00
  audience buyers and customer.city in ["上海", "北京"]
  exclude  has tag "投诉" or did complaint within last 7d
  trigger  on purchase where amount > 100
  quiet    22:00 to 08:00
  send     sms "{{customer.name}}，感谢回购"
}
"#;

/// `li` buys twice (the second purchase fires at night: moved by quiet hours, then sent), and
/// once more after the run;
/// `wang` does the same but is tagged as having complained (excluded); `zhao`'s second purchase
/// is too small to count (one time, not two); `sun` has no phone (unreachable).
const CUSTOMERS: &str = r#"{"id": "li", "name": "李雷", "city": "上海", "phone": "13800000000"}
{"id": "wang", "name": "王芳", "city": "北京", "phone": "13900000000", "tags": ["投诉"]}
{"id": "zhao", "name": "赵敏", "city": "上海", "phone": "13700000000"}
{"id": "sun", "name": "孙强", "city": "北京"}
"#;

const EVENTS: &str = r#"{"customer": "li", "event": "purchase", "at": "2026-03-05T10:00:00Z", "properties": {"amount": 150}}
{"customer": "li", "event": "purchase", "at": "2026-03-10T23:00:00Z", "properties": {"amount": 200}}
{"customer": "wang", "event": "purchase", "at": "2026-03-05T10:00:00Z", "properties": {"amount": 150}}
{"customer": "wang", "event": "purchase", "at": "2026-03-10T12:00:00Z", "properties": {"amount": 200}}
{"customer": "zhao", "event": "purchase", "at": "2026-03-05T10:00:00Z", "properties": {"amount": 150}}
{"customer": "zhao", "event": "purchase", "at": "2026-03-06T10:00:00Z", "properties": {"amount": 50}}
{"customer": "sun", "event": "purchase", "at": "2026-03-05T10:00:00Z", "properties": {"amount": 300}}
{"customer": "sun", "event": "purchase", "at": "2026-03-08T10:00:00Z", "properties": {"amount": 300}}
{"customer": "li", "event": "purchase", "at": "2026-03-25T10:00:00Z", "properties": {"amount": 120}}
"#;

/// The instant of the one run, and the default instant of every explanation.
const RUN_AT: &str = "2026-03-20T00:00:00Z";

/// The shop, imported and run once at `RUN_AT` (built once for every test of this file).
fn shop() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // In the build's own scratch space, replaced by each run of this file: a static is
        // never dropped, so a directory removed on drop would never be removed.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nudge-explain");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.nudge"), RULES).unwrap();
        std::fs::write(dir.join("customers.jsonl"), CUSTOMERS).unwrap();
        std::fs::write(dir.join("events.jsonl"), EVENTS).unwrap();
        let store = dir.join("shop.db");
        for kind in ["customers", "events"] {
            let file = dir.join(format!("{kind}.jsonl"));
            let import = nudge(&["import", kind, path(&file), "--store", path(&store)]);
            assert_eq!(import.status.code(), Some(0), "{import:?}");
        }
        let run = nudge(&[
            "run",
            path(&dir.join("rules.nudge")),
            "--store",
            path(&store),
            "--now",
            RUN_AT,
        ]);
        assert_eq!(run.status.code(), Some(0), "{run:?}");
        // One delivery is sent (li); sun's is recorded unreachable; wang and zhao get nothing.
        assert!(String::from_utf8_lossy(&run.stdout).ends_with("1 delivery sent\n"));
        dir
    })
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `nudge explain` on the shop: exit code, standard output, standard error.
fn explain(extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = shop();
    let rules = dir.join("rules.nudge");
    let store = dir.join("shop.db");
    let mut args = vec!["explain", path(&rules), "--store", path(&store)];
    args.extend(extra);
    let output = nudge(&args);
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn explain_ok(extra: &[&str]) -> String {
    let (code, out, err) = explain(extra);
    assert_eq!(code, Some(0), "{err}");
    out
}

fn explain_json(extra: &[&str]) -> serde_json::Value {
    let mut args = extra.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_str(&explain_ok(&args)).unwrap()
}

#[test]
fn a_customer_who_was_sent_something() {
    // The default instant is the last run's `now`.
    let args = ["--campaign", "回购提醒", "--customer", "li"];
    insta::assert_snapshot!("sent_text", explain_ok(&args));
    insta::assert_json_snapshot!("sent_json", explain_json(&args));
}

#[test]
fn an_occurrence_no_run_has_reached_yet() {
    let args = [
        "--campaign",
        "回购提醒",
        "--customer",
        "li",
        "--at",
        "2026-03-26T00:00:00Z",
    ];
    let json = explain_json(&args);
    let last = &json["trigger"]["occurrences"][2];
    assert_eq!(last["fired_at"], "2026-03-25T10:00:00Z");
    assert_eq!(
        (&last["handled"], &last["audience"], &last["excluded"]),
        (&false.into(), &true.into(), &false.into())
    );
    assert_eq!(last["outcomes"], serde_json::json!([]));
    let line = format!(
        "2026-03-25T10:00:00Z  purchase ({}) → not handled yet: no run has reached it \
         (in the audience then)\n",
        last["key"].as_str().unwrap()
    );
    assert!(explain_ok(&args).contains(&line));
}

#[test]
fn an_excluded_customer() {
    let args = [
        "--campaign",
        "回购提醒",
        "--customer",
        "wang",
        "--at",
        RUN_AT,
    ];
    insta::assert_snapshot!("excluded_text", explain_ok(&args));
    insta::assert_json_snapshot!("excluded_json", explain_json(&args));
}

#[test]
fn a_customer_failing_a_count() {
    let args = [
        "--campaign",
        "回购提醒",
        "--customer",
        "zhao",
        "--at",
        RUN_AT,
    ];
    insta::assert_snapshot!("count_text", explain_ok(&args));
    insta::assert_json_snapshot!("count_json", explain_json(&args));
}

#[test]
fn an_unreachable_customer_shows_the_stored_reason() {
    let json = explain_json(&["--campaign", "回购提醒", "--customer", "sun"]);
    assert_eq!(json["in_audience"], true);
    assert_eq!(json["history"][0]["outcome"], "unreachable");
    assert_eq!(json["history"][0]["reason"], "sms: no phone");
    assert_eq!(
        json["trigger"]["occurrences"][1]["outcomes"][0],
        "unreachable"
    );
}

#[test]
fn an_unknown_campaign_suggests_a_close_name() {
    let (code, out, err) = explain(&["--campaign", "回购提示", "--customer", "li"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    insta::assert_snapshot!("unknown_campaign", err);
}

#[test]
fn an_unknown_customer_is_an_error_in_the_data() {
    let (code, out, err) = explain(&["--campaign", "回购提醒", "--customer", "nobody"]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.starts_with("error: no customer has the id `nobody` in the store `"),
        "{err}"
    );
}

#[test]
fn a_missing_store_is_not_created() {
    let missing = shop().join("no-such.db");
    let output = nudge(&[
        "explain",
        path(&shop().join("rules.nudge")),
        "--store",
        path(&missing),
        "--campaign",
        "回购提醒",
        "--customer",
        "li",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn the_readme_example_is_what_explain_prints() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let command = "$ nudge explain shop/ --store shop.db --campaign 回购提醒 --customer li\n";
    let start = readme
        .find(command)
        .expect("README shows an explain example")
        + command.len();
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    assert_eq!(
        example,
        explain_ok(&["--campaign", "回购提醒", "--customer", "li"])
    );
}
