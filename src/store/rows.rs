//! Import rows: a JSON Lines object or a CSV record as named fields, and the checks every kind
//! of record shares (text, times, JSON-object values). The kinds themselves are in `import`.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use chrono::format::ParseErrorKind;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The two file formats of LANGUAGE.md §9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// The format by file extension: `.jsonl` / `.ndjson` or `.csv`.
    pub(super) fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One value of a row: JSON as written, or a CSV cell.
#[derive(Clone, Copy)]
pub(super) enum Field<'a> {
    Json(&'a RawValue),
    Cell(&'a str),
}

/// A row's fields by name. Kinds take the fields they know; what is left is attributes,
/// properties or a mistake, depending on the kind.
pub(super) struct Fields<'a> {
    pub(super) format: Format,
    entries: Vec<(Cow<'a, str>, Field<'a>)>,
}

impl<'a> Fields<'a> {
    /// A JSON object's members; anything else (or a key given twice) is a bad row.
    pub(super) fn from_json(text: &'a str) -> Result<Self, String> {
        let JsonObject(mut entries) =
            serde_json::from_str(text).map_err(|e| json_error(text, &e))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("key {} appears twice", quoted(&pair[0].0)));
        }
        Ok(Fields {
            format: Format::JsonLines,
            entries,
        })
    }

    /// A CSV record under its header (whose names were checked when the file was opened).
    pub(super) fn from_csv(
        header: &'a [String],
        record: &'a csv::ByteRecord,
    ) -> Result<Self, String> {
        let entries = header
            .iter()
            .zip(record)
            .map(|(name, bytes)| match std::str::from_utf8(bytes) {
                Ok(cell) => Ok((Cow::Borrowed(name.as_str()), Field::Cell(cell))),
                Err(_) => Err(format!("column {} is not UTF-8 text", quoted(name))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Fields {
            format: Format::Csv,
            entries,
        })
    }

    pub(super) fn take(&mut self, name: &str) -> Option<Field<'a>> {
        let index = self.entries.iter().position(|(key, _)| key == name)?;
        Some(self.entries.remove(index).1)
    }

    /// A field that must be present and non-blank text (ids, names).
    pub(super) fn required_text(&mut self, name: &str) -> Result<Cow<'a, str>, String> {
        let text = self
            .take(name)
            .ok_or_else(|| format!("missing {}", quoted(name)))?
            .text(name)?;
        if text.trim().is_empty() {
            return Err(format!("{} is empty", quoted(name)));
        }
        Ok(text)
    }

    pub(super) fn required_time(&mut self, name: &str) -> Result<DateTime<Utc>, String> {
        parse_time(name, &self.required_text(name)?)
    }

    /// A time that may be missing (or an empty CSV cell).
    pub(super) fn optional_time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, String> {
        match self.take(name) {
            None | Some(Field::Cell("")) => Ok(None),
            Some(Field::Json(raw)) if raw.get() == "null" => Ok(None),
            Some(field) => parse_time(name, &field.text(name)?).map(Some),
        }
    }

    /// Fails on any field not taken. `hint` follows the message, e.g. where the field belongs.
    pub(super) fn finish(self, hint: &str) -> Result<(), String> {
        match self.entries.first() {
            None => Ok(()),
            Some((name, _)) => Err(format!("unknown key {}{hint}", quoted(name))),
        }
    }

    /// Appends the fields not taken to `out` as a JSON object of text, numbers and booleans;
    /// `nulls` says whether a JSON `null` is kept (an instruction to remove, for attributes) or
    /// dropped.
    pub(super) fn write_object(
        self,
        what: &str,
        nulls: Nulls,
        out: &mut String,
    ) -> Result<(), String> {
        out.push('{');
        let mut first = true;
        for (name, field) in &self.entries {
            let Some(value) = field.scalar(what, name)? else {
                continue;
            };
            if value == "null" && nulls == Nulls::Drop {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_json_string(out, name);
            out.push(':');
            out.push_str(&value);
        }
        out.push('}');
        Ok(())
    }
}

