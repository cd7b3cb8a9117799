//! `nudge import`: customers, events, tags and employee relations from JSON Lines or CSV files
//! (LANGUAGE.md §9) into the store, in one transaction.
//!
//! A reader thread parses and checks rows in batches while this thread writes them, so parsing
//! and SQLite overlap. Bad rows are reported in file order; unless `skip_invalid` is set, one bad
//! row rolls the whole import back (the rest of the file is still read, to report every bad row).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread;

use chrono::{DateTime, Utc};

use super::bulk::{BulkError, Sorter};
use super::rows::{quoted, Fields, Format, Nulls};
use super::{Store, StoreError, Tx};

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Customers,
    Events,
    Tags,
    Employees,
}

#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// Import the good rows and report the bad ones, instead of importing nothing.
    pub skip_invalid: bool,
    /// When tags listed on customers, and tag rows without `at`, count as added (the clock,
    /// for the command line).
    pub now: DateTime<Utc>,
}

/// A row that was not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based; for CSV, the line where the record starts.
    pub line: u64,
    pub reason: String,
}

/// Hears about an import as it goes (the command line prints and draws a progress bar).
pub trait ImportObserver {
    /// A bad row, in file order.
    fn bad_row(&mut self, row: &BadRow);
    /// How many bytes of the file have been read.
    fn progress(&mut self, bytes: u64);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub imported: u64,
    /// Bad rows skipped (only with `skip_invalid`; otherwise bad rows fail the import).
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot tell the format of `{}`: name it `.jsonl`, `.ndjson` or `.csv`", .0.display())]
    UnknownFormat(PathBuf),
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The CSV header does not fit the kind: no row can be imported.
    #[error("{reason}")]
    Header { reason: String },
    /// Bad rows (already reported to the observer); nothing was imported.
    #[error("the file has bad rows ({bad_rows}): nothing was imported")]
    Rejected { bad_rows: u64 },
    #[error("cannot use a temporary file for sorting the events: {0}")]
    TempFile(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<BulkError> for ImportError {
    fn from(error: BulkError) -> Self {
        match error {
            BulkError::TempFile(error) => ImportError::TempFile(error),
            BulkError::Store(error) => ImportError::Store(error),
        }
    }
}

/// A file to import, opened and with its format known.
pub struct ImportFile {
    path: PathBuf,
    format: Format,
    file: File,
}

impl ImportFile {
    /// Opens `path`, whose format is given by its extension.
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let format = Format::of(path).ok_or_else(|| ImportError::UnknownFormat(path.to_owned()))?;
        let file = File::open(path).map_err(|source| ImportError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(ImportFile {
            path: path.to_owned(),
            format,
            file,
        })
    }

    /// The file's size in bytes (what [`ImportObserver::progress`] counts towards), if known.
    pub fn size(&self) -> Option<u64> {
        self.file.metadata().ok().map(|metadata| metadata.len())
    }
}

/// Imports the file into the store: every row, or (on any error) nothing.
pub fn import(
    store: &mut Store,
    kind: Kind,
    file: ImportFile,
    options: ImportOptions,
    observer: &mut dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    match kind {
        Kind::Customers => import_records::<CustomerRow>(store, file, options, observer),
        Kind::Events => import_records::<EventRow>(store, file, options, observer),
        Kind::Tags => import_records::<TagRow>(store, file, options, observer),
        Kind::Employees => import_records::<EmployeeRow>(store, file, options, observer),
    }
}

/// One kind of import row.
trait Record: Sized + Send + 'static {
    /// CSV columns that must be present.
    const REQUIRED: &'static [&'static str];
    /// CSV columns that may be present, or `None` when any other column is allowed (as an
    /// attribute or a property).
    const OPTIONAL: Option<&'static [&'static str]>;

    /// Whether the reader sorts each batch by [`Record::sort_key`] before handing it over.
    const SORT_BATCHES: bool = true;

    fn parse(fields: Fields) -> Result<Self, String>;

    /// Where the rows go.
    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't>;

    /// The customer the row is about, and for events the time: every table is stored by
    /// customer (events by customer and time), so batches are sorted by this before they are
    /// written, which makes each batch touch each page once instead of once per row.
    fn sort_key(&self) -> (&str, Option<DateTime<Utc>>);
}

