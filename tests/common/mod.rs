//! Helpers shared by the integration tests.

use std::path::Path;

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
