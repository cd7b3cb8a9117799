//! `nudge run [PATHS] --store S [--now T] [--format table|jsonl] [--dry-run]`.

use std::io::{BufWriter, Seek, SeekFrom, Write};

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::{EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::run::{Emitted, Phases, RunError, RunOptions};
use crate::store::StoreError;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::RulesAndStore,
    /// The instant to run at (default: the clock)
    #[arg(long, value_parser = super::parse_instant)]
    now: Option<DateTime<Utc>>,
    /// How to print what was sent
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Decide everything, print it, and leave the store unchanged
    #[arg(long)]
    dry_run: bool,
    /// Also print, to stderr, how long each part of the run took
    #[arg(long)]
    timings: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

pub fn run(args: Args) -> u8 {
    let mut phases = Phases::start();
    let (project, mut store) = match args.target.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    phases.end("load the rules, open the store", None);
    let options = RunOptions {
        now: args.now.unwrap_or_else(Utc::now),
        dry_run: args.dry_run,
    };
    // Deliveries go to a temporary file as the run decides them, and to stdout only once it has
    // committed and the store is closed: memory stays flat however many are sent, a run that
    // fails part-way prints nothing it did not keep, and what is printed is on disk (closing
    // the store's last connection checkpoints the WAL, syncing it and the database: until
    // then, with `synchronous = NORMAL`, a power cut could still lose the commit).
    let mut buffer = match tempfile::tempfile() {
        Ok(file) => BufWriter::new(file),
        Err(error) => {
            eprintln!("error: cannot create a temporary file for the run's output: {error}");
            return EXIT_USAGE;
        }
    };
    let format = args.format;
    let sent = crate::run::run_into(&project, &mut store, &options, &mut phases, &mut |e| {
        buffer.write_all(line(format, &e).as_bytes())
    });
    let sent = match sent {
        Ok(sent) => sent,
        Err(RunError::Store(error @ StoreError::NowBeforeLastRun { .. })) => {
            eprintln!("error: {error}");
            return EXIT_ERRORS;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    drop(store);
    phases.end("close the store (checkpoint, sync)", None);
    // A closed stdout changes nothing about the run, which is committed.
    let _ = copy_to_stdout(buffer);
    if let Format::Table = format {
        match sent {
            1 => println!("1 delivery sent"),
            n => println!("{n} deliveries sent"),
        }
    }
    phases.end("print", None);
    if args.timings {
        eprint!("{}", timings(&phases));
    }
    EXIT_OK
}

/// The phases of a run as a table for people: milliseconds, what, how many.
fn timings(phases: &Phases) -> String {
    let mut table = String::new();
    let mut total = std::time::Duration::ZERO;
    for phase in &phases.list {
        total += phase.took;
        let handled = phase
            .handled
            .as_ref()
            .map(|what| format!(" ({what})"))
            .unwrap_or_default();
        table += &format!("{:>8.1} ms  {}{handled}\n", ms(phase.took), phase.name);
    }
    table + &format!("{:>8.1} ms  in all\n", ms(total))
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn copy_to_stdout(buffer: BufWriter<std::fs::File>) -> std::io::Result<()> {
    let mut file = buffer.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())?;
    Ok(())
}

/// One delivery as printed: a JSON object on a line (LANGUAGE.md §9), or a table row for
/// people — when, which campaign, who, how, and the first words of the message.
fn line(format: Format, e: &Emitted) -> String {
    match format {
        Format::Jsonl => serde_json::to_string(e).expect("deliveries serialize") + "\n",
        Format::Table => table_row(e),
    }
}

fn table_row(e: &Emitted) -> String {
    let summary = e
        .content
        .as_object()
        .and_then(|c| {
            c.get("text")
                .or_else(|| c.get("subject"))
                .or_else(|| c.get("title"))
        })
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let summary: String = summary.chars().take(40).collect();
    // The due time as `%Y-%m-%d %H:%M`, without chrono parsing that format for every row
    // (a sixth of what printing a row cost: callgrind, the benchmark's incremental run).
    let due = e.due_at;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}  {}  {}  {} → {}  {}{}\n",
        due.year(),
        due.month(),
        due.day(),
        due.hour(),
        due.minute(),
        e.campaign,
        e.customer,
        e.channel,
        e.to.as_deref().unwrap_or("-"),
        e.variant
            .as_ref()
            .map(|v| format!("[{v}] "))
            .unwrap_or_default(),
        summary
    )
}