/// Receives the rows of an import, batch by batch, in file order.
trait Sink<R> {
    /// Takes a batch's rows (leaving the vector empty, to be reused).
    fn write(&mut self, rows: &mut Vec<R>) -> Result<(), ImportError>;
    /// Completes the import after the last batch.
    fn finish(self: Box<Self>) -> Result<(), ImportError>;
}

/// Rows written by one function.
type Insert<R> = fn(&[R], &Tx, &ImportOptions) -> Result<(), StoreError>;

/// Writes each batch as it comes.
struct Direct<'t, R> {
    tx: &'t Tx<'t>,
    options: &'t ImportOptions,
    insert: Insert<R>,
}

impl<'t, R: Record> Direct<'t, R> {
    fn boxed(tx: &'t Tx<'t>, options: &'t ImportOptions, insert: Insert<R>) -> Box<Self> {
        Box::new(Direct {
            tx,
            options,
            insert,
        })
    }
}

impl<R: Record> Sink<R> for Direct<'_, R> {
    fn write(&mut self, rows: &mut Vec<R>) -> Result<(), ImportError> {
        (self.insert)(rows, self.tx, self.options)?;
        rows.clear();
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ImportError> {
        Ok(())
    }
}

/// Events are sorted by customer over the whole import, then written one history per customer
/// (see `bulk.rs`).
struct Bulk<'t> {
    tx: &'t Tx<'t>,
    sorter: Sorter,
}

impl Sink<EventRow> for Bulk<'_> {
    fn write(&mut self, rows: &mut Vec<EventRow>) -> Result<(), ImportError> {
        Ok(self.sorter.push(rows)?)
    }

    fn finish(self: Box<Self>) -> Result<(), ImportError> {
        self.sorter.finish(self.tx)?;
        Ok(())
    }
}

/// Sorts a batch by [`Record::sort_key`]. The key is compared on the customer's first 16 bytes,
/// kept inline so that comparisons do not chase pointers; customers sharing those bytes are
/// merely less well sorted. The sort is stable, so rows of one customer (at one instant) keep
/// their file order: a customer's later row still merges over an earlier one, and events at one
/// instant get increasing ids.
fn order<R: Record>(batch: &mut [R]) {
    batch.sort_by_cached_key(|row| {
        let (customer, at) = row.sort_key();
        let mut prefix = [0; 16];
        let length = customer.len().min(16);
        prefix[..length].copy_from_slice(&customer.as_bytes()[..length]);
        (u128::from_be_bytes(prefix), at)
    });
}

struct CustomerRow {
    id: String,
    attributes: String,
    tags: Vec<String>,
}

impl Record for CustomerRow {
    const REQUIRED: &'static [&'static str] = &["id"];
    const OPTIONAL: Option<&'static [&'static str]> = None;

    fn parse(mut fields: Fields) -> Result<Self, String> {
        let id = fields.required_text("id")?.into_owned();
        let tags = match fields.take("tags") {
            Some(tags) => tags.text_list("tags")?,
            None => Vec::new(),
        };
        // Kept nulls remove the attribute when merged into a stored customer.
        let mut attributes = String::new();
        fields.write_object("attribute", Nulls::Keep, &mut attributes)?;
        Ok(CustomerRow {
            id,
            attributes,
            tags,
        })
    }

    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Direct::boxed(tx, options, |rows: &[Self], tx, options| {
            for row in rows {
                tx.upsert_customer_json(&row.id, &row.attributes)?;
                for tag in &row.tags {
                    tx.add_tag(&row.id, tag, options.now)?;
                }
            }
            Ok(())
        })
    }

    fn sort_key(&self) -> (&str, Option<DateTime<Utc>>) {
        (&self.id, None)
    }
}

/// An event row keeps its customer, name and properties in one string: an import holds many rows
/// at once, and one allocation per row instead of three is a measurable part of an import.
#[derive(Default)]
pub(super) struct EventRow {
    /// The customer, the name and the properties (a JSON object), one after the other.
    pub(super) text: String,
    pub(super) name_start: usize,
    pub(super) properties_start: usize,
    /// Milliseconds since the epoch, as stored.
    pub(super) at: i64,
}

impl EventRow {
    pub(super) fn customer(&self) -> &str {
        &self.text[..self.name_start]
    }

    pub(super) fn name(&self) -> &str {
        &self.text[self.name_start..self.properties_start]
    }

