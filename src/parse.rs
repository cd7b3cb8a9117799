//! Stage 1 — parse: text → pest pairs, one top-level item at a time.
//!
//! Parsing item by item lets one run report a syntax error in every broken item of a file: after
//! an error, parsing resumes at the next line that starts (in column 1) with a top-level keyword.
//! Syntax errors are described in words for people: rule names never leak out.

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

use crate::ast::{FileId, Span};
use crate::diagnostics::{Code, Diagnostic};

#[derive(pest_derive::Parser)]
#[grammar = "grammar/nudge.pest"]
pub struct NudgeParser;

/// How deeply parentheses and `not`s may nest. Real campaigns use a handful of levels; the limit
/// keeps every recursive stage (pest, the Pratt parser, lowering, checking) far from the stack's end.
pub const MAX_NESTING: usize = 100;

/// One top-level item, with the byte offset its pair's positions are relative to.
pub struct ParsedItem<'i> {
    pub pair: Pair<'i, Rule>,
    pub base: usize,
}

/// A file's parsed items, the keyword and name of each item that did not parse, and the errors.
pub struct ParsedFile<'i> {
    pub items: Vec<ParsedItem<'i>>,
    pub unparsed: Vec<(String, Option<String>)>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a whole file into its top-level items, with a diagnostic for every syntax error.
pub fn parse_items(file: FileId, text: &str) -> ParsedFile<'_> {
    let mut parsed = ParsedFile {
        items: Vec::new(),
        unparsed: Vec::new(),
        diagnostics: Vec::new(),
    };
    if let Some(diagnostic) = check_nesting(file, text) {
        parsed.diagnostics.push(diagnostic);
        return parsed;
    }
    let ParsedFile {
        items,
        unparsed,
        diagnostics,
    } = &mut parsed;
    let mut offset = 0;
    loop {
        // Checked by hand: a failed pest parse builds an error with line scans, once per item.
        offset = skip_trivia(text, offset);
        if offset >= text.len() {
            break;
        }
        let rest = &text[offset..];
        match NudgeParser::parse(Rule::item_at, rest) {
            Ok(mut pairs) => {
                let pair = pairs.next().expect("item_at yields one item");
                let end = offset + pair.as_span().end();
                items.push(ParsedItem { pair, base: offset });
                offset = end;
            }
            Err(error) => {
                unparsed.extend(item_name(rest));
                let diagnostic = describe_error(file, text, offset, &error);
                let position = diagnostic.primary.span.start;
                diagnostics.push(diagnostic);
                // A `campaign` in column 1 where a `}` was expected starts the next item.
                let resume = if position > offset && starts_item(text, position) {
                    Some(position)
                } else {
                    next_item_start(text, position.max(offset + 1))
                };
                match resume {
                    Some(next) => offset = next,
                    None => break,
                }
            }
        }
    }
    parsed
}

/// The keyword and name at the start of an item that failed to parse.
fn item_name(text: &str) -> Option<(String, Option<String>)> {
    let mut words = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace);
    let keyword = words.next()?;
    if !ITEM_KEYWORDS.contains(&keyword) {
        return None;
    }
    let name = words.next().map(|w| {
        w.trim_matches('"')
            .split(|c: char| !is_word_char(c) && c != '-')
            .next()
            .unwrap_or("")
            .to_string()
    });
    Some((keyword.to_string(), name.filter(|n| !n.is_empty())))
}

/// The offset of the first character after `offset` that is not whitespace or a comment.
fn skip_trivia(text: &str, mut offset: usize) -> usize {
    let bytes = text.as_bytes();
    while offset < bytes.len() {
        match bytes[offset] {
            b' ' | b'\t' | b'\r' | b'\n' => offset += 1,
            b'#' => offset = text[offset..].find('\n').map_or(text.len(), |i| offset + i),
            _ if text[offset..].starts_with('\u{FEFF}') => offset += '\u{FEFF}'.len_utf8(),
            _ => break,
        }
    }
    offset
}

fn error_position(error: &pest::error::Error<Rule>) -> usize {
    match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((start, _)) => start,
    }
}

