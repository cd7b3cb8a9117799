//! `nudge explain --campaign NAME --customer ID [PATHS] --store S [--at T] [--format text|json]`:
//! why a customer did or did not get a campaign.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{plural, EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::explain::{
    AtFrom, Detail, ExplainError, Explanation, HistoryEntry, Node, OccurrenceReport, TriggerReport,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::RulesAndStore,
    /// The campaign, by name
    #[arg(long)]
    campaign: String,
    /// The customer, by id
    #[arg(long)]
    customer: String,
    /// Evaluate the audience at this instant (default: the last run's `now`, else the clock)
    #[arg(long, value_parser = super::parse_instant)]
    at: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> u8 {
    // Opening creates a store; explaining from one that does not exist is a mistyped path.
    if !args.target.store.exists() {
        eprintln!(
            "error: the store `{}` does not exist",
            args.target.store.display()
        );
        return EXIT_USAGE;
    }
    let (project, mut store) = match args.target.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let explained = crate::explain::explain(
        &project,
        &mut store,
        &args.campaign,
        &args.customer,
        args.at,
    );
    let explanation = match explained {
        Ok(explanation) => explanation,
        Err(error) => return report(&error, &args),
    };
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&explanation).expect("explanations serialize") + "\n"
        }
        Format::Text => text(&explanation),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    EXIT_OK
}