    pub(super) fn properties(&self) -> &str {
        &self.text[self.properties_start..]
    }

    /// Bytes of memory the row holds, allocator overhead included (roughly).
    pub(super) fn footprint(&self) -> usize {
        std::mem::size_of::<Self>() + self.text.capacity() + 16
    }
}

impl Record for EventRow {
    const REQUIRED: &'static [&'static str] = &["customer", "event", "at"];
    const OPTIONAL: Option<&'static [&'static str]> = None;
    const SORT_BATCHES: bool = false;

    fn parse(mut fields: Fields) -> Result<Self, String> {
        let customer = fields.required_text("customer")?;
        let name = fields.required_text("event")?;
        let at = fields.required_time("at")?;
        // In CSV the other columns are the properties; in JSON they are under `properties`.
        let properties = match fields.format {
            Format::Csv => Some(fields),
            Format::JsonLines => {
                let properties = fields.take("properties");
                fields.finish(" (event properties go under `properties`)")?;
                properties
                    .map(|p| p.object("properties"))
                    .transpose()?
                    .flatten()
            }
        };
        let mut text = String::with_capacity(customer.len() + name.len() + 64);
        text.push_str(&customer);
        text.push_str(&name);
        match properties {
            Some(properties) => properties.write_object("property", Nulls::Drop, &mut text)?,
            None => text.push_str("{}"),
        }
        Ok(EventRow {
            text,
            name_start: customer.len(),
            properties_start: customer.len() + name.len(),
            at: at.timestamp_millis(),
        })
    }

    fn sink<'t>(tx: &'t Tx<'t>, _: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Box::new(Bulk {
            tx,
            sorter: Sorter::default(),
        })
    }

    fn sort_key(&self) -> (&str, Option<DateTime<Utc>>) {
        (self.customer(), DateTime::from_timestamp_millis(self.at))
    }
}

struct TagRow {
    customer: String,
    tag: String,
    at: Option<DateTime<Utc>>,
}

impl Record for TagRow {
    const REQUIRED: &'static [&'static str] = &["customer", "tag"];
    const OPTIONAL: Option<&'static [&'static str]> = Some(&["at"]);

    fn parse(mut fields: Fields) -> Result<Self, String> {
        let tag = TagRow {
            customer: fields.required_text("customer")?.into_owned(),
            tag: fields.required_text("tag")?.into_owned(),
            at: fields.optional_time("at")?,
        };
        fields.finish("")?;
        Ok(tag)
    }

    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Direct::boxed(tx, options, |rows: &[Self], tx, options| {
            for row in rows {
                tx.add_tag(&row.customer, &row.tag, row.at.unwrap_or(options.now))?;
            }
            Ok(())
        })
    }

    fn sort_key(&self) -> (&str, Option<DateTime<Utc>>) {
        (&self.customer, None)
    }
}

struct EmployeeRow {
    customer: String,
    employee: String,
    added_at: DateTime<Utc>,
}

impl Record for EmployeeRow {
    const REQUIRED: &'static [&'static str] = &["customer", "employee", "added_at"];
    const OPTIONAL: Option<&'static [&'static str]> = Some(&[]);

    fn parse(mut fields: Fields) -> Result<Self, String> {
        let row = EmployeeRow {
            customer: fields.required_text("customer")?.into_owned(),
            employee: fields.required_text("employee")?.into_owned(),
            added_at: fields.required_time("added_at")?,
        };
        fields.finish("")?;
        Ok(row)
    }

    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Direct::boxed(tx, options, |rows: &[Self], tx, _| {
            rows.iter()
                .try_for_each(|row| tx.add_employee(&row.customer, &row.employee, row.added_at))
        })
    }

    fn sort_key(&self) -> (&str, Option<DateTime<Utc>>) {
        (&self.customer, None)
    }
}

/// A batch handed from the reader to the writer ends after this many rows or this many bytes of
/// the file, whichever comes first: large enough to amortise the hand-over and to give the sort
/// some locality, small enough to keep memory flat (two batches in flight, one being written,
/// one being filled) whatever the size of the rows.
const BATCH_ROWS: usize = 65_536;
const BATCH_BYTES: u64 = 8 << 20;
const BATCHES_IN_FLIGHT: usize = 2;

struct Batch<R> {
    rows: Vec<R>,
    bad: Vec<BadRow>,
    /// Bytes of the file read by the end of the batch.
    read: u64,
}