const ITEM_KEYWORDS: [&str; 7] = [
    "customer", "event", "channel", "segment", "campaign", "tag", "policy",
];

/// The start of the first line after `from` that begins with a top-level keyword.
fn next_item_start(text: &str, from: usize) -> Option<usize> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut line_start = text[from..].find('\n')? + from + 1;
    loop {
        if starts_item(text, line_start) {
            return Some(line_start);
        }
        line_start += text[line_start..].find('\n')? + 1;
    }
}

/// Whether a top-level keyword stands at `at`, in column 1.
fn starts_item(text: &str, at: usize) -> bool {
    let line = &text[at..];
    let column_one = at == 0 || text.as_bytes()[at - 1] == b'\n';
    column_one
        && ITEM_KEYWORDS
            .iter()
            .any(|k| line.starts_with(k) && !line[k.len()..].starts_with(is_word_char))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Finds nesting deeper than [`MAX_NESTING`] with a cheap lexical scan, before any recursive stage
/// sees the text. Counts open parentheses plus runs of `not` (each `not` is one level of the
/// Pratt parser's recursion).
fn check_nesting(file: FileId, text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut open: Vec<usize> = Vec::new();
    let (mut base, mut run) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let token_start = i;
        i += 1;
        match b {
            b'"' => {
                run = 0;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                open.push(base);
                base += run + 1;
                run = 0;
            }
            b')' => {
                base = open.pop().unwrap_or(0);
                run = 0;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                run = if &bytes[token_start..i] == b"not" {
                    run + 1
                } else {
                    0
                };
            }
            _ => run = 0,
        }
        if base + run > MAX_NESTING {
            let end = text[..i.min(text.len())].len();
            return Some(
                Diagnostic::new(
                    Code::TooDeep,
                    file,
                    Span::new(token_start, end.max(token_start + 1).min(text.len())),
                    format!("expression nested more than {MAX_NESTING} levels deep"),
                )
                .label("nested too deeply here")
                .help("split the condition into named segments: `segment a = …`"),
            );
        }
    }
    None
}

// ───────────────────────── syntax errors for people ─────────────────────────

fn describe_error(
    file: FileId,
    text: &str,
    base: usize,
    error: &pest::error::Error<Rule>,
) -> Diagnostic {
    let rule_position = base + error_position(error);
    let positives = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    // Literal tokens such as `{` are not rules, so pest's own position stops at the last rule
    // that failed; the detailed attempts know when the parser got further on punctuation
    // (but not when it only got further inside one token, as in `18岁`).
    let (punctuation_position, punctuation) = expected_punctuation(&text[base..]);
    let punctuation_position = base + punctuation_position;
    let (_, token_at_rule) = found_token(text, rule_position);
    let further = punctuation_position >= token_at_rule.end.max(rule_position + 1);
    let (position, mut expected) = if further && !punctuation.is_empty() {
        (punctuation_position, punctuation)
    } else {
        let mut expected = expected_phrases(&positives);
        if punctuation_position == rule_position {
            expected.extend(punctuation);
        }
        (rule_position, expected)
    };
    expected = order_phrases(expected);
    name_what_is_expected(&mut expected, previous_word(text, position));

    let (found, found_span) = found_token(text, position);
    let token = &text[found_span.start..found_span.end];
    if positives.contains(&Rule::string_close) && position == rule_position {
        return unclosed_string(file, text, position);
    }
    if expected.iter().any(|e| e == "`}`") && starts_item(text, found_span.start) {
        expected = vec!["`}`".to_string()];
    }
    if token == "=" && positives.contains(&Rule::cmp_op) {
        expected = vec!["a comparison such as `==`".to_string()];
    }
    let message = if expected.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}, found {found}", join_or(&expected))
    };
    let help = syntax_help(text, found_span, &positives, &expected);
    Diagnostic::new(Code::Syntax, file, found_span, message)
        .label(label_for(&expected))
        .maybe_help(help)
}

