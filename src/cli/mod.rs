//! The command line: one file per subcommand.

pub mod check;
pub mod demo;
pub mod estimate;
pub mod explain;
pub mod import;
pub mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes of every command (LANGUAGE.md §9).
pub const EXIT_OK: u8 = 0;
/// Errors in the rules or the data.
pub const EXIT_ERRORS: u8 = 1;
/// Bad usage or an I/O failure.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "nudge",
    version,
    about = "Check and run marketing campaigns written in the Nudge language"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check rule files and report every problem at once
    Check(check::Args),
    /// Import customers, events, tags or employee relations (JSON Lines or CSV) into the store
    Import(import::Args),
    /// Run the campaigns against the store: decide, exactly once, who receives what and when
    Run(run::Args),
    /// Audience size per campaign, and how many customers pass each clause
    Estimate(estimate::Args),
    /// Why a customer did or did not get a campaign: each clause with the values seen, the
    /// trigger's occurrences, the outcomes recorded
    Explain(explain::Args),
    /// Create a sample shop, run the example campaigns on it, and show what was sent and why
    Demo(demo::Args),
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Import(args) => import::run(args),
        Command::Run(args) => run::run(args),
        Command::Estimate(args) => estimate::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Demo(args) => demo::run(args),
    };
    ExitCode::from(code)
}

/// The rules and the store of a command that runs rules against a store.
#[derive(clap::Args)]
pub struct RulesAndStore {
    /// Rule files, or directories to search for `*.nudge` files
    #[arg(default_value = "rules")]
    paths: Vec<std::path::PathBuf>,
    /// The store
    #[arg(long, default_value = "nudge.db")]
    store: std::path::PathBuf,
}

impl RulesAndStore {
    /// The checked rules and the open store, or the exit code (errors already printed).
    pub fn open(&self) -> Result<(crate::Project, crate::store::Store), u8> {
        let project = checked_project(&self.paths)?;
        let store = crate::store::Store::open(&self.store).map_err(|error| {
            eprintln!("error: {error}");
            EXIT_USAGE
        })?;
        Ok((project, store))
    }
}

/// Reads and checks the rules for a command that runs them: any error is printed to standard
/// error and the command stops with its exit code (warnings are printed and tolerated).
pub fn checked_project(paths: &[std::path::PathBuf]) -> Result<crate::Project, u8> {
    use std::io::IsTerminal;
    let sources = crate::project::load(paths).map_err(|error| {
        eprintln!("error: {error}");
        EXIT_USAGE
    })?;
    let options = crate::check::CheckOptions {
        now: chrono::Utc::now(),
    };
    let project = crate::project::analyze(sources, &options);
    let style = crate::diagnostics::Style {
        color: use_color(std::io::stderr().is_terminal()),
        width: 100,
    };
    for diagnostic in project.diagnostics.iter().filter(|d| d.is_error()) {
        eprint!(
            "{}",
            crate::diagnostics::render(&project.sources, diagnostic, style)
        );
    }
    if project.errors() > 0 {
        eprintln!("error: the rules have errors; nothing was run");
        return Err(EXIT_ERRORS);
    }
    Ok(project)
}

/// "1 file", "2 files".
pub fn plural(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Whether to draw in colour: only on a terminal, and never when NO_COLOR is set.
pub fn use_color(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Parses `--now` values: RFC 3339 (`2026-03-01T10:00:00+08:00`) or `2026-03-01 10:00` in UTC.
pub fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    crate::lower::parse_datetime(text)
        .ok()
        .filter(|_| text.len() >= 10)
        .map(|v| crate::check::instant(&v, chrono_tz::Tz::UTC))
        .ok_or_else(|| {
            format!("`{text}` is not a time: write `2026-03-01T10:00:00Z` or `2026-03-01 10:00`")
        })
}