/// An event's JSON Lines object exactly as Nudge's generator writes it, and most tools would:
/// `{"customer":…,"event":…,"at":…,"properties":{…}}` in this order, without whitespace or
/// escapes in the three texts, and properties as the store keeps them ([`is_written_object`]),
/// or none. Read by scanning the line once, which costs a fraction of serde's two passes (one
/// for the line, one for the properties): parsing was most of an events import's CPU time.
/// Any other line is left to [`PlainEvent`] and [`Fields`], which read it the same way.
pub(super) struct WrittenEvent<'a> {
    pub(super) customer: &'a str,
    pub(super) event: &'a str,
    /// Milliseconds since the epoch.
    pub(super) at: i64,
    /// As the store keeps them: `{}` when the line has none.
    pub(super) properties: &'a str,
}

impl<'a> WrittenEvent<'a> {
    pub(super) fn read(line: &'a str) -> Option<Self> {
        let rest = line.strip_prefix(r#"{"customer":""#)?;
        let (customer, rest) = plain_text(rest)?;
        let (event, rest) = plain_text(rest.strip_prefix(r#","event":""#)?)?;
        let (at, rest) = plain_text(rest.strip_prefix(r#","at":""#)?)?;
        let properties = match rest.strip_prefix(r#","properties":"#) {
            Some(rest) => rest.strip_suffix('}').filter(|p| is_written_object(p))?,
            None if rest == "}" => "{}",
            None => return None,
        };
        let blank = |text: &str| text.trim().is_empty();
        if blank(customer) || blank(event) {
            return None;
        }
        Some(WrittenEvent {
            customer,
            event,
            at: parse_time("at", at).ok()?.timestamp_millis(),
            properties,
        })
    }
}

/// The text of a JSON string without escapes, from just after its opening quote, and what
/// follows its closing quote.
fn plain_text(text: &str) -> Option<(&str, &str)> {
    // The quote is ASCII: the text splits at a character boundary there.
    let (inner, _) = plain_text_bytes(text.as_bytes())?;
    Some((&text[..inner.len()], &text[inner.len() + 1..]))
}

/// Whether `raw` is valid JSON, and an object exactly as [`Fields::write_object`] would write
/// it with nulls dropped: no whitespace between tokens, keys in increasing order (so none
/// twice) and without escapes, and every value a string, number or boolean. Then the text can
/// be kept as it is, without parsing the object into fields and writing it again. (Strings
/// with a `\u` escape are left to serde, which knows what it accepts of surrogates.)
pub(super) fn is_written_object(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let Some((b'{', mut rest)) = bytes.split_first() else {
        return false;
    };
    if rest == b"}" {
        return true;
    }
    let mut previous: Option<&[u8]> = None;
    loop {
        let Some((b'"', after)) = rest.split_first() else {
            return false;
        };
        let Some((key, after)) = plain_text_bytes(after) else {
            return false;
        };
        if previous.is_some_and(|previous| previous >= key) {
            return false;
        }
        previous = Some(key);
        let Some((b':', after)) = after.split_first() else {
            return false;
        };
        let Some(after) = skip_scalar(after) else {
            return false;
        };
        match after.split_first() {
            Some((b',', more)) => rest = more,
            Some((b'}', [])) => return true,
            _ => return false,
        }
    }
}

/// [`plain_text`] of bytes.
fn plain_text_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (bytes[end] == b'"').then(|| (&bytes[..end], &bytes[end + 1..]))
}

/// What follows the JSON string, number or boolean at the start of `bytes`, if one is there.
fn skip_scalar(bytes: &[u8]) -> Option<&[u8]> {
    match bytes.first()? {
        b'"' => skip_string(&bytes[1..]),
        b't' => bytes.strip_prefix(b"true"),
        b'f' => bytes.strip_prefix(b"false"),
        _ => skip_number(bytes),
    }
}

/// What follows a JSON string's closing quote, from just after its opening one.
fn skip_string(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    loop {
        match *bytes.get(i)? {
            b'"' => return bytes.get(i + 1..),
            b'\\' => match bytes.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                _ => return None,
            },
            byte if byte < 0x20 => return None,
            _ => i += 1,
        }
    }
}

/// What follows a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn skip_number(bytes: &[u8]) -> Option<&[u8]> {
    let digits = |bytes: &[u8]| bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    match digits(&bytes[i..]) {
        0 => return None,
        n if n > 1 && bytes[i] == b'0' => return None,
        n => i += n,
    }
    if bytes.get(i) == Some(&b'.') {
        match digits(&bytes[i + 1..]) {
            0 => return None,
            n => i += 1 + n,
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match digits(&bytes[i..]) {
            0 => return None,
            n => i += n,
        }
    }
    Some(&bytes[i..])
}

/// Appends `text` as a JSON string. Most keys need no escaping, and copying them as they are
/// saves an allocation per key.
fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(text).expect("strings serialize"));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// An event's JSON Lines object in its usual shape: `customer`, `event` and `at` as text without
/// escapes, maybe `properties`, nothing else. Reading it takes no [`Fields`], which makes most
/// event lines several times cheaper; lines of any other shape are read as [`Fields`], which
/// also says what is wrong with them.
pub(super) struct PlainEvent<'a> {
    pub(super) customer: &'a str,
    pub(super) event: &'a str,
    /// Milliseconds since the epoch.
    pub(super) at: i64,
    pub(super) properties: Option<Field<'a>>,
}

/// The JSON of a [`PlainEvent`]: `&str` fails on escaped text, and a key that is unknown or
/// given twice fails too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainJson<'a> {
    customer: &'a str,
    event: &'a str,
    at: &'a str,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

impl<'a> PlainEvent<'a> {
    /// The event, if the line has the usual shape and its texts and time are valid.
    pub(super) fn read(line: &'a str) -> Option<Self> {
        let json: PlainJson = serde_json::from_str(line).ok()?;
        let blank = |text: &str| text.trim().is_empty();
        if blank(json.customer) || blank(json.event) {
            return None;
        }
        Some(PlainEvent {
            customer: json.customer,
            event: json.event,
            at: parse_time("at", json.at).ok()?.timestamp_millis(),
            properties: json.properties.map(Field::Json),
        })
    }
}

/// What a JSON `null` value means in [`Fields::write_object`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nulls {
    Keep,
    Drop,
}

