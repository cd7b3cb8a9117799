//! `nudge import KIND FILE`: customers, events, tags or employee relations into the store.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{plural, EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::store::{
    self, BadRow, ImportError, ImportFile, ImportObserver, ImportOptions, ImportSummary, Kind,
    Store,
};

#[derive(clap::Args)]
pub struct Args {
    /// What the file holds
    #[arg(value_enum)]
    kind: Kind,
    /// A JSON Lines (`.jsonl`, `.ndjson`) or CSV (`.csv`, with a header row) file
    file: PathBuf,
    /// The store (created if missing)
    #[arg(long, default_value = "nudge.db")]
    store: PathBuf,
    /// Import the good rows and list the bad ones, instead of importing nothing
    #[arg(long)]
    skip_invalid: bool,
    /// When the tags this import adds are recorded as added (their `tag_added` events, which
    /// `on tag added` campaigns fire on): RFC 3339, default now. For back-fills and replays
    /// whose runs use `--now` in the past.
    #[arg(long, value_parser = super::parse_instant)]
    at: Option<DateTime<Utc>>,
}

/// A strict import lists this many bad rows, then only counts the rest.
const MAX_LISTED: u64 = 20;

pub fn run(args: Args) -> u8 {
    let opened = ImportFile::open(&args.file).and_then(|file| {
        let store = Store::open(&args.store)?;
        Ok((file, store))
    });
    let (file, mut store) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let mut reporter = Reporter::new(&args, file.size());
    let options = ImportOptions {
        skip_invalid: args.skip_invalid,
        now: args.at.unwrap_or_else(Utc::now),
    };
    let result = store::import(&mut store, args.kind, file, options, &mut reporter);
    reporter.bar.finish_and_clear();
    let file = args.file.display();
    match result {
        Ok(ImportSummary { imported, skipped }) => {
            let skipped = match skipped {
                0 => String::new(),
                n => format!("; skipped {}", plural(n, "bad row")),
            };
            // The import is done: a closed stdout (`| head -0`) changes nothing about it.
            let _ = writeln!(
                std::io::stdout(),
                "imported {} from {file} into {}{skipped}",
                plural(imported, noun(args.kind)),
                args.store.display()
            );
            EXIT_OK
        }
        Err(ImportError::Rejected { bad_rows }) => {
            if bad_rows > MAX_LISTED {
                let more = plural(bad_rows - MAX_LISTED, "more bad row");
                eprintln!("error: … and {more}");
            }
            eprintln!(
                "error: nothing imported: {file} has {} (--skip-invalid imports the others)",
                plural(bad_rows, "bad row")
            );
            EXIT_ERRORS
        }
        Err(ImportError::Header { reason }) => {
            eprintln!("error: {file}:1: {reason}");
            eprintln!("error: nothing imported");
            EXIT_ERRORS
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Customers => "customer",
        Kind::Events => "event",
        Kind::Tags => "tag",
        Kind::Employees => "employee relation",
    }
}

/// Lists bad rows on stderr and draws a progress bar there when it is a terminal.
struct Reporter {
    file: String,
    skip_invalid: bool,
    listed: u64,
    bar: ProgressBar,
}

impl Reporter {
    fn new(args: &Args, len: Option<u64>) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()).with_style(style)
        } else {
            ProgressBar::hidden()
        };
        Reporter {
            file: args.file.display().to_string(),
            skip_invalid: args.skip_invalid,
            listed: 0,
            bar,
        }
    }
}

impl ImportObserver for Reporter {
    fn bad_row(&mut self, row: &BadRow) {
        let prefix = match self.skip_invalid {
            true => "skipped",
            false if self.listed < MAX_LISTED => "error",
            false => return,
        };
        self.listed += 1;
        self.bar
            .suspend(|| eprintln!("{prefix}: {}:{}: {}", self.file, row.line, row.reason));
    }

    fn progress(&mut self, bytes: u64) {
        self.bar.set_position(bytes);
    }
}
