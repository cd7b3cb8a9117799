//! `nudge check` as a user runs it: exit codes, output formats, paths.

use std::process::{Command, Output};

mod common;
use common::{nudge, stderr, stdout, Scratch};

fn scratch(name: &str, files: &[(&str, &[u8])]) -> Scratch {
    let dir = Scratch::new(&format!("cli-{name}"));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Imports `{kind}.jsonl` of `dir` into `store` for each of `kinds`, in order.
fn import_files(dir: &std::path::Path, kinds: &[&str], store: &str) {
    for &kind in kinds {
        let file = dir.join(format!("{kind}.jsonl"));
        let import = nudge(&["import", kind, file.to_str().unwrap(), "--store", store]);
        assert_eq!(import.status.code(), Some(0), "{}", stderr(&import));
    }
}

/// A project in a scratch directory: `files` (a `rules.nudge` among them), with the
/// `{kind}.jsonl` of each of `kinds` imported into its store.
struct Shop {
    _dir: Scratch,
    rules: String,
    store: String,
}

fn shop(name: &str, files: &[(&str, &[u8])], kinds: &[&str]) -> Shop {
    let dir = scratch(name, files);
    let path = |file: &str| dir.join(file).to_str().unwrap().to_owned();
    let (rules, store) = (path("rules.nudge"), path("s.db"));
    import_files(&dir, kinds, &store);
    Shop {
        _dir: dir,
        rules,
        store,
    }
}

impl Shop {
    /// `nudge COMMAND RULES --store STORE ARGS…`.
    fn nudge(&self, command: &str, args: &[&str]) -> Output {
        let mut all = vec![command, &self.rules, "--store", &self.store];
        all.extend(args);
        nudge(&all)
    }
}

const NOW: &str = "--now=2026-11-21T00:00:00Z";

#[test]
fn the_example_rules_check_clean() {
    let output = nudge(&["check", "rules", NOW]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(stdout(&output), "checked 7 files: no problems\n");
    let json: serde_json::Value =
        serde_json::from_slice(&nudge(&["check", "rules", NOW, "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"diagnostics": [], "errors": 0, "warnings": 0})
    );
}

#[test]
fn errors_exit_1_and_every_file_is_reported() {
    let dir = scratch(
        "errors",
        &[
            (
                "a.nudge",
                b"event purchase { amount: number }\nsegment s = did purchse\n",
            ),
            ("sub/b.nudge", b"segment t = did purchase where amont > 1\n"),
            ("ignored.txt", b"not a rule file"),
        ],
    );
    let output = nudge(&["check", dir.to_str().unwrap(), NOW, "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let codes: Vec<&str> = json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"nudge::unknown-event") && codes.contains(&"nudge::unknown-property"),
        "{codes:?}"
    );
    let first = json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "nudge::unknown-event")
        .unwrap();
    assert!(first["file"].as_str().unwrap().ends_with("a.nudge"));
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(2), Some(17))
    );
    assert_eq!(
        (first["end_line"].as_u64(), first["end_column"].as_u64()),
        (Some(2), Some(24))
    );
    assert_eq!(first["message"], "unknown event `purchse`");
    assert_eq!(first["help"], "did you mean `purchase`?");
    assert_eq!(json["errors"], 2);
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = scratch("warnings", &[("a.nudge", b"segment unused = true\n")]);
    let path = dir.to_str().unwrap();
    assert_eq!(nudge(&["check", path, NOW]).status.code(), Some(0));
    let denied = nudge(&["check", path, NOW, "--deny-warnings"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stdout(&denied).contains("warning: segment `unused` is never used"));
    assert!(stdout(&denied).ends_with("checked 1 file: 0 errors, 1 warning\n"));
}

#[test]
fn human_output_has_no_colour_with_no_color() {
    let dir = scratch("colour", &[("a.nudge", b"segment s = did nothing\n")]);
    let text = stdout(&nudge(&["check", dir.to_str().unwrap()]));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("nudge::unknown-event"));
}

#[test]
fn invalid_utf8_is_an_error_naming_the_file() {
    let dir = scratch("utf8", &[("bad.nudge", b"segment s = has tag \"\xff\"\n")]);
    let output = nudge(&["check", dir.to_str().unwrap(), "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["diagnostics"][0]["code"], "nudge::invalid-utf8");
    assert!(json["diagnostics"][0]["message"]
        .as_str()
        .unwrap()
        .contains("bad.nudge"));
    assert_eq!(json["diagnostics"][0]["column"], 22);
}

#[test]
fn bad_usage_exits_2() {
    let missing = nudge(&["check", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("`no/such/dir` does not exist"));
    let empty = scratch("empty", &[("readme.txt", b"")]);
    let none = nudge(&["check", empty.to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no `.nudge` files"));
    assert_eq!(
        nudge(&["check", "--format", "xml", "rules"]).status.code(),
        Some(2)
    );
    assert_eq!(
        nudge(&["check", "--now", "yesterday", "rules"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(nudge(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn one_file_can_be_checked_with_its_schema() {
    let output = nudge(&[
        "check",
        "rules/schema.nudge",
        "rules/seed002_growth.nudge",
        NOW,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(stdout(&output), "checked 2 files: no problems\n");
}

#[test]
fn the_readme_lists_every_diagnostic_code() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    for code in nudge::diagnostics::Code::ALL {
        assert!(
            readme.contains(&format!("`{code}`")),
            "README.md does not document `{code}`"
        );
    }
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = Scratch::new("cli-demo");
    let store = dir.join("demo.db");
    let output = nudge(&[
        "demo",
        "--customers",
        "300",
        "--store",
        store.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("300 customers"), "{text}");
    assert!(text.contains("run 5 at 2026-11-19 08:00"), "{text}");
    let sent: usize = text
        .lines()
        .filter_map(|l| l.trim().strip_suffix(" sent"))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert!(sent > 0, "{text}");
    // The delivery policies at work on the example rules: split variants, the holdout, quiet
    // hours, the policy's cap.
    for shown in [
        "双十一返场 A/B [A] on sms",
        "in the control group of a split",
        "out of quiet hours",
        "capped by the policy's cap",
    ] {
        assert!(text.contains(shown), "`{shown}` missing from:\n{text}");
    }
    // The store it leaves behind answers further commands.
    let again = nudge(&[
        "run",
        "rules",
        "--store",
        store.to_str().unwrap(),
        "--now",
        "2026-11-19T00:00:00Z",
    ]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again), "0 deliveries sent\n");
}

#[test]
fn a_run_prints_its_deliveries_only_once_they_are_on_disk() {
    use std::io::BufRead;
    let dir = Scratch::new("cli-durable");
    let store = dir.join("demo.db");
    let store_arg = store.to_str().unwrap();
    let demo = nudge(&["demo", "--customers", "300", "--store", store_arg]);
    assert_eq!(demo.status.code(), Some(0));
    let mut run = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["run", "rules", "--store", store_arg, "--format", "jsonl"])
        .args(["--now", "2026-11-20T00:00:00Z"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The first delivery is out: the store was already closed, its WAL checkpointed (synced
    // into the database file) and removed.
    let wal = std::path::PathBuf::from(format!("{store_arg}-wal"));
    assert!(
        !wal.exists(),
        "the WAL is still there when `{first}` is printed"
    );
    assert!(first.starts_with('{'), "a delivery: {first}");
    assert!(run.wait().unwrap().success());
}

#[test]
fn estimate_counts_the_funnel() {
    let shop = shop("estimate", &[
        ("rules.nudge", "customer { age: number }\nevent buy\ncampaign \"c\" {\n  audience customer.age >= 18 and did buy\n  exclude has tag \"blocked\"\n  trigger on buy\n  send task \"call\" assign [\"a\"]\n}\n".as_bytes()),
        ("customers.jsonl", "{\"id\": \"a\", \"age\": 30}\n{\"id\": \"b\", \"age\": 12}\n{\"id\": \"c\", \"age\": 40, \"tags\": [\"blocked\"]}\n".as_bytes()),
        ("events.jsonl", "{\"customer\": \"a\", \"event\": \"buy\", \"at\": \"2026-03-01T00:00:00Z\"}\n{\"customer\": \"c\", \"event\": \"buy\", \"at\": \"2026-03-01T00:00:00Z\"}\n".as_bytes()),
    ], &["customers", "events"]);
    let output = shop.nudge(
        "estimate",
        &["--at", "2026-03-02T00:00:00Z", "--format", "json"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "campaign": "c",
            "customers": 3,
            "clauses": [
                {"clause": "customer.age >= 18", "alone": 2, "cumulative": 2},
                {"clause": "did buy", "alone": 2, "cumulative": 2}
            ],
            "exclude": {"clause": "has tag \"blocked\"", "alone": 1, "cumulative": 1},
            "audience": 1
        }])
    );
    let unknown = shop.nudge("estimate", &["--campaign", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn import_at_dates_the_tags_it_adds() {
    let dir = scratch("import-at", &[
        ("rules.nudge", "customer { phone: text? }\ncampaign \"vip\" {\n  start 2026-02-01 00:00\n  trigger on tag added \"VIP\"\n  send sms \"欢迎\"\n}\n".as_bytes()),
        ("customers.jsonl", "{\"id\": \"a\", \"phone\": \"1\", \"tags\": [\"VIP\"]}\n".as_bytes()),
    ]);
    let store = dir.join("s.db");
    let store = store.to_str().unwrap();
    let file = dir.join("customers.jsonl");
    let import = |at: &str| {
        nudge(&[
            "import",
            "customers",
            file.to_str().unwrap(),
            "--store",
            store,
            "--at",
            at,
        ])
    };
    assert_eq!(
        import("yesterday").status.code(),
        Some(2),
        "a bad instant is a usage error"
    );
    assert_eq!(import("2026-03-01T08:00:00Z").status.code(), Some(0));
    let rules = dir.join("rules.nudge");
    let run = nudge(&[
        "run",
        rules.to_str().unwrap(),
        "--store",
        store,
        "--now",
        "2026-03-02T00:00:00Z",
        "--format",
        "jsonl",
    ]);
    let sent: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(sent["fired_at"], "2026-03-01T08:00:00Z", "{sent}");
}

#[test]
fn run_timings_name_every_phase_on_stderr_and_change_nothing_else() {
    let shop = shop("timings", &[
        ("rules.nudge", "customer { phone: text? }\nevent buy\ncampaign \"thanks\" {\n  start 2026-02-01 00:00\n  trigger on buy\n  send sms \"谢谢\"\n}\n".as_bytes()),
        ("customers.jsonl", "{\"id\": \"a\", \"phone\": \"1\"}\n".as_bytes()),
        ("events.jsonl", "{\"customer\": \"a\", \"event\": \"buy\", \"at\": \"2026-03-01T08:00:00Z\"}\n".as_bytes()),
    ], &["customers", "events"]);
    let run = |now: &str, extra: &[&str]| {
        let mut args = vec!["--now", now];
        args.extend(extra);
        shop.nudge("run", &args)
    };
    // No schedule, so the run reads only the customers with new events.
    let timed = run("2026-03-02T00:00:00Z", &["--timings", "--dry-run"]);
    assert_eq!(timed.status.code(), Some(0));
    let phases: Vec<String> = stderr(&timed)
        .lines()
        .map(|line| {
            line.split_once(" ms  ")
                .expect("milliseconds, then the phase")
                .1
                .to_owned()
        })
        .collect();
    assert_eq!(
        phases,
        [
            "load the rules, open the store",
            "compile the campaigns",
            "find the customers with something new (1 customer)",
            "read and decide them",
            "release what is due (1 sent)",
            "roll back",
            "close the store (checkpoint, sync)",
            "print",
            "in all",
        ]
    );
    let plain = run("2026-03-02T00:00:00Z", &[]);
    assert_eq!(stdout(&plain), stdout(&timed));
    assert_eq!(stderr(&plain), "");
}

#[test]
fn a_store_another_command_is_writing_to_is_reported_busy() {
    let shop = shop("busy", &[
        ("rules.nudge", "customer { phone: text? }\ncampaign \"c\" {\n  trigger at 2026-03-01 10:00\n  send sms \"hi\"\n}\n".as_bytes()),
        ("customers.jsonl", b"{\"id\": \"a\", \"phone\": \"1\"}\n"),
    ], &["customers"]);
    // Another writer holds the store (as a bulk import does) for longer than nudge waits.
    let other = rusqlite::Connection::open(&shop.store).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let run = shop.nudge("run", &["--now", "2026-03-02T00:00:00Z"]);
    assert_eq!(run.status.code(), Some(2));
    let error = stderr(&run);
    assert!(
        error.contains("the store is busy: another command is writing to it"),
        "{error}"
    );
}
