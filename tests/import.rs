//! The event store and `nudge import`: formats, bad rows, atomicity, the engine-state API.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::process::Command;

mod common;
use common::{nudge, stderr, stdout, Scratch};

use chrono::{DateTime, Utc};
use nudge::store::{
    self, BadRow, Delivery, ImportError, ImportFile, ImportObserver, ImportOptions, Kind, NewEvent,
    Outcome, QueueKey, Store, StoreError,
};

const FIXTURES: &str = "tests/fixtures/import";

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Every row of every table, as text: two equal dumps mean an unchanged store.
fn dump(path: &str) -> Vec<String> {
    let mut store = Store::open(path).unwrap();
    store
        .scratch(|tx| {
            let conn = tx.connection()?;
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut rows = Vec::new();
            for table in tables {
                let mut statement = conn.prepare(&format!("SELECT * FROM {table}"))?;
                let columns = statement.column_count();
                let mut table_rows = statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| row.get::<_, rusqlite::types::Value>(i))
                            .collect::<Result<Vec<_>, _>>()
                    })?
                    .map(|row| row.map(|values| format!("{table}: {values:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                table_rows.sort();
                rows.extend(table_rows);
            }
            Ok::<_, StoreError>(rows)
        })
        .unwrap()
}

fn customer_attributes(path: &str, id: &str) -> serde_json::Value {
    let mut store = Store::open(path).unwrap();
    let customer = store
        .scratch(|tx| tx.customer(id))
        .unwrap()
        .unwrap_or_else(|| panic!("no customer {id}"));
    serde_json::from_str(&customer.attributes).unwrap()
}