fn import_records<R: Record>(
    store: &mut Store,
    input: ImportFile,
    options: ImportOptions,
    observer: &mut dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    let ImportFile { path, format, file } = input;
    store.transaction(|tx| {
        let (sender, receiver) = sync_channel(BATCHES_IN_FLIGHT);
        let (recycler, recycled) = channel();
        let batcher = Batcher::<R>::new(sender, recycled);
        let (read, written) = thread::scope(|scope| {
            let reader = scope.spawn(move || read_rows(format, file, batcher));
            let written = write_rows(tx, receiver, recycler, &options, observer);
            let read = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (read, written)
        });
        // A read error explains a short write, so it comes first.
        if let Err(error) = read {
            error.into_import_error(&path)?;
        }
        let summary = written?;
        match summary.skipped {
            bad_rows if bad_rows > 0 && !options.skip_invalid => {
                Err(ImportError::Rejected { bad_rows })
            }
            _ => Ok(summary),
        }
    })
}

/// Writes the batches as they come. After the first bad row of a strict import, rows are no
/// longer written (they will be rolled back) but bad rows are still reported.
fn write_rows<R: Record>(
    tx: &Tx,
    batches: Receiver<Batch<R>>,
    recycler: Sender<Vec<R>>,
    options: &ImportOptions,
    observer: &mut dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let mut sink = R::sink(tx, options);
    for mut batch in batches {
        for bad in &batch.bad {
            observer.bad_row(bad);
        }
        summary.skipped += batch.bad.len() as u64;
        if summary.skipped == 0 || options.skip_invalid {
            summary.imported += batch.rows.len() as u64;
            sink.write(&mut batch.rows)?;
        }
        observer.progress(batch.read);
        // Once the reader has finished, the rows are simply dropped here.
        let _ = recycler.send(batch.rows);
    }
    if summary.skipped == 0 || options.skip_invalid {
        sink.finish()?;
    }
    Ok(summary)
}

/// Why the reader stopped early.
enum ReadError {
    Io(io::Error),
    Header(String),
    /// The writer has stopped (it failed, and says why).
    WriterGone,
}

impl ReadError {
    fn into_import_error(self, path: &Path) -> Result<(), ImportError> {
        match self {
            ReadError::Io(source) => Err(ImportError::Read {
                path: path.to_owned(),
                source,
            }),
            ReadError::Header(reason) => Err(ImportError::Header { reason }),
            ReadError::WriterGone => Ok(()),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        ReadError::Io(error)
    }
}

/// Collects parsed rows into batches and hands them to the writer. The writer hands the rows
/// back once written, so that freeing them (and reusing their vectors) happens on the reader's
/// thread and the writer's thread does nothing but SQLite.
struct Batcher<R> {
    batch: Batch<R>,
    /// Bytes of the file read before the current batch.
    started: u64,
    sender: SyncSender<Batch<R>>,
    recycled: Receiver<Vec<R>>,
}

impl<R: Record> Batcher<R> {
    fn new(sender: SyncSender<Batch<R>>, recycled: Receiver<Vec<R>>) -> Self {
        Batcher {
            batch: Batch {
                rows: Vec::with_capacity(BATCH_ROWS),
                bad: Vec::new(),
                read: 0,
            },
            started: 0,
            sender,
            recycled,
        }
    }

    fn add(&mut self, line: u64, row: Result<R, String>, read: u64) -> Result<(), ReadError> {
        match row {
            Ok(row) => self.batch.rows.push(row),
            Err(reason) => self.batch.bad.push(BadRow { line, reason }),
        }
        self.batch.read = read;
        let rows = self.batch.rows.len() + self.batch.bad.len();
        if rows >= BATCH_ROWS || read - self.started >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), ReadError> {
        // Free every written batch now (rows kept until reuse would double the memory held),
        // and reuse one vector.
        let rows = self
            .recycled
            .try_iter()
            .map(|mut rows| {
                rows.clear();
                rows
            })
            .last()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_ROWS));
        let next = Batch {
            rows,
            bad: Vec::new(),
            read: self.batch.read,
        };
        self.started = self.batch.read;
        let mut batch = std::mem::replace(&mut self.batch, next);
        if R::SORT_BATCHES {
            order(&mut batch.rows);
        }
        self.sender.send(batch).map_err(|_| ReadError::WriterGone)
    }
}

