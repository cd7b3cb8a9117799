//! `nudge check [PATHS…]`: every problem in every file, in the terminal or as JSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{plural, EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::check::CheckOptions;
use crate::diagnostics::{self, Style};
use crate::project::{self, Project};

#[derive(clap::Args)]
pub struct Args {
    /// Rule files, or directories to search for `*.nudge` files
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// How to print diagnostics
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Fail (exit 1) on warnings too
    #[arg(long)]
    deny_warnings: bool,
    /// What "now" is for warnings about the past (default: the clock)
    #[arg(long, value_parser = super::parse_instant)]
    now: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn run(args: Args) -> u8 {
    let sources = match project::load(&args.paths) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let options = CheckOptions {
        now: args.now.unwrap_or_else(Utc::now),
    };
    let project = project::analyze(sources, &options);
    let output = match args.format {
        Format::Human => human(
            &project,
            Style {
                color: super::use_color(std::io::stdout().is_terminal()),
                width: terminal_width(),
            },
        ),
        Format::Json => json(&project),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(output.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return EXIT_USAGE;
    }
    let failed = project.errors() > 0 || (args.deny_warnings && project.warnings() > 0);
    if failed {
        EXIT_ERRORS
    } else {
        EXIT_OK
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// Every diagnostic as miette draws it, then a one-line summary.
pub fn human(project: &Project, style: Style) -> String {
    let mut out = String::new();
    for diagnostic in &project.diagnostics {
        out.push_str(&diagnostics::render(&project.sources, diagnostic, style));
        out.push('\n');
    }
    out.push_str(&summary(project));
    out.push('\n');
    out
}

fn summary(project: &Project) -> String {
    let files = plural(project.sources.len() as u64, "file");
    match (project.errors(), project.warnings()) {
        (0, 0) => format!("checked {files}: no problems"),
        (errors, warnings) => format!(
            "checked {files}: {}, {}",
            plural(errors as u64, "error"),
            plural(warnings as u64, "warning")
        ),
    }
}

/// The JSON document pinned in LANGUAGE.md §9.
pub fn json(project: &Project) -> String {
    let report = diagnostics::to_json(&project.sources, &project.diagnostics);
    let mut text = serde_json::to_string_pretty(&report).expect("diagnostics serialize");
    text.push('\n');
    text
}
