//! Bulk loading of events, for imports: histories are stored by customer, while files arrive in
//! time order, so every batch of a file touches every customer. Instead of updating each
//! customer's history once per batch, an import sorts all its events by (customer, time) — in
//! runs of bounded size, spilled to temporary files — and merges the runs at the end, which
//! writes each customer's history once, in storage order. Memory stays flat in the size of the
//! file (two runs — one filling while the one before is sorted and spilled on a thread of its
//! own — plus a read buffer per spilled run).
//!
//! A run keeps its events' text in one buffer, with their names already interned, so that
//! holding, sorting and spilling an event allocates nothing. The merge runs on a thread of its
//! own and hands whole histories to the transaction's thread, so merging overlaps SQLite's work.

use std::cmp::Ordering;
use std::collections::binary_heap::PeekMut;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread;

use super::history::{self, Chunk};
use super::import::EventRow;
use super::schema::HISTORIES_BY_TIME;
use super::{StoreError, Tx};

/// A run is sorted and spilled once its text and rows reach this many bytes. Two are held at a
/// time (see [`Sorter::spill`]), as much as one run of twice the size.
const RUN_BYTES: usize = 32 << 20;
/// Buffer of each spilled run while merging: a large import has a few dozen runs.
const READ_BUFFER: usize = 256 << 10;
/// Histories handed from the merging thread to the writing one at a time, and handovers in
/// flight: enough to keep both threads busy, few enough to keep memory flat.
const HANDOVER: usize = 4096;
const HANDOVERS_IN_FLIGHT: usize = 2;
/// An import of at least this many events into a store with fewer histories than it has events
/// drops the index of histories by time and builds it again once they are written. Inserting
/// each history's entry where it belongs in that index took a third of the CPU time of an
/// import of 20M events into a store without histories (31.6 s user against 25.4 s without the
/// index), and building it afterwards, from the written histories, took 1.7 s. A small import
/// into a large store keeps the index: building it again would cost more than it touches.
const REBUILD_INDEX_FROM: u64 = 100_000;