/// Prints why nothing could be explained, and returns the exit code.
fn report(error: &ExplainError, args: &Args) -> u8 {
    match error {
        ExplainError::UnknownCampaign { help, .. } => {
            eprintln!("error: {error}");
            if let Some(help) = help {
                eprintln!("help: {help}");
            }
            EXIT_ERRORS
        }
        ExplainError::UnknownCustomer(_) => {
            eprintln!(
                "error: {error} in the store `{}`",
                args.target.store.display()
            );
            EXIT_ERRORS
        }
        ExplainError::Store(_) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

/// The explanation for people: the clause trees, the trigger's occurrences, the history.
pub fn text(e: &Explanation) -> String {
    let at_from = match e.at_from {
        AtFrom::Given => "",
        AtFrom::LastRun => " (the last run's now)",
        AtFrom::Clock => " (the clock: the store has never been run)",
    };
    let mut out = format!(
        "campaign `{}`, customer `{}`, at {}{at_from}\n",
        e.campaign, e.customer, e.at
    );
    if e.status != "active" {
        out.push_str(&format!(
            "status {}: the campaign fires nothing\n",
            e.status
        ));
    }
    out.push('\n');
    match &e.audience {
        Some(node) => tree(&mut out, "audience", node),
        None => out.push_str("audience: none (every customer)\n"),
    }
    match &e.exclude {
        Some(node) => tree(&mut out, "exclude", node),
        None => out.push_str("exclude: none\n"),
    }
    out.push_str(&verdict(e));
    if let Some(trigger) = &e.trigger {
        out.push('\n');
        out.push_str(&occurrences(trigger, &e.at));
    }
    out.push('\n');
    out.push_str(&history(&e.history));
    out
}

fn verdict(e: &Explanation) -> String {
    let audience_holds = e.audience.as_ref().is_none_or(|a| a.holds);
    let what = if e.in_audience {
        "in the audience and not excluded"
    } else if !audience_holds {
        "not in the audience"
    } else {
        "excluded"
    };
    format!("→ {what} at {}\n", e.at)
}

/// `label`, then the clause tree under it.
fn tree(out: &mut String, label: &str, root: &Node) {
    out.push_str(label);
    out.push('\n');
    branch(out, root, "", true);
}

fn branch(out: &mut String, node: &Node, indent: &str, last: bool) {
    let (glyph, more) = if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    out.push_str(&format!("{indent}{glyph}{}\n", clause(node)));
    let children = node.children();
    let indent = format!("{indent}{more}");
    for (i, child) in children.iter().enumerate() {
        branch(out, child, &indent, i + 1 == children.len());
    }
}

/// One clause: `and: true`, `segment buyers: false`, `did buy → 1 time: false`.
fn clause(node: &Node) -> String {
    let label = match &node.detail {
        Detail::And { .. } => "and".to_string(),
        Detail::Or { .. } => "or".to_string(),
        Detail::Not { .. } => "not".to_string(),
        Detail::Segment { name, .. } => format!("segment {name}"),
        Detail::HasTag { has } => format!("{} → {}", node.text, if *has { "yes" } else { "no" }),
        Detail::Did { count } => format!("{} → {}", node.text, plural(*count, "time")),
        Detail::Attribute { value, .. } => format!("{} → {}", node.text, seen(value)),
        Detail::Constant => node.text.clone(),
    };
    format!("{label}: {}", node.holds)
}

/// A stored attribute value as the language writes it.
fn seen(value: &Json) -> String {
    match value {
        Json::Null => "not set".to_string(),
        Json::String(s) => crate::print::quote(s),
        other => other.to_string(),
    }
}

fn occurrences(trigger: &TriggerReport, at: &str) -> String {
    let mut out = format!("trigger {}\n", trigger.text);
    match (&trigger.begins, &trigger.handled_until) {
        (None, _) => {
            out.push_str("  not begun: no run has seen the campaign, and it has no `start`\n")
        }
        (Some(begins), Some(until)) => out.push_str(&format!(
            "  begins {begins}; runs have handled up to {until}\n"
        )),
        (Some(begins), None) => {
            out.push_str(&format!("  begins {begins}; no run has handled it yet\n"))
        }
    }
    if trigger.earlier > 0 {
        out.push_str(&format!(
            "  … {} not listed\n",
            plural(trigger.earlier as u64, "earlier occurrence")
        ));
    }
    if trigger.begins.is_some() && trigger.occurrences.is_empty() {
        out.push_str(&format!("  no occurrence for this customer up to {at}\n"));
    }
    for o in &trigger.occurrences {
        out.push_str(&format!(
            "  {}  {} → {}\n",
            o.fired_at,
            fired_by(o),
            status(o)
        ));
    }
    out
}

/// `order (event:3)`, `page_view at … (event:3)` when fired later (`unless`), or `scheduled`.
fn fired_by(o: &OccurrenceReport) -> String {
    match &o.event {
        Some(e) if e.at == o.fired_at => format!("{} ({})", e.name, o.key),
        Some(e) => format!("{} at {} ({})", e.name, e.at, o.key),
        None => "scheduled".to_string(),
    }
}

/// What became of an occurrence: its recorded outcomes, else why there are none.
fn status(o: &OccurrenceReport) -> String {
    if !o.outcomes.is_empty() {
        return o.outcomes.join(", ");
    }
    let audience = if !o.audience {
        "not in the audience then"
    } else if o.excluded {
        "excluded then"
    } else {
        "in the audience then"
    };
    if !o.handled {
        format!("not handled yet: no run has reached it ({audience})")
    } else if o.audience && !o.excluded {
        format!("{audience}; nothing recorded")
    } else {
        audience.to_string()
    }
}

fn history(entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return "history: nothing recorded\n".to_string();
    }
    let mut out = format!("history: {}\n", plural(entries.len() as u64, "outcome"));
    for h in entries {
        let mut line = format!("  {}  {}", h.due_at, h.outcome);
        if let Some(channel) = &h.channel {
            line.push_str(&format!(" on {channel}"));
        }
        if let Some(address) = &h.address {
            line.push_str(&format!(" to {address}"));
        }
        if let Some(variant) = &h.variant {
            line.push_str(&format!(", variant {}", crate::print::quote(variant)));
        }
        // The occurrence's key is in the JSON; people match entries by their fire time.
        out.push_str(&format!("{line} (fired {})\n", h.fired_at));
        if let Some(reason) = &h.reason {
            out.push_str(&format!("    {reason}\n"));
        }
    }
    out
}