impl<'a> Field<'a> {
    pub(super) fn text(self, name: &str) -> Result<Cow<'a, str>, String> {
        match self {
            Field::Cell(cell) => Ok(Cow::Borrowed(cell)),
            Field::Json(raw) => serde_json::from_str::<Text>(raw.get())
                .map(|text| text.0)
                .map_err(|_| format!("{} must be text, not {}", quoted(name), json_kind(raw))),
        }
    }

    /// A list of non-blank texts: a JSON array, or a CSV cell with `;` between the items.
    pub(super) fn text_list(self, name: &str) -> Result<Vec<String>, String> {
        match self {
            // Blank items in a cell are separators left over (`VIP;;活跃`, a trailing `;`).
            Field::Cell(cell) => Ok(cell
                .split(';')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect()),
            Field::Json(raw) if raw.get() == "null" => Ok(Vec::new()),
            Field::Json(raw) => serde_json::from_str::<Vec<Text>>(raw.get())
                .map_err(|_| {
                    format!(
                        "{} must be a list of text, not {}",
                        quoted(name),
                        json_kind(raw)
                    )
                })?
                .into_iter()
                .map(|Text(item)| match item.trim().is_empty() {
                    true => Err(format!("{} has an empty item", quoted(name))),
                    false => Ok(item.into_owned()),
                })
                .collect(),
        }
    }

    /// A JSON object's members (JSON `null` counts as no members).
    pub(super) fn object(self, name: &str) -> Result<Option<Fields<'a>>, String> {
        match self {
            Field::Json(raw) if raw.get() == "null" => Ok(None),
            Field::Json(raw) if raw.get().starts_with('{') => {
                Fields::from_json(raw.get()).map(Some)
            }
            Field::Json(raw) => Err(format!(
                "{} must be an object, not {}",
                quoted(name),
                json_kind(raw)
            )),
            Field::Cell(_) => Err(format!("{} must be an object", quoted(name))),
        }
    }

    /// The value as JSON text, if it is a scalar; `None` for an empty CSV cell (no value). In
    /// CSV, a cell written as a JSON number is a number, `true` / `false` are booleans, and
    /// anything else is text (so `0123` stays text, leading zero and all).
    fn scalar(&self, what: &str, name: &str) -> Result<Option<Cow<'a, str>>, String> {
        match *self {
            Field::Json(raw) => match raw.get().as_bytes().first() {
                Some(b'{' | b'[') => Err(format!(
                    "{what} {} is {}: values must be text, numbers or true/false",
                    quoted(name),
                    json_kind(raw)
                )),
                _ => Ok(Some(Cow::Borrowed(raw.get()))),
            },
            Field::Cell("") => Ok(None),
            Field::Cell(cell @ ("true" | "false")) => Ok(Some(Cow::Borrowed(cell))),
            Field::Cell(cell) if is_json_number(cell) => Ok(Some(Cow::Borrowed(cell))),
            Field::Cell(cell) => Ok(Some(Cow::Owned(
                serde_json::to_string(cell).expect("strings serialize"),
            ))),
        }
    }
}