/// Why a bulk load failed.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("cannot use a temporary file for sorting the events: {0}")]
    TempFile(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Collects an import's events and writes them to the store at the end.
pub(super) struct Sorter {
    run: Run,
    /// The run is spilled when its size reaches this.
    budget: usize,
    spilled: Vec<File>,
    /// The run before, being sorted and written to its file on a thread of its own.
    spilling: Option<thread::JoinHandle<io::Result<(File, Run)>>>,
    /// How many events were pushed.
    events: u64,
    /// See [`REBUILD_INDEX_FROM`].
    rebuild_index_from: u64,
}

impl Default for Sorter {
    fn default() -> Self {
        Sorter::with_budget(RUN_BYTES)
    }
}

impl Sorter {
    fn with_budget(budget: usize) -> Self {
        Sorter {
            run: Run::default(),
            budget,
            spilled: Vec::new(),
            spilling: None,
            events: 0,
            rebuild_index_from: REBUILD_INDEX_FROM,
        }
    }

    /// Takes the rows (in file order, their text in `text`) out of `rows`, interning their names
    /// in the transaction.
    pub(super) fn push(
        &mut self,
        tx: &Tx,
        rows: &mut Vec<EventRow>,
        text: &str,
    ) -> Result<(), BulkError> {
        if !self.run.fits(text.len()) {
            self.spill()?;
        }
        self.events += rows.len() as u64;
        let mut names = tx.names.borrow_mut();
        for row in rows.drain(..) {
            let name = names.intern(&tx.tx, row.name(text))?;
            self.run
                .push(row.customer(text), name, row.at, row.properties(text));
        }
        drop(names);
        if self.run.size() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the full run to a thread that sorts it and writes it to a file, and goes on with
    /// the run before's buffers. Sorting and writing a run on the transaction's thread stopped
    /// it taking batches for that long, and the parsing threads with it once their one batch
    /// in flight was parsed: both cores were busy three quarters of the time (`perf`, samples
    /// by quarter second, dips at every spill).
    fn spill(&mut self) -> io::Result<()> {
        let emptied = self.wait_for_spill()?.unwrap_or_default();
        let full = std::mem::replace(&mut self.run, emptied);
        let spilling = thread::Builder::new()
            .name("nudge-spill".into())
            .spawn(move || spill_run(full))?;
        self.spilling = Some(spilling);
        Ok(())
    }

    /// Waits for the run being spilled, if any, keeps its file and returns its emptied buffers.
    fn wait_for_spill(&mut self) -> io::Result<Option<Run>> {
        let Some(spilling) = self.spilling.take() else {
            return Ok(None);
        };
        let (file, run) = spilling
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        self.spilled.push(file);
        Ok(Some(run))
    }

    /// Merges the runs and adds each customer's events to its history, with ids in (customer,
    /// time, file) order. Returns how many events were written.
    pub(super) fn finish(mut self, tx: &Tx) -> Result<u64, BulkError> {
        self.wait_for_spill()?;
        self.run.sort();
        let mut cursors: Vec<Cursor> = (self.spilled.into_iter())
            .map(|file| Source::File(BufReader::with_capacity(READ_BUFFER, file)))
            .chain([Source::Memory(self.run, 0)])
            .enumerate()
            .map(|(run, source)| Cursor::new(run, source))
            .collect();
        let first_id = tx.take_event_ids(0)?;
        let rebuild =
            self.events >= self.rebuild_index_from && histories_fewer_than(tx, self.events)?;
        if rebuild {
            index_histories_by_time(tx, false)?;
        }
        let (sender, receiver) = sync_channel(HANDOVERS_IN_FLIGHT);
        let (recycler, recycled) = channel();
        let (merged, written) = thread::scope(|scope| {
            let merger = scope
                .spawn(move || merge(std::mem::take(&mut cursors), first_id, sender, recycled));
            let written = write(tx, receiver, recycler);
            let merged = merger
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (merged, written)
        });
        // A failed read explains a short write, so it comes first.
        let (next_id, count) = merged?;
        written?;
        if rebuild {
            index_histories_by_time(tx, true)?;
        }
        tx.next_event_id.set(Some(next_id));
        Ok(count)
    }
}

/// Whether the store holds fewer than `count` histories (a scan of their index by time, ~10 ms
/// for a million once its pages are cached).
fn histories_fewer_than(tx: &Tx, count: u64) -> Result<bool, StoreError> {
    let fewer = tx.tx.query_row(
        "SELECT count(*) < ?1 FROM event_histories",
        [count as i64],
        |row| row.get(0),
    )?;
    Ok(fewer)
}

/// Builds the index of histories by time, or drops it.
fn index_histories_by_time(tx: &Tx, present: bool) -> Result<(), StoreError> {
    let sql = if present {
        HISTORIES_BY_TIME
    } else {
        "DROP INDEX event_histories_by_time"
    };
    Ok(tx.tx.execute_batch(sql)?)
}

/// Sorts a run and writes it to a temporary file, read from its start; returns the file and
/// the run, emptied for reuse.
fn spill_run(mut run: Run) -> io::Result<(File, Run)> {
    run.sort();
    let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
    for row in &run.rows {
        run.event(row).write(&mut out)?;
    }
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    io::Seek::rewind(&mut file)?;
    run.clear();
    Ok((file, run))
}

/// Events held in memory: their customers and properties in one buffer, appended in file order.
#[derive(Default)]
struct Run {
    text: Vec<u8>,
    rows: Vec<RunRow>,
}

/// An event of a run. The customer's [`prefix`] is kept inline, so that sorting seldom looks at
/// the text.
struct RunRow {
    prefix: u128,
    at: i64,
    /// The customer is `text[start..properties]`, the properties `text[properties..end]`.
    start: u32,
    properties: u32,
    end: u32,
    name: u32,
}

impl Run {
    /// Whether `more` bytes of text still fit (offsets into the text are 32-bit).
    fn fits(&self, more: usize) -> bool {
        self.text.len() + more <= u32::MAX as usize
    }

    fn size(&self) -> usize {
        self.text.len() + self.rows.len() * std::mem::size_of::<RunRow>()
    }

    fn push(&mut self, customer: &str, name: u32, at: i64, properties: &str) {
        let offset = |text: &Vec<u8>| text.len() as u32;
        let start = offset(&self.text);
        self.text.extend_from_slice(customer.as_bytes());
        let middle = offset(&self.text);
        self.text.extend_from_slice(properties.as_bytes());
        self.rows.push(RunRow {
            prefix: prefix(customer.as_bytes()),
            at,
            start,
            properties: middle,
            end: offset(&self.text),
            name,
        });
    }

    /// Sorts the rows by (customer, time, file order): text is appended in file order, so a
    /// row's start tells it.
    fn sort(&mut self) {
        let text = &self.text;
        let customer = |row: &RunRow| {
            (
                row.prefix,
                &text[row.start as usize..row.properties as usize],
            )
        };
        self.rows.sort_unstable_by(|a, b| {
            compare_customers(customer(a), customer(b))
                .then(a.at.cmp(&b.at))
                .then(a.start.cmp(&b.start))
        });
    }

    fn event(&self, row: &RunRow) -> Event<'_> {
        let (start, middle, end) = (
            row.start as usize,
            row.properties as usize,
            row.end as usize,
        );
        Event {
            customer: &self.text[start..middle],
            properties: &self.text[middle..end],
            name: row.name,
            at: row.at,
        }
    }

    /// Empties the run, keeping its memory for the next one.
    fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
    }
}

