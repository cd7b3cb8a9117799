//! `nudge import`: customers, events, tags and employee relations from JSON Lines or CSV files
//! (LANGUAGE.md §9) into the store, in one transaction.
//!
//! A reader thread parses and checks rows in batches while this thread writes them, so parsing
//! and SQLite overlap. Bad rows are reported in file order; unless `skip_invalid` is set, one bad
//! row rolls the whole import back (the rest of the file is still read, to report every bad row).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::{self, ScopedJoinHandle};

use chrono::{DateTime, Utc};

use super::bulk::{BulkError, Sorter};
use super::rows::{
    is_written_object, quoted, Field, Fields, Format, Nulls, PlainEvent, WrittenEvent,
};
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
    let split = Split::default();
    match kind {
        Kind::Customers => import_records::<CustomerRow>(store, file, options, observer, split),
        Kind::Events => import_records::<EventRow>(store, file, options, observer, split),
        Kind::Tags => import_records::<TagRow>(store, file, options, observer, split),
        Kind::Employees => import_records::<EmployeeRow>(store, file, options, observer, split),
    }
}

/// One kind of import row.
trait Record: Sized + Send + 'static {
    /// CSV columns that must be present.
    const REQUIRED: &'static [&'static str];
    /// CSV columns that may be present, or `None` when any other column is allowed (as an
    /// attribute or a property).
    const OPTIONAL: Option<&'static [&'static str]>;

    /// Parses a row. Rows whose text is worth keeping out of allocations of their own (events)
    /// append it to `text`, the text of the row's batch.
    fn parse(fields: Fields, text: &mut String) -> Result<Self, String>;

    /// Parses a JSON Lines row.
    fn parse_json(line: &str, text: &mut String) -> Result<Self, String> {
        Fields::from_json(line).and_then(|fields| Self::parse(fields, text))
    }

    /// Readies a batch for the sink, on the thread that parsed it.
    fn prepare(_batch: &mut [Self]) {}

    /// Where the rows go.
    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't>;
}

/// Receives the rows of an import, batch by batch, in file order.
trait Sink<R> {
    /// Takes a batch's rows (leaving the vector empty, to be reused); `text` is the batch's.
    fn write(&mut self, rows: &mut Vec<R>, text: &str) -> Result<(), ImportError>;
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
    fn write(&mut self, rows: &mut Vec<R>, _: &str) -> Result<(), ImportError> {
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
    fn write(&mut self, rows: &mut Vec<EventRow>, text: &str) -> Result<(), ImportError> {
        Ok(self.sorter.push(self.tx, rows, text)?)
    }

    fn finish(self: Box<Self>) -> Result<(), ImportError> {
        self.sorter.finish(self.tx)?;
        Ok(())
    }
}

/// Sorts a batch by the customer each row is about: every table is stored by customer, so a
/// sorted batch touches each page once instead of once per row. The key is compared on the
/// customer's first 16 bytes, kept inline so that comparisons do not chase pointers; customers
/// sharing those bytes are merely less well sorted. The sort is stable, so rows of one customer
/// keep their file order: a customer's later row still merges over an earlier one.
fn order<R>(batch: &mut [R], customer: impl Fn(&R) -> &str) {
    batch.sort_by_cached_key(|row| {
        let customer = customer(row).as_bytes();
        let mut prefix = [0; 16];
        let length = customer.len().min(16);
        prefix[..length].copy_from_slice(&customer[..length]);
        u128::from_be_bytes(prefix)
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

    fn parse(mut fields: Fields, _: &mut String) -> Result<Self, String> {
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

    fn prepare(batch: &mut [Self]) {
        order(batch, |row| &row.id);
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
}

/// An event row's customer, name and properties (a JSON object) are kept one after the other in
/// the text of its batch: an import holds many rows at once, and allocating for each would be a
/// measurable part of an import. Offsets are 32-bit: a batch holds far less than 4 GB of text.
#[derive(Clone, Copy, Debug)]
pub(super) struct EventRow {
    /// Milliseconds since the epoch, as stored.
    pub(super) at: i64,
    start: u32,
    name_start: u32,
    properties_start: u32,
    end: u32,
}

impl EventRow {
    /// Appends an event to `text`: its customer, its name, then the properties `properties`
    /// writes. On error, `text` may hold part of the event.
    pub(super) fn write(
        text: &mut String,
        customer: &str,
        name: &str,
        at: i64,
        properties: impl FnOnce(&mut String) -> Result<(), String>,
    ) -> Result<Self, String> {
        let offset = |text: &String| text.len() as u32;
        let start = offset(text);
        text.push_str(customer);
        let name_start = offset(text);
        text.push_str(name);
        let properties_start = offset(text);
        properties(text)?;
        Ok(EventRow {
            at,
            start,
            name_start,
            properties_start,
            end: offset(text),
        })
    }

    pub(super) fn customer<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start as usize..self.name_start as usize]
    }

    pub(super) fn name<'t>(&self, text: &'t str) -> &'t str {
        &text[self.name_start as usize..self.properties_start as usize]
    }

    pub(super) fn properties<'t>(&self, text: &'t str) -> &'t str {
        &text[self.properties_start as usize..self.end as usize]
    }
}

