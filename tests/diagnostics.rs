//! The invalid-input corpus: `tests/invalid/<code>.nudge` is checked together with
//! `tests/fixtures/schema.nudge` and must raise the diagnostic `nudge::<code>`. Its rendering
//! (no colour, fixed width) and its JSON are pinned by insta snapshots.

use std::path::Path;

use chrono::{DateTime, Utc};
use nudge::check::CheckOptions;
use nudge::diagnostics::{Code, Style};
use nudge::project::{self, Sources};

const STYLE: Style = Style {
    color: false,
    width: 100,
};

fn now() -> DateTime<Utc> {
    "2026-11-21T00:00:00Z".parse().unwrap()
}

fn check_case(path: &Path) -> nudge::Project {
    let mut sources = Sources::default();
    let schema = std::fs::read_to_string("tests/fixtures/schema.nudge").unwrap();
    sources.add("schema.nudge", schema);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    sources.add_bytes(name, std::fs::read(path).unwrap());
    project::analyze(sources, &CheckOptions { now: now() })
}

#[test]
fn every_invalid_file_raises_its_code() {
    insta::glob!("invalid/*.nudge", |path| {
        let code_name = path.file_stem().unwrap().to_string_lossy();
        let code_name = code_name.split('.').next().unwrap();
        let project = check_case(path);
        assert!(
            project
                .diagnostics
                .iter()
                .any(|d| d.code.name() == code_name),
            "{} should raise nudge::{code_name}, got: {:#?}",
            path.display(),
            project.diagnostics
        );
        let human = nudge::cli::check::human(&project, STYLE);
        insta::assert_snapshot!("human", human);
        insta::assert_snapshot!("json", nudge::cli::check::json(&project));
    });
}

#[test]
fn every_code_has_an_invalid_example() {
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.name())
        .filter(|name| {
            let found = std::fs::read_dir("tests/invalid").unwrap().any(|e| {
                let file = e.unwrap().file_name().to_string_lossy().into_owned();
                file.split('.').next() == Some(name)
            });
            !found
        })
        .collect();
    assert!(
        missing.is_empty(),
        "no tests/invalid/<code>.nudge for: {missing:?}"
    );
}

#[test]
fn the_shared_schema_checks_clean() {
    let mut sources = Sources::default();
    sources.add(
        "schema.nudge",
        std::fs::read_to_string("tests/fixtures/schema.nudge").unwrap(),
    );
    let project = project::analyze(sources, &CheckOptions { now: now() });
    assert!(project.diagnostics.is_empty(), "{:#?}", project.diagnostics);
}