/// A customer's first 16 bytes, big-endian (so that integer order is byte order).
fn prefix(customer: &[u8]) -> u128 {
    let mut prefix = [0; 16];
    let length = customer.len().min(16);
    prefix[..length].copy_from_slice(&customer[..length]);
    u128::from_be_bytes(prefix)
}

/// Two customers in byte order, given with their [`prefix`]es: the prefixes decide unless they
/// are equal, and then customers of up to 16 bytes differ by their lengths only.
fn compare_customers(a: (u128, &[u8]), b: (u128, &[u8])) -> Ordering {
    a.0.cmp(&b.0).then_with(|| match a.1.len().max(b.1.len()) {
        ..=16 => a.1.len().cmp(&b.1.len()),
        _ => a.1.cmp(b.1),
    })
}

/// An event as a run holds it. Spilled, it is a fixed header (the lengths of the customer and
/// of the properties, the name and the time, little-endian) followed by the two texts.
struct Event<'a> {
    customer: &'a [u8],
    properties: &'a [u8],
    name: u32,
    at: i64,
}

const HEADER: usize = 20;

impl Event<'_> {
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut header = [0; HEADER];
        header[..4].copy_from_slice(&(self.customer.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(self.properties.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&self.name.to_le_bytes());
        header[12..].copy_from_slice(&self.at.to_le_bytes());
        out.write_all(&header)?;
        out.write_all(self.customer)?;
        out.write_all(self.properties)
    }
}

/// Merges the runs into histories, numbering the events from `next_id`, and hands them over in
/// batches. Returns the next unused id and how many events were merged.
fn merge(
    cursors: Vec<Cursor>,
    mut next_id: i64,
    out: SyncSender<Histories>,
    recycled: Receiver<Histories>,
) -> io::Result<(i64, u64)> {
    let mut heap = BinaryHeap::with_capacity(cursors.len());
    for mut cursor in cursors {
        if cursor.advance()? {
            heap.push(cursor);
        }
    }
    let first_id = next_id;
    let mut batch = Histories::default();
    while let Some(mut top) = heap.peek_mut() {
        if batch
            .current()
            .is_none_or(|h| h.customer.as_bytes() != top.customer)
        {
            if batch.len == HANDOVER {
                let next = recycled.try_recv().unwrap_or_default();
                if out.send(std::mem::replace(&mut batch, next)).is_err() {
                    // The writer failed, and says why.
                    break;
                }
            }
            batch.start(&top.customer)?;
        }
        let history = batch.current().expect("a history was started");
        history
            .chunk
            .push(top.at, next_id, top.name, &top.properties);
        next_id += 1;
        if !top.advance()? {
            PeekMut::pop(top);
        }
    }
    let _ = out.send(batch);
    Ok((next_id, (next_id - first_id) as u64))
}