impl Record for EventRow {
    const REQUIRED: &'static [&'static str] = &["customer", "event", "at"];
    const OPTIONAL: Option<&'static [&'static str]> = None;

    fn parse(mut fields: Fields, text: &mut String) -> Result<Self, String> {
        let customer = fields.required_text("customer")?;
        let name = fields.required_text("event")?;
        let at = fields.required_time("at")?.timestamp_millis();
        // In CSV the other columns are the properties; in JSON they are under `properties`.
        let properties = match fields.format {
            Format::Csv => Some(fields),
            Format::JsonLines => {
                let properties = fields.take("properties");
                fields.finish(" (event properties go under `properties`)")?;
                json_properties(properties)?
            }
        };
        EventRow::write(text, &customer, &name, at, |text| {
            write_properties(properties, text)
        })
    }

    /// Most lines have the shape [`WrittenEvent`] reads in one scan; most others the shape
    /// [`PlainEvent`] reads, without the cost of [`Fields`].
    fn parse_json(line: &str, text: &mut String) -> Result<Self, String> {
        let kept = |text: &mut String, customer, name, at, properties: &str| {
            EventRow::write(text, customer, name, at, |text| {
                text.push_str(properties);
                Ok(())
            })
        };
        if let Some(event) = WrittenEvent::read(line) {
            return kept(
                text,
                event.customer,
                event.event,
                event.at,
                event.properties,
            );
        }
        let Some(event) = PlainEvent::read(line) else {
            return Fields::from_json(line).and_then(|fields| Self::parse(fields, text));
        };
        if let Some(Field::Json(raw)) = event.properties {
            if is_written_object(raw.get()) {
                return kept(text, event.customer, event.event, event.at, raw.get());
            }
        }
        let properties = json_properties(event.properties)?;
        EventRow::write(text, event.customer, event.event, event.at, |text| {
            write_properties(properties, text)
        })
    }

    fn sink<'t>(tx: &'t Tx<'t>, _: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Box::new(Bulk {
            tx,
            sorter: Sorter::default(),
        })
    }
}

/// The members of a JSON event's `properties` (JSON `null` counts as none).
fn json_properties(properties: Option<Field>) -> Result<Option<Fields>, String> {
    Ok(properties
        .map(|p| p.object("properties"))
        .transpose()?
        .flatten())
}

