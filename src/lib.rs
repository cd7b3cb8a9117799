//! Nudge: a campaign language for marketers.
//!
//! The pipeline has one module per stage:
//! **parse** (text → pest pairs) → **lower** (pairs → [`ast`] with spans) → **check** (names,
//! types, lints → [`diagnostics`]) → run (the interpreter over the event store).
//! [`parse()`] and [`analyze`] are the entry points the CLI and the editor integration share.

pub mod ast;
pub mod check;
pub mod cli;
pub mod deliver;
pub mod demo;
pub mod diagnostics;
pub mod estimate;
pub mod eval;
pub mod explain;
pub mod lower;
pub mod parse;
pub mod print;
pub mod project;
pub mod run;
pub mod schedule;
pub mod source;
pub mod store;
pub mod time;
pub mod trigger;

use ast::{FileId, Module};
use diagnostics::Diagnostic;

/// Parses and lowers one file. The module holds every item that parsed; the diagnostics are the
/// file's syntax and literal errors. `None` only when nothing in the file could be read.
pub fn parse(file: FileId, text: &str) -> (Option<Module>, Vec<Diagnostic>) {
    let parse::ParsedFile {
        items,
        unparsed,
        mut diagnostics,
    } = parse::parse_items(file, text);
    let nothing_parsed = items.is_empty() && unparsed.is_empty() && !diagnostics.is_empty();
    let (mut module, lower_diagnostics) = lower::lower_items(file, items);
    module.unparsed = unparsed;
    diagnostics.extend(lower_diagnostics);
    ((!nothing_parsed).then_some(module), diagnostics)
}

pub use project::{analyze, Project};
