//! Store and interpreter benchmark (issue 3's targets): generates a shop, imports it, estimates
//! every campaign of `rules/`, and runs incrementally after 10,000 new events.
//!
//! ```sh
//! cargo bench --bench store                                  # 100,000 customers, ~2M events
//! NUDGE_BENCH_CUSTOMERS=1000000 cargo bench --bench store    # 1M customers, ~20M events
//! ```
//!
//! `NUDGE_BENCH_KEEP=1` also keeps the copy of the store as the incremental run finds it,
//! `before-incremental.db` (its WAL is checkpointed by the import before it).
//!
//! Every step runs the release `nudge` binary in a child process, after a `sync`, and reports its
//! wall time and peak resident memory (`ru_maxrss` of that child, from `wait4`). Files and stores go to
//! `NUDGE_BENCH_DIR` (default `/tmp/nudge-bench-<customers>`), replaced on each run. Steps:
//!
//! 1. `nudge demo --generate-only`: the generator writes the store directly;
//! 2. the same shop is written as JSON Lines, events in time order (not timed);
//! 3. `nudge import customers`, `employees`, `events` into a fresh store;
//! 4. `nudge estimate rules` on that store (every customer, every campaign), five times;
//! 5. a first `nudge run` (campaigns begin), then 10,000 new events imported and an incremental
//!    `nudge run --timings` over the two hours they fall in (no schedule fires then), five
//!    times, each on a fresh copy of the store as the import left it.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nudge::demo::{Shop, ShopCustomer, ShopOptions};

const EVENTS_PER_CUSTOMER: usize = 20;
const NEW_EVENTS: usize = 10_000;
/// Time buckets of the events file: each is sorted in memory, so the bench stays small too.
const BUCKETS: i64 = 64;
/// How many times the estimate and the incremental run are timed (the latter on fresh copies of
/// the same store): on the benchmark machine one run varies by a fifth from minute to minute.
/// The report gives each step's median and range.
const REPEATS: usize = 5;

fn main() {
    let customers: usize = std::env::var("NUDGE_BENCH_CUSTOMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::var_os("NUDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("nudge-bench-{customers}")));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("the bench directory can be created");
    let bench = Bench {
        dir,
        rules: Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
        results: Vec::new(),
    };
    run(bench, customers);
}

fn run(mut bench: Bench, customers: usize) {
    let options = ShopOptions {
        customers,
        events_per_customer: EVENTS_PER_CUSTOMER,
        seed: 2026,
        around: "2026-11-16T00:00:00Z".parse().expect("an instant"),
    };
    let n = customers.to_string();
    let demo = bench.path("demo.db");
    bench.step(
        "generate the sample store (`demo --generate-only`)",
        &[
            "demo",
            "--generate-only",
            "--customers",
            &n,
            "--store",
            &demo,
        ],
        None,
    );
    let events = export(&bench.dir, &options);
    let store = bench.path("big.db");
    // The customers' tags are dated within the shop's history, not at the clock's time: the
    // runs below replay 2026-11-19, and tags added "later" would be events in their future.
    let tagged_at = options.around.to_rfc3339();
    for kind in ["customers", "employees"] {
        let file = bench.path(&format!("{kind}.jsonl"));
        bench.step(
            &format!("import {kind}"),
            &["import", kind, &file, "--store", &store, "--at", &tagged_at],
            None,
        );
    }
    let file = bench.path("events.jsonl");
    bench.step(
        &format!("import {events} events (time order)"),
        &["import", "events", &file, "--store", &store],
        Some(events),
    );
    let rules = bench.rules.display().to_string();
    let before = "2026-11-19T00:00:00Z";
    for _ in 0..REPEATS {
        bench.step(
            "estimate every campaign of rules/",
            &["estimate", &rules, "--store", &store, "--at", before],
            None,
        );
    }
    bench.step(
        "first run (campaigns begin)",
        &["run", &rules, "--store", &store, "--now", before],
        None,
    );
    // The incremental run uses campaigns that fire on events only, with tag rules that move with
    // events only: `rules/` has daily schedules and a rule on a time attribute, which read every
    // customer whenever they are due.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let event_driven: Vec<String> = [
        "rules/schema.nudge",
        "rules/policy.nudge",
        "benches/incremental/campaigns.nudge",
    ]
    .iter()
    .map(|file| root.join(file).display().to_string())
    .collect();
    let run_event_driven = |now: &'static str| -> Vec<&str> {
        let mut args = vec!["run"];
        args.extend(event_driven.iter().map(String::as_str));
        args.extend(["--store", &store, "--now", now]);
        args
    };
    bench.step(
        "first run of benches/incremental (campaigns begin, everyone tagged)",
        &run_event_driven(before),
        None,
    );
    let later = "2026-11-19T01:59:59Z";
    let file = new_events(&bench.dir, customers, before, later);
    bench.step(
        &format!("import {NEW_EVENTS} new events"),
        &["import", "events", &file, "--store", &store],
        Some(NEW_EVENTS as u64),
    );
    // The store as the incremental run finds it; each timed run gets a fresh copy of it.
    let before_incremental = bench.path("before-incremental.db");
    fs::copy(&store, &before_incremental).expect("the store can be copied");
    // `--timings` prints where each run's time went (to stderr, beside the bench's progress).
    let mut incremental = run_event_driven(later);
    incremental.push("--timings");
    for _ in 0..REPEATS {
        fs::copy(&before_incremental, &store).expect("the store can be copied");
        bench.step(
            &format!("incremental run after {NEW_EVENTS} new events"),
            &incremental,
            None,
        );
    }
    if std::env::var_os("NUDGE_BENCH_KEEP").is_none() {
        fs::remove_file(&before_incremental).expect("the copy can be removed");
    }
    bench.report(customers, events);
}