fn read_rows<R: Record>(
    format: Format,
    file: File,
    mut batcher: Batcher<R>,
) -> Result<(), ReadError> {
    match format {
        Format::JsonLines => read_json_lines(file, &mut batcher)?,
        Format::Csv => read_csv(file, &mut batcher)?,
    }
    batcher.send()
}

/// Lines longer than this are bad rows, read past without being held in memory.
const MAX_LINE: usize = 16 << 20;

fn read_json_lines<R: Record>(file: File, batcher: &mut Batcher<R>) -> Result<(), ReadError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buffer = Vec::new();
    let mut read = 0;
    for line in 1.. {
        let Some(length) = read_line(&mut reader, &mut buffer)? else {
            break;
        };
        read += length;
        let row = parse_json_line::<R>(&buffer, line == 1);
        if let Some(row) = row {
            batcher.add(line, row, read)?;
        }
    }
    Ok(())
}

/// Parses one line; `None` for a blank line.
fn parse_json_line<R: Record>(line: &[u8], first: bool) -> Option<Result<R, String>> {
    if line.len() > MAX_LINE {
        return Some(Err(format!("line longer than {} MB", MAX_LINE >> 20)));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(Err("not UTF-8 text".to_owned()));
    };
    let text = if first {
        text.trim_start_matches('\u{feff}')
    } else {
        text
    };
    if text.trim().is_empty() {
        return None;
    }
    Some(Fields::from_json(text).and_then(R::parse))
}

/// Reads a line into `buffer` without its line ending and returns how many bytes it took, or
/// `None` at the end of the file. A line longer than [`MAX_LINE`] is consumed without being kept
/// whole: `buffer` then holds `MAX_LINE + 1` bytes.
fn read_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> io::Result<Option<u64>> {
    buffer.clear();
    let mut taken = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buffer)? as u64;
    if taken == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
    } else if buffer.len() > MAX_LINE {
        taken += skip_line(reader)?;
    }
    Ok(Some(taken))
}

/// Consumes the rest of the current line; returns how many bytes that was.
fn skip_line(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(skipped);
        }
        let (length, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        reader.consume(length);
        skipped += length as u64;
        if done {
            return Ok(skipped);
        }
    }
}

fn read_csv<R: Record>(file: File, batcher: &mut Batcher<R>) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let header = match reader.byte_headers() {
        Ok(header) if header.is_empty() => return Ok(()),
        Ok(header) => csv_header::<R>(header).map_err(ReadError::Header)?,
        Err(error) => return Err(csv_fatal(error)),
    };
    let mut record = csv::ByteRecord::new();
    let line = |position: Option<&csv::Position>| position.map_or(0, csv::Position::line);
    loop {
        let (line, row) = match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => (
                line(record.position()),
                Fields::from_csv(&header, &record).and_then(R::parse),
            ),
            Err(error) => match error.kind() {
                csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => (
                    line(pos.as_ref()),
                    Err(format!("{len} fields, but the header has {expected_len}")),
                ),
                _ => return Err(csv_fatal(error)),
            },
        };
        batcher.add(line, row, reader.position().byte())?;
    }
}

/// A CSV error that is not a bad row: reading the file failed.
fn csv_fatal(error: csv::Error) -> ReadError {
    let message = error.to_string();
    ReadError::Io(match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        _ => io::Error::other(message),
    })
}

/// The header's column names, checked against the kind: required columns present, no column
/// twice, no column the kind does not know (where it has no attributes or properties).
fn csv_header<R: Record>(header: &csv::ByteRecord) -> Result<Vec<String>, String> {
    let names = header
        .iter()
        .map(|name| std::str::from_utf8(name).map(|name| name.trim().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the header is not UTF-8 text".to_owned())?;
    if let Some(missing) = R::REQUIRED
        .iter()
        .find(|required| !names.iter().any(|n| n == *required))
    {
        return Err(format!("the header has no {} column", quoted(missing)));
    }
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            return Err(format!("the header has two {} columns", quoted(name)));
        }
        let known = |list: &[&str]| list.contains(&name.as_str());
        if R::OPTIONAL.is_some_and(|optional| !known(R::REQUIRED) && !known(optional)) {
            return Err(format!("unknown column {}", quoted(name)));
        }
    }
    Ok(names)
}