fn write_properties(properties: Option<Fields>, text: &mut String) -> Result<(), String> {
    match properties {
        Some(properties) => properties.write_object("property", Nulls::Drop, text),
        None => {
            text.push_str("{}");
            Ok(())
        }
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

    fn parse(mut fields: Fields, _: &mut String) -> Result<Self, String> {
        let tag = TagRow {
            customer: fields.required_text("customer")?.into_owned(),
            tag: fields.required_text("tag")?.into_owned(),
            at: fields.optional_time("at")?,
        };
        fields.finish("")?;
        Ok(tag)
    }

    fn prepare(batch: &mut [Self]) {
        order(batch, |row| &row.customer);
    }

    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Direct::boxed(tx, options, |rows: &[Self], tx, options| {
            for row in rows {
                tx.add_tag(&row.customer, &row.tag, row.at.unwrap_or(options.now))?;
            }
            Ok(())
        })
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

    fn parse(mut fields: Fields, _: &mut String) -> Result<Self, String> {
        let row = EmployeeRow {
            customer: fields.required_text("customer")?.into_owned(),
            employee: fields.required_text("employee")?.into_owned(),
            added_at: fields.required_time("added_at")?,
        };
        fields.finish("")?;
        Ok(row)
    }

    fn prepare(batch: &mut [Self]) {
        order(batch, |row| &row.customer);
    }

    fn sink<'t>(tx: &'t Tx<'t>, options: &'t ImportOptions) -> Box<dyn Sink<Self> + 't> {
        Direct::boxed(tx, options, |rows: &[Self], tx, _| {
            rows.iter()
                .try_for_each(|row| tx.add_employee(&row.customer, &row.employee, row.added_at))
        })
    }
}

/// A batch ends after this many rows or this many bytes of lines, whichever comes first: large
/// enough to amortise the hand-over, small enough to keep memory flat whatever the size of the
/// rows (each parsing thread holds a block of lines and a batch, one of each waits for it and
/// for the writer, and the writer holds a batch).
const BATCH_ROWS: usize = 65_536;
const BATCH_BYTES: usize = 4 << 20;

/// The rows of a stretch of the file, parsed.
struct Batch<R> {
    rows: Vec<R>,
    /// The text of rows that keep it here (see [`Record::parse`]).
    text: String,
    bad: Vec<BadRow>,
    /// Bytes of the file read by the end of the batch.
    read: u64,
}

impl<R: Record> Batch<R> {
    fn new() -> Self {
        Batch {
            rows: Vec::with_capacity(BATCH_ROWS),
            text: String::new(),
            bad: Vec::new(),
            read: 0,
        }
    }

    /// Adds the row `parse` reads (appending to the batch's text), or the reason it is bad.
    fn add(&mut self, line: u64, parse: impl FnOnce(&mut String) -> Result<R, String>) {
        let mark = self.text.len();
        match parse(&mut self.text) {
            Ok(row) => self.rows.push(row),
            Err(reason) => {
                self.text.truncate(mark);
                self.bad.push(BadRow { line, reason });
            }
        }
    }

    fn len(&self) -> usize {
        self.rows.len() + self.bad.len()
    }
}