fn unclosed_string(file: FileId, text: &str, position: usize) -> Diagnostic {
    let line_start = text[..position].rfind('\n').map_or(0, |i| i + 1);
    let open = text[line_start..position]
        .char_indices()
        .rev()
        .find(|(i, c)| *c == '"' && !text[line_start..line_start + i].ends_with('\\'))
        .map(|(i, _)| line_start + i)
        .unwrap_or(position);
    Diagnostic::new(
        Code::Syntax,
        file,
        Span::new(open, open + 1),
        "this text is not closed",
    )
    .label("opened here")
    .help("end it with `\"` on the same line; write a line break as `\\n`")
}

/// The word just before `position`, skipping whitespace.
fn previous_word(text: &str, position: usize) -> &str {
    let before = text[..position].trim_end();
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !is_word_char(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &before[start..]
}

/// "a name" says more as "a channel such as `sms`" after `send`.
fn name_what_is_expected(expected: &mut [String], previous: &str) {
    let specific = match previous {
        "send" | "fallback" => "a channel such as `sms` or `email`",
        "on" | "did" | "unless" | "not" | "event" => "an event name",
        "segment" => "a segment name",
        "channel" => "a channel name",
        _ => return,
    };
    for phrase in expected.iter_mut().filter(|p| *p == "a name") {
        *phrase = specific.to_string();
    }
}

/// Literal punctuation the parser wanted, and where: pest reports these only with error detail
/// on, which slows parsing, so only a failing item is parsed a second time with it.
fn expected_punctuation(item_text: &str) -> (usize, Vec<String>) {
    pest::set_error_detail(true);
    let result = NudgeParser::parse(Rule::item_at, item_text);
    pest::set_error_detail(false);
    let attempts = result.err().and_then(|e| e.parse_attempts());
    let Some(attempts) = attempts else {
        return (0, Vec::new());
    };
    let tokens = attempts
        .expected_tokens()
        .into_iter()
        .map(|token| token.to_string())
        .filter(|token| is_punctuation(token))
        .map(|token| format!("`{token}`"))
        .collect();
    (attempts.max_position, tokens)
}

fn is_punctuation(token: &str) -> bool {
    matches!(
        token,
        "{" | "}" | "(" | ")" | "[" | "]" | ":" | "," | ";" | "=" | "." | "?"
    )
}

/// Local expectations first (what could continue the current clause), then the broad ones.
fn order_phrases(mut phrases: Vec<String>) -> Vec<String> {
    dedup_keep_order(&mut phrases);
    let broad = |p: &String| p.starts_with("a campaign clause") || p.starts_with("a declaration");
    let (last, mut first): (Vec<String>, Vec<String>) = phrases.into_iter().partition(broad);
    first.extend(last);
    first
}

/// The token at `position`, in backticks, and its span.
fn found_token(text: &str, position: usize) -> (String, Span) {
    let rest = &text[position.min(text.len())..];
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_string(), Span::new(text.len(), text.len()));
    };
    let len = if first == '"' {
        rest[1..].find(['"', '\n']).map_or(rest.len(), |i| {
            i + 1 + usize::from(rest.as_bytes()[i + 1] == b'"')
        })
    } else if first == '\n' || first == '\r' {
        return ("end of line".to_string(), Span::new(position, position + 1));
    } else if is_word_char(first) {
        rest.find(|c: char| !(is_word_char(c) || c == ':' || c == '%' || c == '.'))
            .unwrap_or(rest.len())
    } else {
        let punct = |c: char| "=!<>".contains(c);
        if punct(first) {
            rest.find(|c: char| !punct(c)).unwrap_or(rest.len())
        } else {
            first.len_utf8()
        }
    };
    let token = &rest[..len];
    (format!("`{token}`"), Span::new(position, position + len))
}

fn label_for(expected: &[String]) -> String {
    match expected {
        [one] => format!("expected {one} here"),
        _ => "unexpected here".to_string(),
    }
}

