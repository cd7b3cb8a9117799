//! Scenario tests for the interpreter: `tests/scenarios/<name>/` holds `rules.nudge`,
//! `customers.jsonl`, optionally `events.jsonl` and `employees.jsonl`, and `expected.txt`:
//! a sequence of `run <NOW>` lines, each followed by exactly the JSON lines that run must emit
//! (`#` lines are comments). Everything is imported first; runs then happen in order.
//! An optional `outcomes.txt` lists every outcome recorded once the runs are over, one per line
//! (`DUE CAMPAIGN CUSTOMER OUTCOME [VARIANT] | REASON`), for what is recorded but never emitted:
//! expired, capped, control, unreachable, still queued.

use std::path::Path;

mod common;

/// `nudge ARGS…`: its exit code, standard output and standard error.
fn nudge(args: &[&str]) -> (i32, String, String) {
    let output = common::nudge(args);
    (
        output.status.code().unwrap_or(-1),
        common::stdout(&output),
        common::stderr(&output),
    )
}

fn run_scenario(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join(format!("{name}.db"));
    let store_arg = store.to_str().unwrap();
    for kind in ["customers", "events", "employees", "tags"] {
        let file = dir.join(format!("{kind}.jsonl"));
        if file.exists() {
            let (code, _, err) =
                nudge(&["import", kind, file.to_str().unwrap(), "--store", store_arg]);
            assert_eq!(code, 0, "{name}: import {kind}: {err}");
        }
    }
    let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for line in expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.strip_prefix("run ") {
            Some(now) => runs.push((now.to_string(), Vec::new())),
            None => runs
                .last_mut()
                .expect("a `run` line first")
                .1
                .push(line.to_string()),
        }
    }
    let rules = dir.join("rules.nudge");
    for (now, want) in runs {
        let (code, out, err) = nudge(&[
            "run",
            rules.to_str().unwrap(),
            "--store",
            store_arg,
            "--now",
            &now,
            "--format",
            "jsonl",
        ]);
        assert_eq!(code, 0, "{name}: run at {now}: {err}");
        let got: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want: Vec<serde_json::Value> = want
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got, want, "{name}: run at {now}\ngot:\n{out}");
    }
    if let Ok(want) = std::fs::read_to_string(dir.join("outcomes.txt")) {
        let want: Vec<&str> = want
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let got = recorded_outcomes(&store);
        assert_eq!(got, want, "{name}: outcomes\ngot:\n{}", got.join("\n"));
    }
}

/// Every delivery outcome in the store, as `outcomes.txt` lists them.
fn recorded_outcomes(store: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(store).unwrap();
    let mut query = db
        .prepare(
            "SELECT due_at, campaign, customer, outcome, variant, reason FROM deliveries
             ORDER BY due_at, campaign, customer, id",
        )
        .unwrap();
    query
        .query_map([], |row| {
            let due: i64 = row.get(0)?;
            let due = chrono::DateTime::from_timestamp_millis(due).unwrap();
            let variant: Option<String> = row.get(4)?;
            let reason: Option<String> = row.get(5)?;
            Ok(format!(
                "{} {} {} {}{} | {}",
                due.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                variant.map(|v| format!(" {v}")).unwrap_or_default(),
                reason.as_deref().unwrap_or("-"),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn scenarios() {
    let mut dirs: Vec<_> = std::fs::read_dir("tests/scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    for dir in dirs {
        run_scenario(&dir);
    }
}
