//! `nudge estimate [PATHS] --store S [--campaign NAME] [--at T] [--format table|json]`.

use std::io::Write;

use chrono::{DateTime, Utc};

use super::{EXIT_ERRORS, EXIT_OK, EXIT_USAGE};
use crate::estimate::{estimate_store, AudiencePlan, Estimate};
use crate::eval::Compiler;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::RulesAndStore,
    /// Only this campaign
    #[arg(long)]
    campaign: Option<String>,
    /// Count as of this instant (default: the clock)
    #[arg(long, value_parser = super::parse_instant)]
    at: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> u8 {
    let (project, mut store) = match args.target.open() {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let schema = project.schema();
    let compiler = Compiler::new(&schema, &project.modules);
    let plans: Vec<AudiencePlan> = project
        .campaigns()
        .filter(|c| args.campaign.as_ref().is_none_or(|n| *n == c.name.value))
        .map(|c| AudiencePlan::new(&compiler, c, schema.campaign_zone(c)))
        .collect();
    if let (Some(name), true) = (&args.campaign, plans.is_empty()) {
        eprintln!("error: no campaign is named `{name}`");
        return EXIT_ERRORS;
    }
    let at = args.at.unwrap_or_else(Utc::now).timestamp_millis();
    let result = store.scratch(|tx| estimate_store(tx, &plans, at));
    let results = match result {
        Ok(results) => results,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&results).expect("estimates serialize") + "\n",
        Format::Table => table(&results),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    EXIT_OK
}

fn table(results: &[Estimate]) -> String {
    let mut out = String::new();
    for r in results {
        out.push_str(&format!(
            "campaign `{}`: {} of {} customers\n",
            r.campaign, r.audience, r.customers
        ));
        for c in &r.clauses {
            out.push_str(&format!(
                "  {:>9}  {:>9} alone   {}\n",
                c.cumulative, c.alone, c.clause
            ));
        }
        if let Some(e) = &r.exclude {
            out.push_str(&format!(
                "  {:>9}  {:>9} alone   exclude {}\n",
                -(e.cumulative as i64),
                e.alone,
                e.clause
            ));
        }
    }
    out
}