/// Writes the merged histories as they come, handing each batch back for reuse.
fn write(
    tx: &Tx,
    batches: Receiver<Histories>,
    recycler: Sender<Histories>,
) -> Result<(), StoreError> {
    for mut batch in batches {
        for history in &batch.histories[..batch.len] {
            history::create_or_extend(&tx.tx, &history.customer, &history.chunk)?;
        }
        batch.len = 0;
        let _ = recycler.send(batch);
    }
    Ok(())
}

/// Customers' merged events, in storage order. Histories past `len` are spare, kept for their
/// memory.
#[derive(Default)]
struct Histories {
    histories: Vec<History>,
    len: usize,
}

#[derive(Default)]
struct History {
    customer: String,
    chunk: Chunk,
}

impl Histories {
    fn start(&mut self, customer: &[u8]) -> io::Result<()> {
        if self.len == self.histories.len() {
            self.histories.push(History::default());
        }
        let history = &mut self.histories[self.len];
        history.customer.clear();
        history
            .customer
            .push_str(std::str::from_utf8(customer).map_err(io::Error::other)?);
        history.chunk.clear();
        self.len += 1;
        Ok(())
    }

    fn current(&mut self) -> Option<&mut History> {
        self.histories[..self.len].last_mut()
    }
}

/// A sorted run being merged, positioned on its current event.
struct Cursor {
    /// Which run: among equal (customer, time), earlier runs hold earlier lines of the file.
    run: usize,
    source: Source,
    /// The current event's customer and its [`prefix`].
    customer: Vec<u8>,
    prefix: u128,
    properties: Vec<u8>,
    name: u32,
    at: i64,
}

enum Source {
    /// The last run, not spilled, and its next row.
    Memory(Run, usize),
    File(BufReader<File>),
}

impl Cursor {
    fn new(run: usize, source: Source) -> Self {
        Cursor {
            run,
            source,
            customer: Vec::new(),
            prefix: 0,
            properties: Vec::new(),
            name: 0,
            at: 0,
        }
    }

    /// Moves to the next event; false at the end of the run.
    fn advance(&mut self) -> io::Result<bool> {
        match &mut self.source {
            Source::Memory(run, next) => {
                let Some(row) = run.rows.get(*next) else {
                    return Ok(false);
                };
                *next += 1;
                let event = run.event(row);
                self.customer.clear();
                self.customer.extend_from_slice(event.customer);
                self.properties.clear();
                self.properties.extend_from_slice(event.properties);
                (self.name, self.at) = (event.name, event.at);
            }
            Source::File(reader) => {
                if reader.fill_buf()?.is_empty() {
                    return Ok(false);
                }
                let mut header = [0; HEADER];
                reader.read_exact(&mut header)?;
                let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
                read_exactly(reader, &mut self.customer, word(0))?;
                read_exactly(reader, &mut self.properties, word(4))?;
                self.name = word(8);
                self.at = i64::from_le_bytes(header[12..].try_into().unwrap());
            }
        }
        self.prefix = prefix(&self.customer);
        Ok(true)
    }

    fn customer(&self) -> (u128, &[u8]) {
        (self.prefix, &self.customer)
    }
}

fn read_exactly(reader: &mut impl Read, buffer: &mut Vec<u8>, length: u32) -> io::Result<()> {
    buffer.resize(length as usize, 0);
    reader.read_exact(buffer)
}