fn syntax_help(text: &str, found: Span, positives: &[Rule], expected: &[String]) -> Option<String> {
    let token = &text[found.start..found.end];
    let first = token.chars().next()?;
    if token == "=" {
        return Some("to compare, write `==`".to_string());
    }
    if "'‘’“”「」".contains(first) {
        return Some("write text in straight double quotes: `\"…\"`".to_string());
    }
    if is_reserved(token)
        && (positives.contains(&Rule::ident) || expected.iter().any(|e| e.contains("name")))
    {
        return Some(format!(
            "`{token}` is a reserved word of the language; choose another name"
        ));
    }
    let digits = token.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits < token.chars().count() && !token.contains([':', '%', '.']) {
        return Some(format!(
            "numbers are written without units: `{}`; durations use `s`, `m`, `h`, `d` or `w`",
            &token[..digits]
        ));
    }
    if let Some(keyword) =
        crate::diagnostics::closest(token, expected_keywords(positives).iter().copied())
    {
        return Some(format!("did you mean `{keyword}`?"));
    }
    if positives.contains(&Rule::string) && is_word_char(first) {
        return Some(format!("put text in double quotes: `\"{token}\"`"));
    }
    if expected.iter().any(|e| e == "`}`") && starts_item(text, found.start) {
        return Some("is a `}` missing before this line?".to_string());
    }
    None
}

/// The keywords the parser would have accepted, including those of summarised groups.
fn expected_keywords(positives: &[Rule]) -> Vec<&'static str> {
    let mut rules: Vec<Rule> = positives.to_vec();
    for (_, markers) in GROUPS {
        if markers.iter().all(|m| positives.contains(m)) {
            rules.extend_from_slice(group_members(markers));
        }
    }
    rules
        .into_iter()
        .filter_map(|r| {
            KEYWORDS
                .iter()
                .find(|(rule, _)| *rule == r)
                .map(|(_, word)| *word)
        })
        .collect()
}

const KEYWORDS: &[(Rule, &str)] = &[
    (Rule::kw_customer, "customer"),
    (Rule::kw_event, "event"),
    (Rule::kw_channel, "channel"),
    (Rule::kw_segment, "segment"),
    (Rule::kw_campaign, "campaign"),
    (Rule::kw_tag, "tag"),
    (Rule::kw_policy, "policy"),
    (Rule::kw_status, "status"),
    (Rule::kw_timezone, "timezone"),
    (Rule::kw_start, "start"),
    (Rule::kw_end, "end"),
    (Rule::kw_audience, "audience"),
    (Rule::kw_exclude, "exclude"),
    (Rule::kw_trigger, "trigger"),
    (Rule::kw_wait, "wait"),
    (Rule::kw_quiet, "quiet"),
    (Rule::kw_pace, "pace"),
    (Rule::kw_cap, "cap"),
    (Rule::kw_rate, "rate"),
    (Rule::kw_send, "send"),
    (Rule::kw_fallback, "fallback"),
    (Rule::kw_add, "add"),
    (Rule::kw_remove, "remove"),
    (Rule::kw_split, "split"),
    (Rule::kw_within, "within"),
    (Rule::kw_where, "where"),
    (Rule::kw_unless, "unless"),
    (Rule::kw_between, "between"),
    (Rule::kw_since, "since"),
    (Rule::kw_contains, "contains"),
    (Rule::kw_every, "every"),
    (Rule::kw_after, "after"),
    (Rule::kw_until, "until"),
];

fn is_reserved(word: &str) -> bool {
    NudgeParser::parse(Rule::ident, word).is_err()
        && NudgeParser::parse(Rule::word, word)
            .is_ok_and(|mut p| p.next().is_some_and(|w| w.as_str() == word))
}

/// Groups of alternatives that read better summarised.
const GROUPS: &[(&str, &[Rule])] = &[
    (
        "a declaration, `segment`, `campaign`, `tag` rule or `policy`",
        &[
            Rule::kw_customer,
            Rule::kw_campaign,
            Rule::kw_segment,
            Rule::kw_policy,
        ],
    ),
    (
        "a campaign clause such as `audience`, `trigger` or `send`",
        &[
            Rule::kw_audience,
            Rule::kw_trigger,
            Rule::kw_send,
            Rule::kw_wait,
        ],
    ),
    (
        "a condition such as `has tag \"…\"`, `did EVENT` or `customer.age >= 18`",
        &[Rule::kw_has, Rule::kw_did],
    ),
    (
        "a test such as `== \"x\"`, `in […]`, `is set` or `within last 7d`",
        &[Rule::cmp_op, Rule::kw_in, Rule::kw_is, Rule::kw_within],
    ),
    (
        "a value such as `\"text\"`, `42`, `30m` or `2026-03-01`",
        &[Rule::datetime, Rule::number, Rule::string, Rule::duration],
    ),
];

