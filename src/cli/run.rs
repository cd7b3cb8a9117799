//! `nudge run [PATHS] --store S [--now T] [--format table|jsonl] [--dry-run]`.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::{EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::run::{Emitted, RunError, RunOptions};
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

pub fn run(args: Args) -> u8 {
    let (project, mut store) = match args.target.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let options = RunOptions {
        now: args.now.unwrap_or_else(Utc::now),
        dry_run: args.dry_run,
    };
    let emitted = match crate::run::run(&project, &mut store, &options) {
        Ok(emitted) => emitted,
        Err(RunError::Store(error @ StoreError::NowBeforeLastRun { .. })) => {
            eprintln!("error: {error}");
            return EXIT_ERRORS;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let text = match args.format {
        Format::Jsonl => jsonl(&emitted),
        Format::Table => table(&emitted),
    };
    // A closed stdout changes nothing about the run, which is committed.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    EXIT_OK
}

/// One JSON object per delivery (LANGUAGE.md §9).
pub fn jsonl(emitted: &[Emitted]) -> String {
    emitted
        .iter()
        .map(|e| serde_json::to_string(e).expect("deliveries serialize") + "\n")
        .collect()
}

/// A table for people: when, which campaign, who, how, and the first words of the message.
pub fn table(emitted: &[Emitted]) -> String {
    let mut out = String::new();
    for e in emitted {
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
        out.push_str(&format!(
            "{}  {}  {}  {} → {}  {}{}\n",
            e.due_at.format("%Y-%m-%d %H:%M"),
            e.campaign,
            e.customer,
            e.channel,
            e.to.as_deref().unwrap_or("-"),
            e.variant
                .as_ref()
                .map(|v| format!("[{v}] "))
                .unwrap_or_default(),
            summary
        ));
    }
    out.push_str(&format!(
        "{} sent\n",
        match emitted.len() {
            1 => "1 delivery".to_string(),
            n => format!("{n} deliveries"),
        }
    ));
    out
}