struct Bench {
    dir: PathBuf,
    rules: PathBuf,
    results: Vec<(String, Duration, u64, Option<u64>)>,
}

impl Bench {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Runs `nudge ARGS`, which must succeed, and records its time and peak memory. The files
    /// earlier steps wrote are flushed to disk first (`sync`), so that their write-back is not
    /// timed as this step's (seen: an incremental run at 0.53 s right after an import, 0.22–0.29 s
    /// on copies of the same store).
    fn step(&mut self, what: &str, args: &[&str], rows: Option<u64>) {
        eprintln!("… {what}");
        let synced = Command::new("sync").status().is_ok_and(|s| s.success());
        assert!(synced, "`sync` runs");
        let started = Instant::now();
        // Waited for with `wait4` (below), which also reports the child's peak memory.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("nudge starts");
        let (status, peak_kb) = wait(child.id());
        let elapsed = started.elapsed();
        assert!(status == 0, "`nudge {}` failed ({status})", args.join(" "));
        eprintln!(
            "  {:.3} s, {} MB peak",
            elapsed.as_secs_f64(),
            peak_kb / 1024
        );
        self.results.push((what.to_owned(), elapsed, peak_kb, rows));
    }

    /// A table of the steps in order, a row per step: a step timed more than once shows its
    /// median, then its range, and the largest peak.
    fn report(&self, customers: usize, events: u64) {
        println!("\nstore benchmark: {customers} customers, {events} events\n");
        println!("| step | time | peak memory | rate |");
        println!("|---|---|---|---|");
        let mut steps: Vec<&str> = Vec::new();
        for (what, ..) in &self.results {
            if !steps.contains(&what.as_str()) {
                steps.push(what);
            }
        }
        for step in steps {
            let runs: Vec<_> = self.results.iter().filter(|r| r.0 == step).collect();
            let mut times: Vec<Duration> = runs.iter().map(|r| r.1).collect();
            times.sort();
            let median = times[times.len() / 2];
            let peak_kb = runs.iter().map(|r| r.2).max().unwrap_or(0);
            let rate = runs[0].3.map_or(String::new(), |rows| {
                format!("{:.0} /s", rows as f64 / median.as_secs_f64())
            });
            let range = match times.len() {
                1 => String::new(),
                n => format!(
                    " (median of {n}, {:.3}–{:.3} s)",
                    times[0].as_secs_f64(),
                    times[n - 1].as_secs_f64()
                ),
            };
            println!(
                "| {step} | {:.3} s{range} | {} MB | {rate} |",
                median.as_secs_f64(),
                peak_kb / 1024
            );
        }
    }
}