/// Which rules each group stands for (everything that may appear alongside its markers).
fn group_members(markers: &[Rule]) -> &'static [Rule] {
    match markers[0] {
        Rule::kw_customer => &[
            Rule::kw_customer,
            Rule::kw_event,
            Rule::kw_channel,
            Rule::kw_segment,
            Rule::kw_campaign,
            Rule::kw_tag,
            Rule::kw_policy,
        ],
        Rule::kw_audience => &[
            Rule::kw_status,
            Rule::kw_timezone,
            Rule::kw_start,
            Rule::kw_end,
            Rule::kw_audience,
            Rule::kw_exclude,
            Rule::kw_trigger,
            Rule::kw_wait,
            Rule::kw_quiet,
            Rule::kw_pace,
            Rule::kw_cap,
            Rule::kw_rate,
            Rule::kw_send,
            Rule::kw_fallback,
            Rule::shorthand_channel,
            Rule::kw_add,
            Rule::kw_remove,
            Rule::kw_split,
        ],
        Rule::kw_has => &[
            Rule::kw_not,
            Rule::paren,
            Rule::has_tag,
            Rule::kw_has,
            Rule::did,
            Rule::kw_did,
            Rule::bool_lit,
            Rule::subject_test,
            Rule::attr_path,
            Rule::ident,
            Rule::kw_customer,
        ],
        Rule::cmp_op => &[
            Rule::cmp_op,
            Rule::kw_in,
            Rule::kw_not,
            Rule::kw_contains,
            Rule::kw_is,
            Rule::kw_within,
            Rule::kw_since,
            Rule::kw_between,
        ],
        _ => &[
            Rule::datetime,
            Rule::time_of_day,
            Rule::duration,
            Rule::percent,
            Rule::number,
            Rule::string,
            Rule::bool_lit,
        ],
    }
}

fn expected_phrases(positives: &[Rule]) -> Vec<String> {
    let mut rules: Vec<Rule> = positives.to_vec();
    let mut phrases = Vec::new();
    for (phrase, markers) in GROUPS {
        if markers.iter().all(|m| rules.contains(m)) {
            let members = group_members(markers);
            rules.retain(|r| !members.contains(r));
            phrases.push(phrase.to_string());
        }
    }
    phrases.extend(rules.iter().filter_map(|r| rule_phrase(*r)));
    phrases
}

