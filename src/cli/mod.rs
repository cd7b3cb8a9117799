//! The command line: one file per subcommand.

pub mod check;

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
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => check::run(args),
    };
    ExitCode::from(code)
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
