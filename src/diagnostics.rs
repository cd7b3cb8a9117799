//! Diagnostics: what Nudge tells people about their rule files, and how it is printed.
//!
//! Every diagnostic has a stable code (`nudge::unknown-event`), a short lowercase message with the
//! user's text in backticks, a label on exactly the offending text, and help where it is useful.
//! Codes never change once released: scripts and editors match on them.

use std::fmt;

use serde::Serialize;

use crate::ast::{FileId, Span};
use crate::source::{SourceFile, SourceMap};

macro_rules! codes {
    ($($variant:ident => $name:literal, $severity:ident, $doc:literal;)*) => {
        /// The kinds of diagnostic, each with its stable code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable code without its `nudge::` namespace.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// One line for the README's table of codes.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    Syntax => "syntax", Error, "the text does not follow the language's grammar";
    TooDeep => "too-deep", Error, "an expression nests parentheses or `not` too deeply";
    InvalidUtf8 => "invalid-utf8", Error, "a rule file is not UTF-8 text";
    BadEscape => "bad-escape", Error, "a string has an unknown escape such as `\\q`";
    NumberTooLarge => "number-too-large", Error, "a count is too large to be meant";
    UnknownType => "unknown-type", Error, "a declaration names a type that does not exist";
    UnknownEvent => "unknown-event", Error, "an event is used but not declared";
    UnknownAttribute => "unknown-attribute", Error, "a customer attribute is used but not declared";
    UnknownProperty => "unknown-property", Error, "an event property is used but not declared";
    UnknownSegment => "unknown-segment", Error, "a segment is used but not defined";
    UnknownChannel => "unknown-channel", Error, "a channel is neither declared nor a built-in kind";
    UnknownChannelKind => "unknown-channel-kind", Error, "`kind` names no built-in channel kind";
    UnknownVariable => "unknown-variable", Error, "a `{{…}}` template names something that does not exist";
    BadTemplate => "bad-template", Error, "a `{{` in a message is not closed or is empty";
    NoTriggerEvent => "no-trigger-event", Error, "`{{event.…}}` in a campaign whose trigger has no event";
    TypeMismatch => "type-mismatch", Error, "a value of one type is used where another is needed";
    NotATime => "not-a-time", Error, "a time window is applied to something that is not a time";
    SegmentCycle => "segment-cycle", Error, "segments are defined in terms of each other";
    DuplicateName => "duplicate-name", Error, "two definitions share one name";
    DuplicateClause => "duplicate-clause", Error, "a campaign or policy states the same clause twice";
    ZeroDuration => "zero-duration", Error, "a duration is zero";
    DurationTooLong => "duration-too-long", Error, "a duration is longer than 100 years";
    WindowTooLong => "window-too-long", Error, "an `unless … within` window is longer than 30 days";
    EmptyWindow => "empty-window", Error, "a `between A and B` window ends before it starts";
    EndBeforeStart => "end-before-start", Error, "a campaign's `end` is not after its `start`";
    InvalidTimezone => "invalid-timezone", Error, "a time zone is not an IANA zone name";
    InvalidCron => "invalid-cron", Error, "a cron schedule cannot be read";
    InvalidTime => "invalid-time", Error, "a time of day or date does not exist (`25:00`, `2026-02-30`)";
    EmptyQuietHours => "empty-quiet-hours", Error, "quiet hours start and end at the same time";
    ZeroCount => "zero-count", Error, "a count or share is zero where that makes no sense (`pace 0`)";
    SplitTotal => "split-total", Error, "the shares of a `split` do not add up to 100%";
    MissingTrigger => "missing-trigger", Error, "a campaign has no `trigger`";
    MissingAction => "missing-action", Error, "a campaign has nothing to do (no `send`, tag or split)";
    FallbackWithoutSend => "fallback-without-send", Error, "a `fallback` does not follow a `send`";
    MissingAddress => "missing-address", Error, "a channel's address attribute is not declared";
    WrongContent => "wrong-content", Error, "a message's parts do not fit its channel's kind";
    MisplacedOption => "misplaced-option", Error, "`by employee` or `assign` is used on a channel that has no employee";
    Backfill => "backfill", Warning, "a campaign starts in the past and will catch up on past triggers";
    SmsTooLong => "sms-too-long", Warning, "an SMS is longer than 70 characters and will be split";
    TagTooLong => "tag-too-long", Warning, "a tag name is longer than WeCom's 16 characters";
    UnusedSegment => "unused-segment", Warning, "a segment is defined but used nowhere";
    NoAudience => "no-audience", Warning, "a campaign has no `audience`, so it targets every customer";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nudge::{}", self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A span in a file with a few words saying what is there.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub file: FileId,
    pub span: Span,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// Where the problem is; its text may be empty when the message says it all.
    pub primary: Label,
    /// Other places involved: the first definition of a duplicate, the links of a cycle.
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, file: FileId, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: Label {
                file,
                span,
                text: String::new(),
            },
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn label(mut self, text: impl Into<String>) -> Diagnostic {
        self.primary.text = text.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }

    pub fn also(mut self, file: FileId, span: Span, text: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            file,
            span,
            text: text.into(),
        });
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// Puts diagnostics in reading order: by file, then position, then code.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (a.primary.file, a.primary.span.start, a.code, &a.message).cmp(&(
            b.primary.file,
            b.primary.span.start,
            b.code,
            &b.message,
        ))
    });
}

