//! `nudge demo`: a sample shop, the example campaigns of `rules/`, and a few runs, end to end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use super::{EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::check::CheckOptions;
use crate::demo::{generate, ShopOptions};
use crate::project::{self, Sources};
use crate::run::{run as run_campaigns, Emitted, RunOptions};
use crate::store::{Store, StoreError};

#[derive(clap::Args)]
pub struct Args {
    /// Where to create the sample store (replaced if it exists)
    #[arg(long)]
    store: Option<PathBuf>,
    /// How many customers the sample shop has
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    /// How many events a customer has on average
    #[arg(long, default_value_t = 20)]
    events_per_customer: usize,
    /// Seed of the generator (the same seed tells the same story)
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Only create the sample store, without checking the rules or running them (for
    /// benchmarks: `--customers 1000000` builds the large store)
    #[arg(long)]
    generate_only: bool,
}

/// The example rules, built in so that the demo runs from anywhere.
const RULES: &[(&str, &str)] = &[
    (
        "rules/schema.nudge",
        include_str!("../../rules/schema.nudge"),
    ),
    (
        "rules/policy.nudge",
        include_str!("../../rules/policy.nudge"),
    ),
    (
        "rules/seed000_moments.nudge",
        include_str!("../../rules/seed000_moments.nudge"),
    ),
    (
        "rules/seed001_tags.nudge",
        include_str!("../../rules/seed001_tags.nudge"),
    ),
    (
        "rules/seed002_growth.nudge",
        include_str!("../../rules/seed002_growth.nudge"),
    ),
    (
        "rules/seed003_combination.nudge",
        include_str!("../../rules/seed003_combination.nudge"),
    ),
    (
        "rules/seed004_mass.nudge",
        include_str!("../../rules/seed004_mass.nudge"),
    ),
];

/// Monday 2026-11-16, 08:00 in Shanghai: the demo's "today".
fn today() -> DateTime<Utc> {
    "2026-11-16T00:00:00Z".parse().expect("a valid instant")
}

pub fn run(args: Args) -> u8 {
    let path = args
        .store
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("nudge-demo.db"));
    match demo(&args, &path) {
        Ok(()) => EXIT_OK,
        Err(DemoError::Rules) => EXIT_ERRORS,
        Err(DemoError::Run(error)) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

enum DemoError {
    Rules,
    Run(crate::run::RunError),
}

impl From<StoreError> for DemoError {
    fn from(error: StoreError) -> DemoError {
        DemoError::Run(error.into())
    }
}

impl From<crate::run::RunError> for DemoError {
    fn from(error: crate::run::RunError) -> DemoError {
        DemoError::Run(error)
    }
}

fn demo(args: &Args, path: &Path) -> Result<(), DemoError> {
    println!("Nudge demo: a sample shop and the example campaigns of rules/\n");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut store = Store::open(path)?;
    let options = ShopOptions {
        customers: args.customers,
        events_per_customer: args.events_per_customer,
        seed: args.seed,
        around: today(),
    };
    let size = store.transaction(|tx| generate(tx, &options))?;
    println!(
        "created {}: {} customers, {} employees, {} events from {} to {}",
        path.display(),
        size.customers,
        size.employees,
        size.events,
        (today() - Duration::days(60)).format("%Y-%m-%d"),
        (today() + Duration::days(3)).format("%Y-%m-%d"),
    );
    if args.generate_only {
        return Ok(());
    }

    let mut sources = Sources::default();
    for (name, text) in RULES {
        sources.add(*name, *text);
    }
    let project = project::analyze(sources, &CheckOptions { now: today() });
    if project.errors() > 0 {
        eprintln!("error: the example rules have errors");
        return Err(DemoError::Rules);
    }
    let campaigns = project.campaigns().count();
    println!(
        "checked {} rule files: {campaigns} campaigns, no problems\n",
        RULES.len()
    );

    let hours = [0, 10, 24, 48, 72];
    // A delivery of the latest run that sent anything, for the `explain` hint.
    let mut example = None;
    for (i, hour) in hours.into_iter().enumerate() {
        let now = today() + Duration::hours(hour);
        let emitted = run_campaigns(
            &project,
            &mut store,
            &RunOptions {
                now,
                dry_run: false,
            },
        )?;
        if let Some(e) = emitted.first() {
            example = Some((e.campaign.clone(), e.customer.clone()));
        }
        let local = now.with_timezone(&chrono_tz::Asia::Shanghai);
        println!(
            "── run {} at {} (Asia/Shanghai) ──",
            i + 1,
            local.format("%Y-%m-%d %H:%M")
        );
        if i == 0 {
            println!("   campaigns without `start` begin at their first run: no back-fill, nothing due yet\n");
            continue;
        }
        print_run(&emitted);
        print_not_sent(&mut store)?;
        println!();
    }
    println!("The store is at {}. Try:", path.display());
    println!(
        "  nudge estimate rules/ --store {} --at 2026-11-19T00:00:00Z",
        path.display()
    );
    println!(
        "  nudge run rules/ --store {} --now 2026-11-20T00:00:00Z --format jsonl",
        path.display()
    );
    if let Some((campaign, customer)) = example {
        println!(
            "  nudge explain rules/ --store {} --campaign \"{campaign}\" --customer {customer}",
            path.display()
        );
    }
    Ok(())
}

/// Deliveries per campaign and channel, and a few examples.
fn print_run(emitted: &[Emitted]) {
    let mut per_campaign: BTreeMap<(&str, Option<&str>, &str), usize> = BTreeMap::new();
    for e in emitted {
        *per_campaign
            .entry((&e.campaign, e.variant.as_deref(), &e.channel))
            .or_default() += 1;
    }
    println!("   {} sent", emitted.len());
    for ((campaign, variant, channel), count) in &per_campaign {
        let variant = variant.map(|v| format!(" [{v}]")).unwrap_or_default();
        println!("   {count:>6}  {campaign}{variant} on {channel}");
    }
    let mut seen = std::collections::HashSet::new();
    for e in emitted.iter().filter(|e| seen.insert(&e.campaign)).take(3) {
        let text = e
            .content
            .get("text")
            .or_else(|| e.content.get("subject"))
            .or_else(|| e.content.get("title"));
        println!(
            "   e.g. {} → {} on {} ({}): {}",
            e.campaign,
            e.customer,
            e.channel,
            e.to.as_deref().unwrap_or("-"),
            text.and_then(|t| t.as_str()).unwrap_or("")
        );
    }
}

/// What this run decided but did not send, and why; and how many deliveries the policies moved.
fn print_not_sent(store: &mut Store) -> Result<(), StoreError> {
    let rows: Vec<(String, String)> = store.scratch(|tx| {
        let mut statement = tx.connection()?.prepare(
            "SELECT outcome, coalesce(reason, '') FROM deliveries
             WHERE run = (SELECT max(id) FROM runs)",
        )?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, StoreError>(rows)
    })?;
    let mut not_sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut moved = [0usize; 3];
    let moves = ["moved by quiet hours", "paced from", " reached: moved from"];
    for (outcome, reason) in &rows {
        if let Some(why) = why_not_sent(outcome, reason) {
            *not_sent.entry(why).or_default() += 1;
        }
        for (count, needle) in moved.iter_mut().zip(moves) {
            *count += usize::from(reason.contains(needle));
        }
    }
    let mut not_sent: Vec<_> = not_sent.into_iter().collect();
    not_sent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (why, count) in not_sent.iter().take(5) {
        println!("   not sent: {count} {why}");
    }
    if moved.iter().any(|n| *n > 0) {
        println!(
            "   moved: {} out of quiet hours, {} by pace, {} by rate",
            moved[0], moved[1], moved[2]
        );
    }
    Ok(())
}

/// A delivery outcome summed up without its times, so that like outcomes count together.
fn why_not_sent(outcome: &str, reason: &str) -> Option<String> {
    let last = reason.rsplit("; ").next().unwrap_or(reason);
    let before_colon = last.split(':').next().unwrap_or(last);
    Some(match outcome {
        "sent" => return None,
        "queued" => "queued: due after this run".to_string(),
        "expired" => "expired: due after the campaign's end".to_string(),
        "control" => "in the control group of a split".to_string(),
        "capped" => before_colon.to_string(),
        _ => format!("{outcome} ({last})"),
    })
}
