//! Helpers shared by the integration tests. Each test file compiles its own copy of this
//! module and uses only some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `nudge` binary of this build, with plain output of a fixed width (no colours, and
/// diagnostics wrapped at 100 columns whatever the terminal).
pub fn nudge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A fresh directory for one test, removed with everything in it when the test is done (a
/// test run leaves nothing behind in the system's temporary directory). Reads as a [`Path`].
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new empty directory whose name starts with `nudge-{name}-`, for finding it while the
    /// test runs.
    pub fn new(name: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nudge-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}