/// Imports the fixtures the tests start from.
fn seeded(dir: &Path) -> String {
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    for (kind, file) in [
        ("customers", "customers.jsonl"),
        ("events", "events.jsonl"),
        ("tags", "tags.jsonl"),
        ("employees", "employees.jsonl"),
    ] {
        let output = nudge(&["import", kind, &fixture(file), "--store", &db]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    db
}

#[test]
fn jsonl_imports_every_kind() {
    let dir = Scratch::new("import-jsonl");
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let output = nudge(&[
        "import",
        "customers",
        &fixture("customers.jsonl"),
        "--store",
        &db,
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        format!("imported 3 customers from {FIXTURES}/customers.jsonl into {db}\n")
    );
    assert_eq!(
        customer_attributes(&db, "c1"),
        serde_json::json!({"name": "李雷", "age": 30, "city": "上海", "phone": "13800000000"})
    );
    let output = nudge(&["import", "events", &fixture("events.jsonl"), "--store", &db]);
    assert_eq!(
        stdout(&output),
        format!("imported 4 events from {FIXTURES}/events.jsonl into {db}\n")
    );
    let output = nudge(&["import", "tags", &fixture("tags.jsonl"), "--store", &db]);
    assert_eq!(
        stdout(&output),
        format!("imported 2 tags from {FIXTURES}/tags.jsonl into {db}\n")
    );
    let output = nudge(&[
        "import",
        "employees",
        &fixture("employees.jsonl"),
        "--store",
        &db,
    ]);
    assert_eq!(
        stdout(&output),
        format!("imported 2 employee relations from {FIXTURES}/employees.jsonl into {db}\n")
    );

    let mut store = Store::open(&db).unwrap();
    store
        .scratch(|tx| {
            let c1 = tx.customer("c1")?.unwrap();
            assert_eq!(c1.tags, ["VIP", "高意向"]);
            let events = tx.events_for_customer("c1", ..)?;
            let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
            // Time order, and file order at one instant (the purchase and the share are both
            // at 02:00Z); the `tag_added` events were recorded at the import's clock time.
            assert_eq!(
                names,
                ["page_view", "purchase", "share", "tag_added", "tag_added"]
            );
            assert_eq!(events[0].at, t("2026-03-01T01:00:00Z"));
            assert_eq!(events[0].properties, r#"{"page":"/pricing"}"#);
            assert_eq!(events[1].properties, r#"{"amount":120,"sku":"A1"}"#);
            // A null property is no property.
            assert_eq!(events[2].properties, "{}");
            let c2_events = tx.events_for_customer("c2", ..)?;
            // A tag row's own `at` is when the tag was added.
            assert_eq!(c2_events[0].name, "tag_added");
            assert_eq!(c2_events[0].at, t("2026-03-01T00:00:00Z"));
            assert_eq!(c2_events[0].properties, r#"{"tag":"VIP"}"#);
            assert_eq!(c2_events[1].at, t("2026-03-02T00:00:00.250Z"));
            let employees = tx.employees_for_customer("c1")?;
            let order: Vec<_> = employees.iter().map(|e| e.employee.as_str()).collect();
            assert_eq!(order, ["bob", "alice"]);
            assert_eq!(employees[1].added_at, t("2026-01-02T09:00:00Z"));
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

#[test]
fn csv_cells_are_typed_and_columns_are_attributes_or_properties() {
    let dir = Scratch::new("import-csv");
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    for (kind, file) in [
        ("customers", "customers.csv"),
        ("events", "events.csv"),
        ("employees", "employees.csv"),
    ] {
        let output = nudge(&["import", kind, &fixture(file), "--store", &db]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    // Numbers as JSON writes them are numbers (so a phone number in CSV is one), `true` and
    // `false` are booleans, empty cells are absent, and anything else is text: `0123` keeps
    // its leading zero.
    assert_eq!(
        customer_attributes(&db, "c1"),
        serde_json::json!({"name": "李雷", "age": 30, "city": "上海", "phone": 13800000000u64})
    );
    assert_eq!(
        customer_attributes(&db, "c2"),
        serde_json::json!({"name": "韩, 梅梅", "age": 28.5, "city": "北京", "zip": "0123", "vip": true})
    );
    let mut store = Store::open(&db).unwrap();
    store
        .scratch(|tx| {
            assert_eq!(tx.customer("c2")?.unwrap().tags, ["VIP", "活跃"]);
            let purchase = &tx.events_for_customer("c1", ..)?[0];
            assert_eq!(purchase.name, "purchase");
            assert_eq!(purchase.at, t("2026-03-01T02:00:00Z"));
            assert_eq!(purchase.properties, r#"{"amount":120,"sku":"A1"}"#);
            let purchase = &tx.events_for_customer("c2", ..)?[0];
            assert_eq!(
                purchase.properties,
                r#"{"amount":99.5,"sku":"B2","coupon":true}"#
            );
            assert_eq!(
                tx.employees_for_customer("c2")?[0].added_at,
                t("2026-01-03T01:00:00Z")
            );
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

/// One bad row of each kind, each after a good row: the import fails with the line and the
/// reason, and the store is exactly as it was.
#[test]
fn each_kind_of_bad_row_rejects_the_whole_import() {
    let cases: &[(&str, &str, &[u8], &str)] = &[
        ("events", "jsonl", br#"{"customer": "c1", "event": "share""#, "malformed JSON at column 35: EOF while parsing an object"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z",}"#, "malformed JSON at column 67: trailing comma"),
        ("events", "jsonl", b"[1, 2]", "expected a JSON object, found a list"),
        ("events", "jsonl", br#"{"event": "share", "at": "2026-03-01T10:00:00Z"}"#, "missing `customer`"),
        ("events", "jsonl", br#"{"customer": " ", "event": "share", "at": "2026-03-01T10:00:00Z"}"#, "`customer` is empty"),
        ("events", "jsonl", br#"{"customer": 7, "event": "share", "at": "2026-03-01T10:00:00Z"}"#, "`customer` must be text, not a number"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00"}"#, "`at` is `2026-03-01T10:00:00`, which has no UTC offset"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01 10:00"}"#, "`at` is `2026-03-01 10:00`, which has no UTC offset"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-02-30T10:00:00Z"}"#, "`at` is `2026-02-30T10:00:00Z`, which does not exist"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": 1772359200}"#, "`at` must be text, not a number"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z", "properties": [1]}"#, "`properties` must be an object, not a list"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z", "properties": {"a": {"b": 1}}}"#, "property `a` is an object: values must be text, numbers or true/false"),
        ("events", "jsonl", br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z", "amount": 3}"#, "unknown key `amount` (event properties go under `properties`)"),
        ("events", "jsonl", br#"{"customer": "c1", "customer": "c2", "event": "share", "at": "2026-03-01T10:00:00Z"}"#, "key `customer` appears twice"),
        ("events", "jsonl", b"{\"customer\": \"c1\", \"event\": \"\xff\", \"at\": \"2026-03-01T10:00:00Z\"}", "not UTF-8 text"),
        ("customers", "jsonl", br#"{"name": "x"}"#, "missing `id`"),
        ("customers", "jsonl", br#"{"id": "c1", "tags": "VIP"}"#, "`tags` must be a list of text, not text"),
        ("customers", "jsonl", br#"{"id": "c1", "tags": ["VIP", 3]}"#, "`tags` must be a list of text, not a list"),
        ("customers", "jsonl", br#"{"id": "c1", "tags": [""]}"#, "`tags` has an empty item"),
        ("customers", "jsonl", br#"{"id": "c1", "cities": ["SH"]}"#, "attribute `cities` is a list: values must be text, numbers or true/false"),
        ("tags", "jsonl", br#"{"customer": "c1"}"#, "missing `tag`"),
        ("tags", "jsonl", br#"{"customer": "c1", "tag": "VIP", "colour": "red"}"#, "unknown key `colour`"),
        ("employees", "jsonl", br#"{"customer": "c1", "employee": "alice"}"#, "missing `added_at`"),
        ("events", "csv", b"c1,share", "2 fields, but the header has 3"),
        ("events", "csv", b"c1,share,yesterday", "`at` is `yesterday`, which is not an RFC 3339 time"),
        ("events", "csv", b",share,2026-03-01T10:00:00Z", "`customer` is empty"),
        ("events", "csv", b"c1,\xff,2026-03-01T10:00:00Z", "column `event` is not UTF-8 text"),
        ("customers", "csv", b",x", "`id` is empty"),
    ];
    let dir = Scratch::new("import-bad-rows");
    let db = seeded(&dir);
    let before = dump(&db);
    for (index, (kind, format, bad, reason)) in cases.iter().enumerate() {
        let good: &[u8] = match (*kind, *format) {
            ("events", "csv") => b"customer,event,at\nc1,share,2026-03-01T10:00:00Z\n",
            ("customers", "csv") => b"id,name\nc9,x\n",
            ("customers", _) => br#"{"id": "c9", "name": "x"}"#,
            ("tags", _) => br#"{"customer": "c1", "tag": "x"}"#,
            ("employees", _) => {
                br#"{"customer": "c1", "employee": "e", "added_at": "2026-03-01T10:00:00Z"}"#
            }
            _ => br#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z"}"#,
        };
        let mut content = good.to_vec();
        if *format == "jsonl" {
            content.push(b'\n');
        }
        let bad_line = if *format == "csv" { 3 } else { 2 };
        content.extend_from_slice(bad);
        content.push(b'\n');
        let file = write(&dir, &format!("case{index}.{format}"), &content);
        let output = nudge(&["import", kind, &file, "--store", &db]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "case {index}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {file}:{bad_line}: {reason}")),
            "case {index}: expected `{reason}`, got:\n{stderr}"
        );
        assert!(
            stderr.ends_with(&format!(
                "error: nothing imported: {file} has 1 bad row (--skip-invalid imports the others)\n"
            )),
            "case {index}: {stderr}"
        );
        assert_eq!(dump(&db), before, "case {index} changed the store");
    }
}

#[test]
fn skip_invalid_imports_the_rest_and_lists_each_skipped_line() {
    let dir = Scratch::new("import-skip");
    let file = write(
        &dir,
        "events.jsonl",
        [
            r#"{"customer": "c1", "event": "share", "at": "2026-03-01T10:00:00Z"}"#,
            r#"{"customer": "c1", "event": "share"}"#,
            "",
            r#"not json"#,
            r#"{"customer": "c2", "event": "share", "at": "2026-03-01T11:00:00+08:00"}"#,
        ]
        .join("\n"),
    );
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let output = nudge(&["import", "events", &file, "--store", &db, "--skip-invalid"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        format!(
            "skipped: {file}:2: missing `at`\n\
             skipped: {file}:4: malformed JSON at column 2: expected ident\n"
        )
    );
    assert_eq!(
        stdout(&output),
        format!("imported 2 events from {file} into {db}; skipped 2 bad rows\n")
    );
    let mut store = Store::open(&db).unwrap();
    let c2 = store
        .scratch(|tx| tx.events_for_customer("c2", ..))
        .unwrap();
    assert_eq!(c2[0].at, t("2026-03-01T03:00:00Z"));
}

#[test]
fn a_strict_import_lists_twenty_bad_rows_and_counts_the_rest() {
    let dir = Scratch::new("import-many");
    let file = write(&dir, "events.jsonl", "{}\n".repeat(25));
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let output = nudge(&["import", "events", &file, "--store", &db]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 22, "{stderr}");
    assert_eq!(lines[19], format!("error: {file}:20: missing `customer`"));
    assert_eq!(lines[20], "error: … and 5 more bad rows");
}

#[test]
fn csv_header_problems_fail_before_any_row() {
    let dir = Scratch::new("import-header");
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    for (kind, header, reason) in [
        (
            "events",
            "customer,event,time",
            "the header has no `at` column",
        ),
        ("tags", "customer,tag,colour", "unknown column `colour`"),
        (
            "customers",
            "id,name,name",
            "the header has two `name` columns",
        ),
    ] {
        let file = write(&dir, &format!("{kind}.csv"), format!("{header}\nc1,a,b\n"));
        for extra in [None, Some("--skip-invalid")] {
            let mut args = vec!["import", kind, &file, "--store", &db];
            args.extend(extra);
            let output = nudge(&args);
            assert_eq!(output.status.code(), Some(1));
            assert_eq!(
                stderr(&output),
                format!("error: {file}:1: {reason}\nerror: nothing imported\n")
            );
        }
    }
}

#[test]
fn reimporting_customers_merges_their_attributes_and_tags() {
    let dir = Scratch::new("import-merge");
    let db = seeded(&dir);
    let file = write(
        &dir,
        "update.jsonl",
        r#"{"id": "c1", "age": 31, "phone": null, "email": "lilei@example.com", "tags": ["活跃"]}"#,
    );
    let output = nudge(&["import", "customers", &file, "--store", &db]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // New values replace old ones, `null` removes, the rest stays.
    assert_eq!(
        customer_attributes(&db, "c1"),
        serde_json::json!({"name": "李雷", "age": 31, "city": "上海", "email": "lilei@example.com"})
    );
    let mut store = Store::open(&db).unwrap();
    let c1 = store.scratch(|tx| tx.customer("c1")).unwrap().unwrap();
    assert_eq!(c1.tags, ["VIP", "活跃", "高意向"]);
}

#[test]
fn reimporting_a_tag_records_no_second_tag_added_event() {
    let dir = Scratch::new("import-tag-twice");
    let db = seeded(&dir);
    let before = dump(&db);
    let output = nudge(&["import", "tags", &fixture("tags.jsonl"), "--store", &db]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(dump(&db), before);
}

#[test]
fn files_and_stores_that_cannot_be_used_exit_2() {
    let dir = Scratch::new("import-usage");
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let missing = dir.join("missing.jsonl").to_str().unwrap().to_owned();
    let events = fixture("events.jsonl");
    let cases = [
        (
            vec!["import", "events", missing.as_str(), "--store", db.as_str()],
            "error: cannot read `",
        ),
        (
            vec!["import", "events", "Cargo.toml", "--store", db.as_str()],
            "error: cannot tell the format of `Cargo.toml`: name it `.jsonl`, `.ndjson` or `.csv`",
        ),
        (
            vec![
                "import",
                "events",
                &events,
                "--store",
                dir.to_str().unwrap(),
            ],
            "error: cannot open the store `",
        ),
        (
            vec![
                "import",
                "events",
                &events,
                "--store",
                "/nonexistent/dir/nudge.db",
            ],
            "error: cannot open the store `",
        ),
        (vec!["import", "people", &events], "invalid value 'people'"),
    ];
    for (args, message) in cases {
        let output = nudge(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // A missing input creates no store.
    assert!(!Path::new(&db).exists());
    // A file that cannot be read part-way (here: a directory) is an I/O failure too.
    std::fs::create_dir_all(dir.join("folder.jsonl")).unwrap();
    let folder = dir.join("folder.jsonl").to_str().unwrap().to_owned();
    let other = dir.join("other.db").to_str().unwrap().to_owned();
    let output = nudge(&["import", "events", &folder, "--store", &other]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with(&format!("error: cannot read `{folder}`: ")));
}

#[test]
fn an_import_killed_part_way_leaves_the_store_as_before() {
    let dir = Scratch::new("import-killed");
    let db = seeded(&dir);
    let before = dump(&db);
    let line = r#"{"customer": "c1", "event": "view", "at": "2026-03-01T10:00:00Z", "properties": {"page": "/p"}}"#;
    let file = write(&dir, "big.jsonl", format!("{line}\n").repeat(1_000_000));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["import", "events", &file, "--store", &db])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the import finished before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(dump(&db), before);
}

#[test]
fn line_endings_byte_order_marks_and_blank_lines_are_tolerated() {
    let dir = Scratch::new("import-lines");
    let file = write(
        &dir,
        "customers.ndjson",
        "\u{feff}{\"id\": \"c1\"}\r\n\r\n   \n{\"id\": \"c2\"}",
    );
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let output = nudge(&["import", "customers", &file, "--store", &db]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("imported 2 customers"));
    let csv = write(&dir, "customers.csv", "\u{feff}id,name\r\nc3,x\r\n");
    let output = nudge(&["import", "customers", &csv, "--store", &db]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        customer_attributes(&db, "c3"),
        serde_json::json!({"name": "x"})
    );
}

#[test]
fn an_overlong_line_is_a_bad_row_and_the_next_line_still_counts() {
    let dir = Scratch::new("import-long");
    let long = format!(r#"{{"id": "c1", "note": "{}"}}"#, "x".repeat(17 << 20));
    let file = write(
        &dir,
        "customers.jsonl",
        format!("{long}\n{{\"id\": \"c2\"}}\n"),
    );
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    let output = nudge(&[
        "import",
        "customers",
        &file,
        "--store",
        &db,
        "--skip-invalid",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        format!("skipped: {file}:1: line longer than 16 MB\n")
    );
    assert!(stdout(&output).starts_with("imported 1 customer "));
}

/// Collects what an import reports.
#[derive(Default)]
struct Collect {
    bad: Vec<BadRow>,
    progress: u64,
}

impl ImportObserver for Collect {
    fn bad_row(&mut self, row: &BadRow) {
        self.bad.push(row.clone());
    }
    fn progress(&mut self, bytes: u64) {
        self.progress = bytes;
    }
}

#[test]
fn the_library_import_reports_progress_and_bad_rows() {
    let dir = Scratch::new("import-library");
    let file = write(
        &dir,
        "events.jsonl",
        "{\"customer\": \"c1\", \"event\": \"a\", \"at\": \"2026-03-01T10:00:00Z\"}\n{}\n",
    );
    let mut store = Store::open_in_memory().unwrap();
    let options = ImportOptions {
        skip_invalid: false,
        now: t("2026-03-01T00:00:00Z"),
    };
    let mut seen = Collect::default();
    let result = store::import(
        &mut store,
        Kind::Events,
        ImportFile::open(Path::new(&file)).unwrap(),
        options,
        &mut seen,
    );
    assert!(matches!(result, Err(ImportError::Rejected { bad_rows: 1 })));
    assert_eq!(
        seen.bad,
        [BadRow {
            line: 2,
            reason: "missing `customer`".into()
        }]
    );
    assert_eq!(seen.progress, std::fs::metadata(&file).unwrap().len());
    let summary = store::import(
        &mut store,
        Kind::Events,
        ImportFile::open(Path::new(&file)).unwrap(),
        ImportOptions {
            skip_invalid: true,
            ..options
        },
        &mut Collect::default(),
    )
    .unwrap();
    assert_eq!((summary.imported, summary.skipped), (1, 1));
}

#[test]
fn events_at_one_instant_keep_their_file_order() {
    let dir = Scratch::new("import-ties");
    let rows: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"customer": "c{}", "event": "e{i}", "at": "2026-03-01T10:00:00Z"}}"#,
                i % 3
            )
        })
        .collect();
    let file = write(&dir, "events.jsonl", rows.join("\n"));
    let db = dir.join("nudge.db").to_str().unwrap().to_owned();
    assert_eq!(
        nudge(&["import", "events", &file, "--store", &db])
            .status
            .code(),
        Some(0)
    );
    let mut store = Store::open(&db).unwrap();
    let events = store
        .scratch(|tx| tx.events_for_customer("c1", ..))
        .unwrap();
    let names: Vec<_> = events.iter().map(|e| e.name.clone()).collect();
    let expected: Vec<_> = (0..200)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(names, expected);
    assert!(events.windows(2).all(|pair| pair[0].id < pair[1].id));
}

#[test]
fn streaming_yields_each_customer_with_its_tags_and_events_in_order() {
    let mut store = Store::open_in_memory().unwrap();
    let at = t("2026-03-01T00:00:00Z");
    store
        .transaction(|tx| {
            let none = serde_json::Map::new();
            for id in ["b", "d", "a"] {
                tx.upsert_customer(id, &none)?;
            }
            for (customer, minutes) in [("d", 5), ("a", 3), ("c", 1), ("a", 1), ("e", 0), ("0", 0)]
            {
                tx.add_event(&NewEvent {
                    customer,
                    name: "view",
                    at: at + chrono::Duration::minutes(minutes),
                    properties: "{}",
                })?;
            }
            tx.add_tag("d", "VIP", at)?;
            tx.add_tag("c", "VIP", at)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let mut seen = Vec::new();
    store
        .scratch(|tx| {
            tx.for_each_evaluated(store::Events::All, |scanned| {
                let customer = &scanned.customer;
                let times: Vec<_> = customer
                    .events
                    .iter()
                    .map(|e| (e.name.to_string(), (e.at - at.timestamp_millis()) / 60_000))
                    .collect();
                let mut tags: Vec<String> = customer.tags.iter().cloned().collect();
                tags.sort();
                seen.push((customer.id.clone(), tags, times));
                Ok::<_, StoreError>(())
            })
        })
        .unwrap();
    let view = |m| ("view".to_owned(), m);
    let tag = |m| ("tag_added".to_owned(), m);
    assert_eq!(
        seen,
        [
            ("a".to_owned(), vec![], vec![view(1), view(3)]),
            ("b".to_owned(), vec![], vec![]),
            // Ids that are not customers ("0", "c", "e") are skipped, their events with them.
            (
                "d".to_owned(),
                vec!["VIP".to_owned()],
                vec![tag(0), view(5)]
            ),
        ]
    );
}

#[test]
fn event_ranges_honour_inclusive_and_exclusive_bounds() {
    let mut store = Store::open_in_memory().unwrap();
    let at = t("2026-03-01T10:00:00Z");
    let ms = chrono::Duration::milliseconds;
    store
        .transaction(|tx| {
            for offset in [-1, 0, 1] {
                tx.add_event(&NewEvent {
                    customer: "c",
                    name: "e",
                    at: at + ms(offset),
                    properties: "{}",
                })?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let count = |store: &mut Store, range: (Bound<DateTime<Utc>>, Bound<DateTime<Utc>>)| {
        store
            .scratch(|tx| tx.events_for_customer("c", range))
            .unwrap()
            .len()
    };
    use Bound::{Excluded, Included, Unbounded};
    assert_eq!(count(&mut store, (Included(at), Included(at))), 1);
    assert_eq!(count(&mut store, (Excluded(at), Included(at + ms(1)))), 1);
    assert_eq!(count(&mut store, (Unbounded, Excluded(at))), 1);
    assert_eq!(count(&mut store, (Included(at - ms(1)), Unbounded)), 3);
    // A bound between two milliseconds admits the later one only.
    let half = at + chrono::Duration::microseconds(500);
    assert_eq!(count(&mut store, (Included(half), Unbounded)), 1);
    assert_eq!(count(&mut store, (Unbounded, Included(half))), 2);
}

#[test]
fn tags_are_added_and_removed_once_with_their_events() {
    let mut store = Store::open_in_memory().unwrap();
    let at = t("2026-03-01T10:00:00Z");
    store
        .transaction(|tx| {
            assert!(tx.add_tag("c", "VIP", at)?.is_some());
            assert!(tx.add_tag("c", "VIP", at)?.is_none());
            assert!(tx.remove_tag("c", "VIP", at)?.is_some());
            assert!(tx.remove_tag("c", "VIP", at)?.is_none());
            let names: Vec<_> = tx
                .events_for_customer("c", ..)?
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, ["tag_added", "tag_removed"]);
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn delivery(occurrence: &str) -> Delivery {
    Delivery {
        campaign: "春节促销".into(),
        customer: "c1".into(),
        occurrence: occurrence.into(),
        outcome: Outcome::Sent,
        channel: Some("sms".into()),
        address: Some("13800000000".into()),
        variant: None,
        fired_at: t("2026-03-01T02:00:00Z"),
        due_at: t("2026-03-01T02:10:00Z"),
        content: Some(serde_json::json!({"text": "新春特惠"})),
        reason: None,
    }
}

#[test]
fn one_occurrence_is_recorded_once_and_the_unique_constraint_enforces_it() {
    let dir = Scratch::new("import-exactly-once");
    let db = dir.join("nudge.db");
    let mut store = Store::open(&db).unwrap();
    store
        .transaction(|tx| {
            let run = tx.begin_run(t("2026-03-01T03:00:00Z"))?;
            assert!(tx.record_delivery(run, delivery("event:1"))?);
            assert!(!tx.record_delivery(run, delivery("event:1"))?);
            let mut expired = delivery("event:1");
            expired.outcome = Outcome::Expired;
            assert!(!tx.record_delivery(run, expired)?);
            assert!(tx.record_delivery(run, delivery("event:2"))?);
            tx.finish_run(run)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    // Not only the API: the table itself refuses a second row for the occurrence.
    let duplicate = store.transaction(|tx| {
        tx.connection()?.execute(
            "INSERT INTO deliveries (id, run, campaign, customer, occurrence, outcome, fired_at,
                 due_at) VALUES (99, 1, '春节促销', 'c1', 'event:1', 'capped', 0, 0)",
            [],
        )?;
        Ok::<_, StoreError>(())
    });
    let error = duplicate.unwrap_err().to_string();
    assert!(error.contains("UNIQUE constraint failed"), "{error}");
    let recorded = store
        .scratch(|tx| tx.deliveries_for_customer("c1"))
        .unwrap();
    assert_eq!(recorded, [delivery("event:1"), delivery("event:2")]);
}

#[test]
fn deliveries_are_numbered_in_recording_order_across_transactions() {
    let mut store = Store::open_in_memory().unwrap();
    for (now, occurrences) in [
        ("2026-03-01T03:00:00Z", ["a", "b"]),
        ("2026-03-01T04:00:00Z", ["c", "d"]),
    ] {
        store
            .transaction(|tx| {
                let run = tx.begin_run(t(now))?;
                for occurrence in occurrences {
                    assert!(tx.record_delivery(run, delivery(occurrence))?);
                }
                tx.finish_run(run)
            })
            .unwrap();
    }
    let ids: Vec<(String, i64)> = store
        .scratch(|tx| {
            let conn = tx.connection()?;
            let mut statement =
                conn.prepare("SELECT occurrence, id FROM deliveries ORDER BY id")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok::<_, StoreError>(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    let expected = [("a", 1), ("b", 2), ("c", 3), ("d", 4)].map(|(o, id)| (o.to_owned(), id));
    assert_eq!(ids, expected, "the next id is kept between transactions");
}

#[test]
fn outcomes_outside_the_list_are_refused_by_the_table() {
    let mut store = Store::open_in_memory().unwrap();
    let result = store.transaction(|tx| {
        let run = tx.begin_run(t("2026-03-01T03:00:00Z"))?;
        tx.connection()?.execute(
            "INSERT INTO deliveries (id, run, campaign, customer, occurrence, outcome, fired_at,
                 due_at) VALUES (1, ?1, 'x', 'c1', 'o', 'maybe', 0, 0)",
            [run.0],
        )?;
        Ok::<_, StoreError>(())
    });
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("CHECK constraint failed"));
}

#[test]
fn a_run_cannot_go_back_in_time() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.scratch(|tx| tx.last_run_now()).unwrap(), None);
    let now = t("2026-03-01T10:00:00Z");
    store.transaction(|tx| tx.begin_run(now).map(drop)).unwrap();
    assert_eq!(store.scratch(|tx| tx.last_run_now()).unwrap(), Some(now));
    // The same `now` again is allowed (it finds nothing new); an earlier one is not.
    store.transaction(|tx| tx.begin_run(now).map(drop)).unwrap();
    let error = store
        .transaction(|tx| tx.begin_run(t("2026-03-01T09:59:59Z")).map(drop))
        .unwrap_err();
    assert!(matches!(error, StoreError::NowBeforeLastRun { .. }));
    assert_eq!(
        error.to_string(),
        "cannot run at 2026-03-01T09:59:59Z: the store was last run at 2026-03-01T10:00:00Z, \
         and runs cannot go back in time"
    );
}

#[test]
fn a_failed_or_panicking_transaction_leaves_the_store_as_before() {
    let dir = Scratch::new("import-rollback");
    let db = seeded(&dir);
    let before = dump(&db);
    let mut store = Store::open(&db).unwrap();
    let work = |tx: &store::Tx| -> Result<(), StoreError> {
        let run = tx.begin_run(t("2026-03-05T00:00:00Z"))?;
        tx.record_delivery(run, delivery("event:9"))?;
        tx.add_tag("c1", "新标签", t("2026-03-05T00:00:00Z"))?;
        tx.set_progress("春节促销", "evaluated_until", "2026-03-05T00:00:00Z")?;
        tx.upsert_customer("c1", serde_json::json!({"age": 99}).as_object().unwrap())?;
        Ok(())
    };
    let failed = store.transaction(|tx| {
        work(tx)?;
        Err::<(), _>(StoreError::NowBeforeLastRun {
            now: Utc::now(),
            last: Utc::now(),
        })
    });
    assert!(failed.is_err());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.transaction(|tx| -> Result<(), StoreError> {
            work(tx)?;
            panic!("killed mid-run");
        })
    }));
    assert!(panicked.is_err());
    // A dry run sees its own writes, then discards them.
    store
        .scratch(|tx| {
            work(tx)?;
            assert_eq!(
                tx.progress("春节促销", "evaluated_until")?.as_deref(),
                Some("2026-03-05T00:00:00Z")
            );
            Ok::<_, StoreError>(())
        })
        .unwrap();
    drop(store);
    assert_eq!(dump(&db), before);
}

#[test]
fn progress_values_are_kept_per_campaign() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .transaction(|tx| {
            tx.set_progress("a", "k", "1")?;
            tx.set_progress("a", "k", "2")?;
            tx.set_progress("b", "k", "3")?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let values = store
        .scratch(|tx| {
            Ok::<_, StoreError>((
                tx.progress("a", "k")?,
                tx.progress("b", "k")?,
                tx.progress("a", "x")?,
            ))
        })
        .unwrap();
    assert_eq!(values, (Some("2".into()), Some("3".into()), None));
}

/// What tells a run that tag rules must be recomputed for everyone: customers' attributes or
/// tags changed since a run last marked them seen. A transaction that changes them says so once,
/// at its commit; one that marks them seen afterwards (a run, with its own tag changes) does not,
/// and neither does one that is rolled back or changes nothing.
#[test]
fn changes_to_customers_outside_runs_are_noticed_once_committed() {
    let mut store = Store::open_in_memory().unwrap();
    let changed = |store: &mut Store| store.scratch(|tx| tx.customers_changed()).unwrap();
    let commit = |store: &mut Store,
                  change: &dyn Fn(&nudge::store::Tx) -> Result<(), StoreError>| {
        store.transaction(|tx| change(tx)).unwrap()
    };
    let attributes = serde_json::json!({"city": "上海"});
    let attributes = attributes.as_object().unwrap();
    assert!(changed(&mut store), "no run has seen a new store");
    commit(&mut store, &|tx| {
        tx.upsert_customer("a", attributes)?;
        tx.mark_customers_seen()
    });
    assert!(!changed(&mut store));
    // A run's own tag changes.
    commit(&mut store, &|tx| {
        tx.add_tag("a", "VIP", t("2026-03-01T00:00:00Z"))?;
        tx.mark_customers_seen()
    });
    assert!(!changed(&mut store), "a run's own tag changes are seen");
    // Adding a tag the customer has changes nothing.
    commit(&mut store, &|tx| {
        tx.add_tag("a", "VIP", t("2026-03-02T00:00:00Z")).map(drop)
    });
    assert!(!changed(&mut store));
    let failed = store.transaction(|tx| {
        tx.remove_tag("a", "VIP", t("2026-03-02T00:00:00Z"))?;
        Err::<(), _>(StoreError::Damaged("injected".into()))
    });
    assert!(failed.is_err());
    assert!(!changed(&mut store), "a rolled-back change is no change");
    commit(&mut store, &|tx| {
        tx.remove_tag("a", "VIP", t("2026-03-02T00:00:00Z"))
            .map(drop)
    });
    assert!(changed(&mut store), "an import's tag change");
    commit(&mut store, &|tx| tx.mark_customers_seen());
    commit(&mut store, &|tx| tx.upsert_customer("b", attributes));
    assert!(changed(&mut store), "an import's new customer");
}

#[test]
fn the_schema_is_versioned_and_a_newer_store_is_refused() {
    let dir = Scratch::new("import-schema");
    let db = dir.join("nudge.db");
    let mut store = Store::open(&db).unwrap();
    let version = |store: &mut Store| {
        store
            .scratch(|tx| {
                Ok::<i64, StoreError>(tx.connection()?.query_row(
                    "SELECT version FROM schema_version",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap()
    };
    assert_eq!(version(&mut store), 10);
    drop(store);
    // Opening again migrates nothing.
    let mut store = Store::open(&db).unwrap();
    assert_eq!(version(&mut store), 10);
    let mode: String = store
        .scratch(|tx| {
            Ok::<_, StoreError>(
                tx.connection()?
                    .query_row("PRAGMA journal_mode", [], |row| row.get(0))?,
            )
        })
        .unwrap();
    assert_eq!(mode, "wal");
    store
        .transaction(|tx| {
            Ok::<_, StoreError>(
                tx.connection()?
                    .execute("UPDATE schema_version SET version = 11", [])
                    .map(drop)?,
            )
        })
        .unwrap();
    drop(store);
    let error = Store::open(&db).err().unwrap();
    assert!(
        matches!(
            error,
            StoreError::UnknownSchema {
                found: 11,
                known: 10
            }
        ),
        "{error}"
    );
}

#[test]
fn queued_deliveries_are_released_when_due_and_settled_once() {
    let mut store = Store::open_in_memory().unwrap();
    let queued = |occurrence: &str, due: &str| Delivery {
        outcome: Outcome::Queued,
        channel: None,
        address: None,
        content: None,
        due_at: t(due),
        ..delivery(occurrence)
    };
    store
        .transaction(|tx| {
            let run = tx.begin_run(t("2026-03-01T02:00:00Z"))?;
            tx.record_delivery(run, queued("event:2", "2026-03-01T02:20:00Z"))?;
            tx.record_delivery(run, queued("event:1", "2026-03-01T02:10:00Z"))?;
            tx.record_delivery(run, queued("event:3", "2026-03-01T05:00:00Z"))?;
            tx.record_delivery(run, delivery("event:4"))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store
        .transaction(|tx| {
            let run = tx.begin_run(t("2026-03-01T03:00:00Z"))?;
            // Paged one at a time, by key: the due ones in due order, then nothing.
            let until = t("2026-03-01T03:00:00Z");
            let mut due = Vec::new();
            let mut after = QueueKey::start();
            while let Some((key, delivery)) = tx.queued_page(until, &after, 1)?.pop() {
                after = key;
                due.push(delivery);
            }
            let occurrences: Vec<_> = due.iter().map(|d| d.occurrence.as_str()).collect();
            assert_eq!(occurrences, ["event:1", "event:2"]);
            let mut sent = due[0].clone();
            sent.outcome = Outcome::Sent;
            sent.channel = Some("sms".into());
            assert!(tx.settle_delivery(run, &sent)?);
            // Settled once: neither it nor a delivery that was never queued can be settled.
            assert!(!tx.settle_delivery(run, &sent)?);
            assert!(!tx.settle_delivery(run, &delivery("event:4"))?);
            assert_eq!(tx.queued_page(until, &QueueKey::start(), 10)?.len(), 1);
            let stored = tx.deliveries_for_customer("c1")?;
            assert_eq!(stored[0].outcome, Outcome::Sent);
            assert_eq!(stored[0].channel.as_deref(), Some("sms"));
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

#[test]
fn sends_through_employees_are_counted_per_employee_and_campaign() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .transaction(|tx| {
            for employee in ["alice", "bob", "alice"] {
                tx.count_employee_send("c", employee)?;
            }
            let counts = tx.employee_loads("c")?;
            assert_eq!(
                counts,
                HashMap::from([("alice".into(), 2), ("bob".into(), 1)])
            );
            // Other campaigns' deliveries do not count.
            assert!(tx.employee_loads("other")?.is_empty());
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

/// The store's journal mode, as a new connection finds it.
fn journal_mode(tx: &store::Tx) -> String {
    tx.connection()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_bulk_load_writes_through_a_rollback_journal_and_a_failed_one_changes_nothing() {
    let dir = Scratch::new("import-bulk");
    let db = seeded(&dir);
    let before = dump(&db);
    let journal = dir.join("nudge.db-journal");
    let attributes = serde_json::json!({ "note": "x".repeat(1000) });
    let attributes = attributes.as_object().unwrap();
    let mut store = Store::open(&db).unwrap();
    let failed: Result<(), StoreError> = store.bulk_transaction(|tx| {
        assert_eq!(journal_mode(tx), "delete");
        // A cache of a few pages, so that the new customers are written into the store's
        // file before the transaction fails: only the journal can then undo them.
        tx.limit_cache(64)?;
        for i in 0..2_000 {
            tx.upsert_customer(&format!("bulk{i}"), attributes)?;
        }
        assert!(journal.exists(), "pages were journalled");
        Err(StoreError::Damaged("a failure injected by the test".into()))
    });
    assert!(failed.is_err());
    assert!(!journal.exists());
    drop(store);
    assert_eq!(dump(&db), before);

    let mut store = Store::open(&db).unwrap();
    store
        .bulk_transaction(|tx| tx.upsert_customer("bulk", attributes))
        .unwrap();
    store
        .scratch(|tx| {
            assert_eq!(journal_mode(tx), "wal", "back to the WAL once done");
            assert!(tx.customer("bulk")?.is_some());
            Ok::<_, StoreError>(())
        })
        .unwrap();
}