/// How a grammar rule is named to people; `None` for rules that never need naming.
fn rule_phrase(rule: Rule) -> Option<String> {
    let text = match rule {
        Rule::ident | Rule::word | Rule::field_name => "a name",
        Rule::type_name => "a type (`text`, `number`, `bool`, `time`, `duration` or `zone`)",
        Rule::string | Rule::cron_schedule => "a quoted text such as `\"…\"`",
        Rule::string_close => "a closing `\"`",
        Rule::integer => "a whole number",
        Rule::number => "a number",
        Rule::percent => "a percentage such as `40%`",
        Rule::duration => "a duration such as `30m`, `2h` or `7d`",
        Rule::time_of_day | Rule::wait_until => "a time of day such as `10:00`",
        Rule::datetime => "a date such as `2026-03-01` or `2026-03-01 09:00`",
        Rule::cmp_op => "a comparison such as `==` or `>=`",
        Rule::bool_lit => "`true` or `false`",
        Rule::status_value => "`draft`, `active` or `paused`",
        Rule::rate_unit => "`second`, `minute`, `hour` or `day`",
        Rule::day_name | Rule::day_schedule => "a day such as `day`, `weekday` or `monday`",
        Rule::tag_change => "`added` or `removed`",
        Rule::content_key | Rule::content_part | Rule::content => {
            "message content such as `\"…\"` or `text \"…\"`"
        }
        Rule::employee_order => "`last_added`, `first_added` or a list such as `[\"alice\"]`",
        Rule::shorthand_channel => "`task` or `moments`",
        Rule::attr_path | Rule::channel_to => "an attribute such as `customer.phone`",
        Rule::list | Rule::string_list => "a list such as `[\"a\", \"b\"]`",
        Rule::expr | Rule::where_expr | Rule::paren | Rule::where_paren => "a condition",
        Rule::has_tag => "`has tag`",
        Rule::did => "`did`",
        Rule::did_not => "`not`",
        Rule::count | Rule::count_mode => "`at least`, `at most` or `exactly`",
        Rule::times_word => "`times`",
        Rule::occurrence => "`after N times` or `every N times`",
        Rule::unless => "`unless`",
        Rule::for_after => "`for`",
        Rule::where_clause => "`where`",
        Rule::within_last => "`within last`",
        Rule::since => "`since`",
        Rule::between => "`between`",
        Rule::compare => "a comparison such as `==` or `>=`",
        Rule::in_list | Rule::not_in_list => "`in`",
        Rule::contains => "`contains`",
        Rule::is_set | Rule::is_not_set => "`is set`",
        Rule::subject_test | Rule::property_test => "a condition",
        Rule::by_employee | Rule::kw_by => "`by employee`",
        Rule::assign => "`assign`",
        Rule::optional_mark => "`?`",
        Rule::channel_kind => "`kind`",
        Rule::channel_reachable => "`reachable`",
        Rule::split_arm => "a share such as `50% \"A\": send …`",
        Rule::delivery => "a channel such as `sms`",
        _ => return keyword_phrase(rule),
    };
    Some(text.to_string())
}

/// `kw_send` → "`send`"; clause rules are named by their keyword.
fn keyword_phrase(rule: Rule) -> Option<String> {
    let name = format!("{rule:?}");
    if let Some(word) = name.strip_prefix("kw_") {
        return Some(format!("`{word}`"));
    }
    for suffix in ["_clause", "_decl"] {
        if let Some(word) = name.strip_suffix(suffix) {
            return Some(format!("`{}`", word.split('_').next().unwrap_or(word)));
        }
    }
    match rule {
        Rule::campaign => Some("`campaign`".into()),
        Rule::tag_rule => Some("`tag`".into()),
        Rule::policy => Some("`policy`".into()),
        Rule::trigger_at => Some("`at`".into()),
        Rule::trigger_every => Some("`every`".into()),
        Rule::trigger_on | Rule::trigger_tag => Some("`on`".into()),
        Rule::shorthand_send => Some("`task` or `moments`".into()),
        _ => None,
    }
}

fn dedup_keep_order(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

/// "a, b or c"
pub fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_parentheses_are_refused_before_parsing() {
        let text = format!(
            "segment s = {}true{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let parsed = parse_items(0, &text);
        assert!(parsed.items.is_empty());
        assert_eq!(parsed.diagnostics[0].code, Code::TooDeep);
    }

    #[test]
    fn long_runs_of_not_are_refused() {
        let text = format!("segment s = {} true", "not ".repeat(100_000));
        assert_eq!(parse_items(0, &text).diagnostics[0].code, Code::TooDeep);
    }

    #[test]
    fn moderate_nesting_and_many_siblings_are_fine() {
        let siblings = vec!["(not true)"; 1000].join(" and ");
        let nested = format!("{}true{}", "(not ".repeat(40), ")".repeat(40));
        let text = format!("segment a = {siblings}\nsegment b = {nested}\n");
        let parsed = parse_items(0, &text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.items.len(), 2);
    }

    #[test]
    fn recovers_at_the_next_item() {
        let text = "segment a = has tag\nsegment b = has tag \"x\"\ncampaign \"c\" {\n  audience b b\n}\nsegment d = true\n";
        let parsed = parse_items(0, text);
        assert_eq!(parsed.diagnostics.len(), 2, "{:?}", parsed.diagnostics);
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(
            parsed.unparsed[0],
            ("segment".to_string(), Some("a".to_string()))
        );
    }
}