// The heap is a max-heap: the smallest key is the greatest cursor.
impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_customers(other.customer(), self.customer())
            .then(other.at.cmp(&self.at))
            .then(other.run.cmp(&self.run))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cursor {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreError};
    use chrono::DateTime;

    /// A batch of rows (customer, name, time) with properties `{"n":time}`, and its text.
    fn batch(rows: &[(&str, &str, i64)]) -> (Vec<EventRow>, String) {
        let mut text = String::new();
        let rows = rows
            .iter()
            .map(|&(customer, name, at)| {
                EventRow::write(&mut text, customer, name, at, |text| {
                    text.push_str(&format!("{{\"n\":{at}}}"));
                    Ok(())
                })
                .unwrap()
            })
            .collect();
        (rows, text)
    }

    /// Customers as the store has them: (name, at) of each event, in id order.
    fn histories(store: &mut Store, customers: &[&str]) -> Vec<Vec<(String, i64)>> {
        store
            .scratch(|tx| {
                customers
                    .iter()
                    .map(|c| {
                        let events = tx.events_for_customer(c, ..)?;
                        assert!(events.windows(2).all(|p| p[0].id < p[1].id), "{c}");
                        Ok(events
                            .into_iter()
                            .map(|e| (e.name, e.at.timestamp_millis()))
                            .collect())
                    })
                    .collect::<Result<_, StoreError>>()
            })
            .unwrap()
    }

    #[test]
    fn spilled_runs_merge_into_histories_in_time_then_file_order() {
        // Rows in file order: time order overall, with ties at one instant across batches, a
        // late event out of order, and customers whose ids share a 16-byte prefix.
        let long = "customer-with-a-long-id-";
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        let file = [
            (a.as_str(), "view", 10),
            ("c", "view", 10),
            (b.as_str(), "buy", 20),
            ("c", "first", 30),
            (a.as_str(), "share", 30),
            ("c", "second", 30),
            ("c", "late", 5),
            ("c", "third", 30),
            (b.as_str(), "view", 40),
        ];
        // A budget of one byte spills every batch: each batch of two rows is its own run (and
        // the last one is merged from memory).
        let mut store = Store::open_in_memory().unwrap();
        let written = store
            .transaction(|tx| {
                let mut sorter = Sorter::with_budget(1);
                for rows in file.chunks(2) {
                    let (mut rows, text) = batch(rows);
                    sorter.push(tx, &mut rows, &text)?;
                }
                let spilling = usize::from(sorter.spilling.is_some());
                assert_eq!(
                    sorter.spilled.len() + spilling,
                    5,
                    "spilled, or being spilled"
                );
                sorter.finish(tx)
            })
            .unwrap();
        assert_eq!(written, file.len() as u64);
        let named = |events: &[(&str, i64)]| {
            events
                .iter()
                .map(|&(n, at)| (n.to_owned(), at))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            histories(&mut store, &[&a, &b, "c"]),
            [
                named(&[("view", 10), ("share", 30)]),
                named(&[("buy", 20), ("view", 40)]),
                named(&[
                    ("late", 5),
                    ("view", 10),
                    ("first", 30),
                    ("second", 30),
                    ("third", 30)
                ]),
            ]
        );
    }

    proptest::proptest! {
        /// However the file's lines fall into runs, each customer's history holds its events in
        /// time order, then file order: what one stable sort of the file gives.
        #[test]
        fn any_number_of_runs_merge_as_one_sort(
            file in proptest::collection::vec((0..5usize, 0..4i64), 0..60),
            cuts in proptest::collection::vec(1..8usize, 1..20),
        ) {
            let customers = ["a", "b", "c", "customer-with-a-long-id-1", "customer-with-a-long-id-2"];
            let names: Vec<String> = (0..file.len()).map(|line| format!("e{line}")).collect();
            let rows: Vec<(&str, &str, i64)> = file
                .iter()
                .zip(&names)
                .map(|(&(customer, at), name)| (customers[customer], name.as_str(), at))
                .collect();
            let mut store = Store::open_in_memory().unwrap();
            store
                .transaction(|tx| {
                    // A budget of one byte spills every batch: each is a run of its own.
                    let mut sorter = Sorter::with_budget(1);
                    let mut rest = &rows[..];
                    for &cut in cuts.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let (batch_rows, more) = rest.split_at(cut.min(rest.len()));
                        let (mut rows, text) = batch(batch_rows);
                        sorter.push(tx, &mut rows, &text)?;
                        rest = more;
                    }
                    sorter.finish(tx)
                })
                .unwrap();
            let expected: Vec<Vec<(String, i64)>> = customers
                .iter()
                .map(|customer| {
                    let mut events: Vec<_> = rows
                        .iter()
                        .filter(|(c, _, _)| c == customer)
                        .map(|&(_, name, at)| (name.to_owned(), at))
                        .collect();
                    events.sort_by_key(|&(_, at)| at);
                    events
                })
                .collect();
            proptest::prop_assert_eq!(histories(&mut store, &customers), expected);
        }
    }

    #[test]
    fn a_second_import_appends_to_and_merges_into_histories() {
        let mut store = Store::open_in_memory().unwrap();
        for file in [
            &[("c", "a", 10), ("c", "b", 30)],
            &[("c", "c", 40), ("c", "d", 20)],
        ] {
            let (mut rows, text) = batch(file);
            store
                .transaction(|tx| {
                    let mut sorter = Sorter::default();
                    sorter.push(tx, &mut rows, &text)?;
                    sorter.finish(tx)
                })
                .unwrap();
        }
        let expected = [("a", 10), ("d", 20), ("b", 30), ("c", 40)];
        let expected: Vec<_> = expected.iter().map(|&(n, at)| (n.to_owned(), at)).collect();
        let events = store.scratch(|tx| tx.events_for_customer("c", ..)).unwrap();
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.name.clone(), e.at.timestamp_millis()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(events[0].properties, r#"{"n":10}"#);
    }

    /// The index SQLite has of the histories by time, and the schema's version, which every
    /// change to the schema bumps.
    fn index_by_time(store: &mut Store) -> (Option<String>, i64) {
        store
            .scratch(|tx| {
                let conn = tx.connection()?;
                let sql = conn.query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'event_histories_by_time'",
                    [],
                    |row| row.get(0),
                );
                let version = conn.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
                Ok::<_, StoreError>((sql.ok(), version))
            })
            .unwrap()
    }

    #[test]
    fn a_large_import_builds_the_index_by_time_again_and_a_small_one_keeps_it() {
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let (sql, mut version) = index_by_time(&mut store);
        assert_eq!(sql.as_deref(), Some(HISTORIES_BY_TIME));
        // (events in the file, whether the index is dropped and built again)
        let imports = [
            (
                &[("a", "view", 10), ("b", "view", 20), ("b", "buy", 30)][..],
                true,
            ),
            // Two histories stored and two events: not fewer histories than events.
            (&[("c", "view", 40), ("a", "buy", 50)][..], false),
        ];
        for (file, rebuilt) in imports {
            let (mut rows, text) = batch(file);
            store
                .transaction(|tx| {
                    let mut sorter = Sorter {
                        rebuild_index_from: 2,
                        ..Sorter::default()
                    };
                    sorter.push(tx, &mut rows, &text)?;
                    sorter.finish(tx)
                })
                .unwrap();
            let (after, version_after) = index_by_time(&mut store);
            assert_eq!(after, sql, "the same index");
            let changes = if rebuilt { 2 } else { 0 };
            assert_eq!(
                version_after - version,
                changes,
                "dropped and created: {rebuilt}"
            );
            version = version_after;
        }
        let mut found = |after, until| {
            store
                .scratch(|tx| tx.customers_with_events_between(at(after), at(until)))
                .unwrap()
        };
        assert_eq!(found(0, 100), ["a", "b", "c"]);
        assert_eq!(found(30, 45), ["c"]);
        assert_eq!(found(45, 50), ["a"]);
        assert_eq!(found(0, 15), ["a"]);
    }
}
