//! A project: the set of rule files checked together, with one namespace across files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::ast::{FileId, Module, Span};
use crate::check::{self, CheckOptions, Schema};
use crate::diagnostics::{self, Code, Diagnostic};
use crate::source::SourceMap;

/// Problems that stop a project from being read at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("`{0}` does not exist")]
    NotFound(PathBuf),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no `.nudge` files found in {0}")]
    NoFiles(String),
}

/// The files of a project as read from disk, before analysis.
#[derive(Default)]
pub struct Sources {
    pub map: SourceMap,
    /// Files that are not UTF-8: reported, not parsed.
    unreadable: HashSet<FileId>,
    diagnostics: Vec<Diagnostic>,
}

impl Sources {
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> FileId {
        self.map.add(path, text)
    }

    /// Adds a file from raw bytes; bytes that are not UTF-8 are reported at the first bad byte.
    pub fn add_bytes(&mut self, path: impl Into<String>, bytes: Vec<u8>) -> FileId {
        match String::from_utf8(bytes) {
            Ok(text) => self.add(path, text),
            Err(error) => {
                let valid_up_to = error.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
                let path = path.into();
                let id = self.add(path.clone(), text);
                let bad = Span::new(valid_up_to, valid_up_to + '\u{FFFD}'.len_utf8());
                self.unreadable.insert(id);
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidUtf8,
                        id,
                        bad,
                        format!("`{path}` is not UTF-8 text"),
                    )
                    .label("this byte is not UTF-8")
                    .help("save the file as UTF-8"),
                );
                id
            }
        }
    }
}

/// Reads the given files and directories (recursing into `*.nudge`, skipping hidden folders and
/// `target`), in a stable order.
pub fn load(paths: &[PathBuf]) -> Result<Sources, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.exists() {
            return Err(LoadError::NotFound(path.clone()));
        }
        collect(path, &mut files)?;
    }
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
        return Err(LoadError::NoFiles(shown.join(", ")));
    }
    let mut sources = Sources::default();
    let mut seen = HashSet::new();
    for file in files {
        if !seen.insert(file.clone()) {
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        sources.add_bytes(file.display().to_string(), bytes);
    }
    Ok(sources)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    if path.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if entry.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect(&entry, files)?;
            }
        } else if name.ends_with(".nudge") {
            files.push(entry);
        }
    }
    Ok(())
}

/// A project after analysis.
pub struct Project {
    pub sources: SourceMap,
    pub modules: Vec<(FileId, Module)>,
    /// Every diagnostic of every file, in reading order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Project {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// The declarations, for the interpreter.
    pub fn schema(&self) -> Schema {
        check::schema(&self.modules)
    }

    /// Every campaign of every file, in file order.
    pub fn campaigns(&self) -> impl Iterator<Item = &crate::ast::Campaign> {
        self.items().filter_map(|item| match item {
            crate::ast::Item::Campaign(c) => Some(&**c),
            _ => None,
        })
    }

    /// Every tag rule (`tag "X" when …`) of every file, in file order.
    pub fn tag_rules(&self) -> impl Iterator<Item = &crate::ast::TagRule> {
        self.items().filter_map(|item| match item {
            crate::ast::Item::TagRule(rule) => Some(rule),
            _ => None,
        })
    }

    fn items(&self) -> impl Iterator<Item = &crate::ast::Item> {
        self.modules.iter().flat_map(|(_, m)| &m.items)
    }
}

/// Parses, lowers and checks every file of a project.
pub fn analyze(sources: Sources, options: &CheckOptions) -> Project {
    let Sources {
        map,
        unreadable,
        mut diagnostics,
    } = sources;
    let mut modules = Vec::new();
    for (id, file) in map.iter() {
        if unreadable.contains(&id) {
            continue;
        }
        let (module, file_diagnostics) = crate::parse(id, &file.text);
        diagnostics.extend(file_diagnostics);
        if let Some(module) = module {
            modules.push((id, module));
        }
    }
    diagnostics.extend(check::check(&modules, options));
    diagnostics::sort(&mut diagnostics);
    Project {
        sources: map,
        modules,
        diagnostics,
    }
}