/// How JSON Lines are split for parsing: blocks of at most `lines` lines, parsed on `parsers`
/// threads.
#[derive(Clone, Copy, Debug)]
struct Split {
    lines: usize,
    parsers: usize,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            lines: BATCH_ROWS,
            parsers: thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

fn import_records<R: Record>(
    store: &mut Store,
    input: ImportFile,
    options: ImportOptions,
    observer: &mut dyn ImportObserver,
    split: Split,
) -> Result<ImportSummary, ImportError> {
    let bulk = input.size().is_some_and(|size| size >= BULK_FILE_BYTES);
    let ImportFile { path, format, file } = input;
    let import = |tx: &Tx| {
        let (read, written) = thread::scope(|scope| {
            let (lanes, reader) = start_reading::<R>(scope, format, file, split);
            let written = write_rows(tx, lanes, &options, observer);
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
    };
    if bulk {
        store.bulk_transaction(import)
    } else {
        store.transaction(import)
    }
}

/// From what size on an import file is a bulk load, written through a rollback journal (see
/// [`Store::bulk_transaction`]; measured on the benchmark's 20M events, 2.16 GB: 22.6–25.5 s
/// against 26.1–27.0 s through the WAL, 4 alternating pairs, 2 of them before the journal got
/// `synchronous = FULL`). Smaller imports, such as a
/// day's new events, keep the WAL: readers of the store never wait for them.
const BULK_FILE_BYTES: u64 = 64 << 20;

/// Where the writer takes batches from, and hands them back for reuse once written.
type Lane<R> = (Receiver<Batch<R>>, Sender<Batch<R>>);

/// Where a parsing thread hands its batches over, and takes written ones back to refill.
struct Outbox<R> {
    out: SyncSender<Batch<R>>,
    recycled: Receiver<Batch<R>>,
}

impl<R: Record> Outbox<R> {
    fn new() -> (Self, Lane<R>) {
        let (out, batches) = sync_channel(1);
        let (recycler, recycled) = channel();
        (Outbox { out, recycled }, (batches, recycler))
    }

    /// An empty batch: a written one if any is back.
    fn empty(&self) -> Batch<R> {
        match self.recycled.try_recv() {
            Ok(mut batch) => {
                batch.text.clear();
                batch.bad.clear();
                batch
            }
            Err(_) => Batch::new(),
        }
    }

    /// Readies the batch (read up to `read`) for its sink and hands it over.
    fn send(&self, mut batch: Batch<R>, read: u64) -> Result<(), ReadError> {
        batch.read = read;
        R::prepare(&mut batch.rows);
        self.out.send(batch).map_err(|_| ReadError::WriterGone)
    }
}

/// Starts the threads that read and parse the file. Returns the lanes their batches come out
/// of (taking one batch from each in turn gives them in file order) and the reading thread.
///
/// JSON Lines are split into blocks of lines, parsed on as many threads as there are cores,
/// which take the blocks in turn. CSV records may span lines, so a CSV file is read and parsed
/// on one thread.
fn start_reading<'s, R: Record>(
    scope: &'s thread::Scope<'s, '_>,
    format: Format,
    file: File,
    split: Split,
) -> (Vec<Lane<R>>, ScopedJoinHandle<'s, Result<(), ReadError>>) {
    match format {
        Format::Csv => {
            let (outbox, lane) = Outbox::new();
            (vec![lane], scope.spawn(move || read_csv(file, outbox)))
        }
        Format::JsonLines => {
            let (spare, spares) = channel();
            let (mut blocks, mut lanes) = (Vec::new(), Vec::new());
            for _ in 0..split.parsers {
                let (sender, receiver) = sync_channel(1);
                let (outbox, lane) = Outbox::new();
                let spare = spare.clone();
                scope.spawn(move || parse_blocks::<R>(receiver, spare, outbox));
                blocks.push(sender);
                lanes.push(lane);
            }
            let reader = scope.spawn(move || read_blocks(file, split.lines, blocks, spares));
            (lanes, reader)
        }
    }
}

/// Writes the batches as they come. After the first bad row of a strict import, rows are no
/// longer written (they will be rolled back) but bad rows are still reported.
fn write_rows<R: Record>(
    tx: &Tx,
    lanes: Vec<Lane<R>>,
    options: &ImportOptions,
    observer: &mut dyn ImportObserver,
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let mut sink = R::sink(tx, options);
    // The lane after the last batch is the first to close.
    for (batches, recycler) in lanes.iter().cycle() {
        let Ok(mut batch) = batches.recv() else {
            break;
        };
        for bad in &batch.bad {
            observer.bad_row(bad);
        }
        summary.skipped += batch.bad.len() as u64;
        if summary.skipped == 0 || options.skip_invalid {
            summary.imported += batch.rows.len() as u64;
            sink.write(&mut batch.rows, &batch.text)?;
        }
        observer.progress(batch.read);
        batch.rows.clear();
        // Once the parser has finished, the batch is simply dropped.
        let _ = recycler.send(batch);
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

/// Lines longer than this are bad rows, read past without being held in memory.
const MAX_LINE: usize = 16 << 20;

/// Lines of a JSON Lines file, read in one go for a parsing thread.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    /// Where each line ends in `bytes` (without its line ending).
    ends: Vec<usize>,
    /// The number of the block's first line.
    first_line: u64,
    /// Bytes of the file read by the end of the block.
    read: u64,
}

impl Block {
    /// Reads up to `lines` lines (and about a batch's bytes), starting at line `first_line`,
    /// `read` bytes into the file; false at the end of the file.
    fn fill(
        &mut self,
        reader: &mut impl BufRead,
        lines: usize,
        first_line: u64,
        read: u64,
    ) -> io::Result<bool> {
        self.bytes.clear();
        self.ends.clear();
        self.first_line = first_line;
        self.read = read;
        while self.ends.len() < lines && self.bytes.len() < BATCH_BYTES {
            let Some(length) = read_line(reader, &mut self.bytes)? else {
                break;
            };
            self.read += length;
            self.ends.push(self.bytes.len());
        }
        Ok(!self.ends.is_empty())
    }

    /// Each line with its number.
    fn lines(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        (self.first_line..)
            .zip(starts.zip(&self.ends))
            .map(|(line, (start, &end))| (line, &self.bytes[start..end]))
    }
}

/// Reads the file into blocks of up to `lines` lines and hands them to the parsers in turn.
fn read_blocks(
    file: File,
    lines: usize,
    parsers: Vec<SyncSender<Block>>,
    spares: Receiver<Block>,
) -> Result<(), ReadError> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut line, mut read) = (1, 0);
    for parser in parsers.iter().cycle() {
        let mut block = spares.try_recv().unwrap_or_default();
        if !block.fill(&mut reader, lines, line, read)? {
            break;
        }
        line += block.ends.len() as u64;
        read = block.read;
        parser.send(block).map_err(|_| ReadError::WriterGone)?;
    }
    Ok(())
}

/// Parses blocks of lines into batches, handing the blocks back to be refilled.
fn parse_blocks<R: Record>(blocks: Receiver<Block>, spare: Sender<Block>, outbox: Outbox<R>) {
    for block in blocks {
        let mut batch = outbox.empty();
        for (line, bytes) in block.lines() {
            if let Some(text) = json_text(bytes, line == 1) {
                batch.add(line, |buffer| {
                    text.and_then(|text| R::parse_json(text, buffer))
                });
            }
        }
        let read = block.read;
        let _ = spare.send(block);
        if outbox.send(batch, read).is_err() {
            return;
        }
    }
}

/// A line's text; `None` for a blank line.
fn json_text(line: &[u8], first: bool) -> Option<Result<&str, String>> {
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
    (!text.trim().is_empty()).then_some(Ok(text))
}

/// Appends a line to `buffer` without its line ending and returns how many bytes it took, or
/// `None` at the end of the file. A line longer than [`MAX_LINE`] is consumed without being kept
/// whole: only its first `MAX_LINE + 1` bytes are appended.
fn read_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> io::Result<Option<u64>> {
    let start = buffer.len();
    let mut taken = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buffer)? as u64;
    if taken == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        if buffer.len() > start && buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
    } else if buffer.len() - start > MAX_LINE {
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

fn read_csv<R: Record>(file: File, outbox: Outbox<R>) -> Result<(), ReadError> {
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
    let (mut batch, mut started) = (outbox.empty(), 0);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => batch.add(line(record.position()), |text| {
                Fields::from_csv(&header, &record).and_then(|fields| R::parse(fields, text))
            }),
            Err(error) => match error.kind() {
                csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => batch.add(line(pos.as_ref()), |_| {
                    Err(format!("{len} fields, but the header has {expected_len}"))
                }),
                _ => return Err(csv_fatal(error)),
            },
        }
        let read = reader.position().byte();
        if batch.len() >= BATCH_ROWS || read - started >= BATCH_BYTES as u64 {
            outbox.send(std::mem::replace(&mut batch, outbox.empty()), read)?;
            started = read;
        }
    }
    outbox.send(batch, reader.position().byte())
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

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (String, String, i64, String);

    /// An event row as its parts, for comparing.
    fn parts(row: Result<EventRow, String>, text: &str) -> Result<Parts, String> {
        row.map(|row| {
            let (customer, name) = (row.customer(text), row.name(text));
            let properties = row.properties(text);
            (customer.into(), name.into(), row.at, properties.into())
        })
    }

    #[test]
    fn plain_event_lines_read_as_the_general_path_reads_them() {
        let lines = [
            // Plain: properties sorted, nulls dropped, missing or null properties.
            r#"{"customer":"c1","event":"view","at":"2026-03-01T10:00:00+08:00","properties":{"z":1,"a":"x","n":null}}"#,
            r#"{"at":"2026-03-01T02:00:00Z","event":"buy","customer":"c2"}"#,
            r#"{"customer":"c3","event":"buy","at":"2026-03-01T02:00:00Z","properties":null}"#,
            // Not plain: escapes, then a bad row for each reason the plain reader declines one.
            r#"{"customer":"c\u0034","event":"v\"iew","at":"2026-03-01T02:00:00Z","properties":{"k\"ey":1}}"#,
            r#"{"customer":"c5","event":"view","at":"2026-03-01T02:00:00Z","extra":1}"#,
            r#"{"customer":"c6","customer":"c7","event":"view","at":"2026-03-01T02:00:00Z"}"#,
            r#"{"customer":" ","event":"view","at":"2026-03-01T02:00:00Z"}"#,
            r#"{"customer":"c8","event":"view","at":"2026-03-01 02:00"}"#,
            r#"{"customer":"c9","event":"view","at":"2026-03-01T02:00:00Z","properties":{"a":[1]}}"#,
            r#"{"customer":"c9","event":"view","at":"2026-03-01T02:00:00Z","properties":{"a":1,"a":2}}"#,
            r#"{"customer":9,"event":"view","at":"2026-03-01T02:00:00Z"}"#,
            r#"["customer"]"#,
        ];
        for line in lines {
            let (mut plain, mut general) = (String::new(), String::new());
            let row = EventRow::parse_json(line, &mut plain);
            let expected = Fields::from_json(line).and_then(|f| EventRow::parse(f, &mut general));
            assert_eq!(parts(row, &plain), parts(expected, &general), "{line}");
        }
        let mut text = String::new();
        let row = EventRow::parse_json(lines[0], &mut text).unwrap();
        assert_eq!(row.properties(&text), r#"{"a":"x","z":1}"#);
        let row = EventRow::parse_json(lines[3], &mut text).unwrap();
        assert_eq!(
            (row.customer(&text), row.name(&text), row.properties(&text)),
            ("c4", "v\"iew", r#"{"k\"ey":1}"#)
        );
    }

    /// A JSON object's text from its members, with `gap` between every two tokens.
    fn object_text(members: &[(&str, &str)], gap: &str) -> String {
        let members: Vec<String> = members
            .iter()
            .map(|(key, value)| format!("{gap}{key}{gap}:{gap}{value}{gap}"))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    proptest::proptest! {
        // Each case takes microseconds, and the generator's corners are many.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]

        /// Lines read in one scan (see [`WrittenEvent`]) or with their properties kept as they
        /// are written (see [`is_written_object`]) read as the general path reads them: other
        /// key orders, whitespace, escapes, blank texts, bad times, properties out of order or
        /// twice, nulls, nested values and JSON that is not valid all make the general path
        /// write something else, or reject the line.
        #[test]
        fn event_lines_read_as_the_general_path_reads_them(
            members in proptest::collection::vec((
                proptest::sample::select(vec![r#""a""#, r#""b""#, r#""é""#, r#""a\"b""#, r#""\u0062""#]),
                proptest::sample::select(vec![
                    "1", "-2.5e3", "0", "-0", "0.5E-3", "1e+2", r#""x""#, r#""a\"}""#,
                    r#""\\""#, r#""\/\n""#, r#""\u0041""#, "true", "false", "null", "{}",
                    "[1]", r#"{"k":1}"#,
                    // Not JSON:
                    "01", "1.", "-", "1e", "1e+", "+1", ".5", "tru", "nul", r#""\q""#,
                    "\"a\u{1}\"", r#""open"#,
                ]),
            ), 0..4),
            properties_as in 0..3,
            gap in proptest::sample::select(vec!["", "", "", " ", "\n"]),
            customer in proptest::sample::select(vec!["c", "客户", " ", r#"c\"1"#, "c\u{7}"]),
            at in proptest::sample::select(vec![
                "2026-03-01T02:00:00Z", "2026-03-01T10:00:00.5+08:00", "2026-03-01 02:00", "",
            ]),
            reordered in proptest::bool::ANY,
        ) {
            let properties = object_text(&members, gap);
            let mut fields = vec![
                (r#""customer""#, format!(r#""{customer}""#)),
                (r#""event""#, r#""view""#.to_owned()),
                (r#""at""#, format!(r#""{at}""#)),
            ];
            match properties_as {
                0 => fields.push((r#""properties""#, properties.clone())),
                1 => fields.push((r#""properties""#, "null".to_owned())),
                _ => {}
            }
            if reordered {
                fields.rotate_left(1);
            }
            let fields: Vec<_> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let line = object_text(&fields, "");
            let (mut plain, mut general) = (String::new(), String::new());
            let row = EventRow::parse_json(&line, &mut plain);
            let expected = Fields::from_json(&line).and_then(|f| EventRow::parse(f, &mut general));
            proptest::prop_assert_eq!(parts(row, &plain), parts(expected, &general), "{}", line);
            if properties_as == 0 && is_written_object(&properties) {
                proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&properties).is_ok());
                if let Ok(row) = EventRow::parse_json(&line, &mut plain) {
                    proptest::prop_assert_eq!(row.properties(&plain), properties.as_str());
                }
            }
        }
    }

    #[test]
    fn properties_are_kept_as_written_only_when_writing_them_again_changes_nothing() {
        let kept = [
            r#"{}"#,
            r#"{"a":1,"b":"x\"}","c":true}"#,
            r#"{"a":-1.5e3,"é":false}"#,
        ];
        let rewritten = [
            r#"{ }"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":null}"#,
            r#"{"a":{}}"#,
            r#"{"a":[1]}"#,
            r#"{"a" :1}"#,
            r#"{"a":1 }"#,
            r#"{"\u0061":1}"#,
            r#"{"a":"\u0061"}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x}"#,
            r#"[]"#,
            r#""{}""#,
        ];
        for raw in kept {
            assert!(is_written_object(raw), "{raw}");
        }
        for raw in rewritten {
            assert!(!is_written_object(raw), "{raw}");
        }
    }

    /// Collects the lines of bad rows.
    #[derive(Default)]
    struct BadLines(Vec<u64>);

    impl ImportObserver for BadLines {
        fn bad_row(&mut self, row: &BadRow) {
            self.0.push(row.line);
        }

        fn progress(&mut self, _: u64) {}
    }

    #[test]
    fn lines_parsed_in_parallel_keep_their_numbers_and_file_order() {
        // Eleven events of one customer at one instant, with bad and blank lines among them;
        // blocks of two lines on three parsers make every parser take several blocks.
        let event =
            |n: usize| format!(r#"{{"customer":"c","event":"e{n}","at":"2026-03-01T02:00:00Z"}}"#);
        let mut lines: Vec<String> = (0..11).map(event).collect();
        lines.insert(3, "{".into());
        lines.insert(6, String::new());
        lines.insert(9, r#"{"customer":"c"}"#.into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let options = ImportOptions {
            skip_invalid: true,
            now: Utc::now(),
        };
        let mut bad = BadLines::default();
        let split = Split {
            lines: 2,
            parsers: 3,
        };
        let file = ImportFile::open(&path).unwrap();
        let summary = import_records::<EventRow>(&mut store, file, options, &mut bad, split);
        assert_eq!(summary.unwrap().imported, 11);
        assert_eq!(bad.0, [4, 10]);
        let events = store.scratch(|tx| tx.events_for_customer("c", ..)).unwrap();
        let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
        let expected: Vec<_> = (0..11).map(|n| format!("e{n}")).collect();
        assert_eq!(names, expected);
    }
}