/// "did you mean `page_view`?" when one of the candidates is close to what was written.
pub fn did_you_mean<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(written, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `written`, if it is close enough to be a likely typo.
pub fn closest<'a>(
    written: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let allowed = (written.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != written)
        .map(|c| (strsim::damerau_levenshtein(written, c), c))
        .filter(|(distance, _)| *distance <= allowed)
        .min()
        .map(|(_, c)| c)
}

// ───────────────────────── JSON ─────────────────────────

/// The document printed by `nudge check --format json` (pinned in LANGUAGE.md §9).
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub diagnostics: Vec<JsonDiagnostic<'a>>,
    pub errors: usize,
    pub warnings: usize,
}

#[derive(Serialize)]
pub struct JsonDiagnostic<'a> {
    pub file: &'a str,
    pub severity: Severity,
    pub code: String,
    pub message: &'a str,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub help: Option<&'a str>,
}

pub fn to_json<'a>(sources: &'a SourceMap, diagnostics: &'a [Diagnostic]) -> JsonReport<'a> {
    let items = diagnostics
        .iter()
        .map(|d| {
            let file = sources.get(d.primary.file);
            let (line, column) = file.line_col(d.primary.span.start);
            let (end_line, end_column) = file.line_col(d.primary.span.end);
            JsonDiagnostic {
                file: &file.path,
                severity: d.severity(),
                code: d.code.to_string(),
                message: &d.message,
                line,
                column,
                end_line,
                end_column,
                help: d.help.as_deref(),
            }
        })
        .collect();
    JsonReport {
        diagnostics: items,
        errors: diagnostics.iter().filter(|d| d.is_error()).count(),
        warnings: diagnostics.iter().filter(|d| !d.is_error()).count(),
    }
}

// ───────────────────────── human (miette) ─────────────────────────

/// How to draw diagnostics for people.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
    pub width: usize,
}

/// Renders one diagnostic as miette draws it.
pub fn render(sources: &SourceMap, diagnostic: &Diagnostic, style: Style) -> String {
    let mut theme = if style.color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    // Words, not only symbols: "error: unknown event `purchse`".
    theme.characters.error = "error:".into();
    theme.characters.warning = "warning:".into();
    theme.characters.advice = "note:".into();
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let report = Report::new(sources, diagnostic);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = handler.render_report(&mut out, &report);
    out
}

/// A diagnostic seen through miette's eyes. Labels in other files than the primary one become
/// related reports, since miette draws one source per report.
struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: NamedText<'a>,
    labels: Vec<&'a Label>,
    related: Vec<RelatedReport<'a>>,
}

impl<'a> Report<'a> {
    fn new(sources: &'a SourceMap, diagnostic: &'a Diagnostic) -> Report<'a> {
        let file = diagnostic.primary.file;
        let labels = diagnostic
            .secondary
            .iter()
            .filter(|l| l.file == file)
            .collect();
        let related = diagnostic
            .secondary
            .iter()
            .filter(|l| l.file != file)
            .map(|label| RelatedReport {
                label,
                source: NamedText(sources.get(label.file)),
            })
            .collect();
        Report {
            diagnostic,
            source: NamedText(sources.get(file)),
            labels,
            related,
        }
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

fn labeled_span(label: &Label, primary: bool) -> miette::LabeledSpan {
    let text = (!label.text.is_empty()).then(|| label.text.clone());
    let span = (label.span.start, label.span.end - label.span.start);
    if primary {
        miette::LabeledSpan::new_primary_with_span(text, span)
    } else {
        miette::LabeledSpan::new_with_span(text, span)
    }
}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let primary = std::iter::once(labeled_span(&self.diagnostic.primary, true));
        let others = self.labels.iter().map(|l| labeled_span(l, false));
        Some(Box::new(primary.chain(others)))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

/// A label in another file, drawn as advice under the main report.
struct RelatedReport<'a> {
    label: &'a Label,
    source: NamedText<'a>,
}

impl fmt::Debug for RelatedReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label.text)
    }
}

impl fmt::Display for RelatedReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label.text)
    }
}

impl std::error::Error for RelatedReport<'_> {}

impl miette::Diagnostic for RelatedReport<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(labeled_span(self.label, true))))
    }
}

/// A source file lent to miette with its path as the name.
struct NamedText<'a>(&'a SourceFile);

impl miette::SourceCode for NamedText<'_> {
    fn read_span<'b>(
        &'b self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'b> + 'b>, miette::MietteError> {
        let inner =
            self.0
                .text
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        // miette counts columns in bytes; people (and our JSON) count characters.
        let (_, column) = self.0.line_col(inner.span().offset());
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.0.path.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column - 1,
            inner.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_when_close() {
        let events = ["purchase", "page_view", "share"];
        assert_eq!(closest("purchse", events), Some("purchase"));
        assert_eq!(closest("pageview", events), Some("page_view"));
        assert_eq!(closest("checkout", events), None);
        assert_eq!(closest("x", ["y"]), Some("y"));
    }

    #[test]
    fn codes_are_unique_kebab_case() {
        let mut names: Vec<_> = Code::ALL.iter().map(|c| c.name()).collect();
        assert!(names.iter().all(|n| n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
    }
}