/// Waits for the child and returns its exit status and peak resident memory in KB.
fn wait(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes one for the child we started.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert!(waited == pid as libc::pid_t, "wait4 failed");
    let code = match libc::WIFEXITED(status) {
        true => libc::WEXITSTATUS(status),
        false => -1,
    };
    (code, usage.ru_maxrss as u64)
}

/// Writes the shop as `customers.jsonl`, `employees.jsonl` and `events.jsonl` (events in time
/// order, as a real export would be), and returns the number of events.
fn export(dir: &Path, options: &ShopOptions) -> u64 {
    let mut customers = writer(&dir.join("customers.jsonl"));
    let mut employees = writer(&dir.join("employees.jsonl"));
    let first = (options.around - chrono::Duration::days(60)).timestamp_millis();
    let span = chrono::Duration::days(63).num_milliseconds() + 1;
    let bucket_path = |b: i64| dir.join(format!("events-{b}.tmp"));
    let mut buckets: Vec<_> = (0..BUCKETS).map(|b| writer(&bucket_path(b))).collect();
    let mut count = 0;
    for customer in Shop::new(options) {
        writeln!(customers, "{}", customer_line(&customer)).expect("write");
        for (employee, added) in &customer.employees {
            let line = serde_json::json!({
                "customer": customer.id, "employee": employee, "added_at": rfc3339(*added)
            });
            writeln!(employees, "{line}").expect("write");
        }
        for (name, properties, at) in &customer.events {
            let ms = at.timestamp_millis();
            let bucket = ((ms - first).clamp(0, span - 1) * BUCKETS / span) as usize;
            let line = format!(
                r#"{{"customer":"{}","event":"{name}","at":"{}","properties":{properties}}}"#,
                customer.id,
                rfc3339(*at)
            );
            writeln!(buckets[bucket], "{ms}\t{line}").expect("write");
            count += 1;
        }
    }
    drop(buckets);
    let mut events = writer(&dir.join("events.jsonl"));
    for b in 0..BUCKETS {
        let mut lines: Vec<(i64, String)> =
            BufReader::new(File::open(bucket_path(b)).expect("a bucket"))
                .lines()
                .map(|line| {
                    let line = line.expect("read");
                    let (ms, json) = line.split_once('\t').expect("a bucket line");
                    (ms.parse().expect("a time"), json.to_owned())
                })
                .collect();
        lines.sort_by_key(|(ms, _)| *ms);
        for (_, line) in lines {
            writeln!(events, "{line}").expect("write");
        }
        fs::remove_file(bucket_path(b)).expect("remove a bucket");
    }
    count
}

fn customer_line(customer: &ShopCustomer) -> String {
    let mut object = customer.attributes.clone();
    object.insert("id".into(), customer.id.clone().into());
    object.insert("tags".into(), customer.tags.clone().into());
    serde_json::Value::Object(object).to_string()
}

/// 10,000 events in `(after, until]` for customers spread over the shop, in time order: views of
/// the pricing page (a trigger with `unless share`), collects (every N times), carts.
fn new_events(dir: &Path, customers: usize, after: &str, until: &str) -> String {
    let path = dir.join("new-events.jsonl");
    let mut out = writer(&path);
    let (after, until): (DateTime<Utc>, DateTime<Utc>) = (
        after.parse().expect("an instant"),
        until.parse().expect("an instant"),
    );
    let span = (until - after).num_milliseconds() as usize;
    for i in 0..NEW_EVENTS {
        let at = after + chrono::Duration::milliseconds((1 + i * span / NEW_EVENTS) as i64);
        let customer = format!("c{:07}", (i * 7919) % customers);
        let (name, properties) = match i % 4 {
            0 => ("page_view", r#"{"page":"/pricing"}"#),
            1 => ("collect", r#"{"item":"春季外套"}"#),
            2 => ("add_to_cart", r#"{"sku":"TV-55","price":899}"#),
            _ => ("share", "{}"),
        };
        writeln!(
            out,
            r#"{{"customer":"{customer}","event":"{name}","at":"{}","properties":{properties}}}"#,
            rfc3339(at)
        )
        .expect("write");
    }
    path.display().to_string()
}

fn writer(path: &Path) -> BufWriter<File> {
    BufWriter::new(File::create(path).expect("a bench file can be created"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