fn is_json_number(cell: &str) -> bool {
    // serde_json accepts surrounding whitespace; a cell with spaces is text.
    let edges_ok = cell.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && cell.ends_with(|c: char| c.is_ascii_digit());
    edges_ok && serde_json::from_str::<IgnoredAny>(cell).is_ok()
}

/// Times in import files are RFC 3339 with an offset: without one, the instant is unknown.
fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, String> {
    let error = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => return Ok(time.to_utc()),
        Err(error) => error,
    };
    const LOCAL: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    let without_offset = LOCAL
        .iter()
        .any(|format| NaiveDateTime::parse_from_str(text, format).is_ok())
        || NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok();
    let problem = match error.kind() {
        _ if without_offset => "has no UTC offset",
        ParseErrorKind::OutOfRange | ParseErrorKind::Impossible => "does not exist",
        _ => "is not an RFC 3339 time",
    };
    Err(format!(
        "{} is {}, which {problem}: write e.g. `2026-03-01T10:00:00+08:00` or \
         `2026-03-01T02:00:00Z`",
        quoted(name),
        quoted(text)
    ))
}

/// A serde_json error as a reason: the position within the line, without the line number
/// (which is always 1 here and is reported as the file's line instead).
fn json_error(text: &str, error: &serde_json::Error) -> String {
    if error.is_data() {
        return format!(
            "expected a JSON object, found {}",
            kind_of(text.trim_start())
        );
    }
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(message, _)| message);
    format!("malformed JSON at column {}: {message}", error.column())
}

fn json_kind(raw: &RawValue) -> &'static str {
    kind_of(raw.get())
}

/// What JSON text holds, by its first character: "a number", "a list"…, for reasons.
fn kind_of(json: &str) -> &'static str {
    match json.as_bytes().first().copied().unwrap_or(b'0') {
        b'"' => "text",
        b'{' => "an object",
        b'[' => "a list",
        b't' | b'f' => "true/false",
        b'n' => "null",
        _ => "a number",
    }
}

/// `name` in backticks, cut short if long (reasons quote the user's data).
pub(super) fn quoted(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}

/// A JSON string, borrowed from the line when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON object's members in order, values unparsed.
struct JsonObject<'a>(Vec<(Cow<'a, str>, Field<'a>)>);

impl<'de> Deserialize<'de> for JsonObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = JsonObject<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(Text(key)) = map.next_key()? {
            entries.push((key, Field::Json(map.next_value()?)));
        }
        Ok(JsonObject(entries))
    }
}
