//! Bulk loading of events, for imports: histories are stored by customer, while files arrive in
//! time order, so every batch of a file touches every customer. Instead of updating each
//! customer's history once per batch, an import sorts all its events by (customer, time) — in
//! runs of bounded size, spilled to temporary files — and merges the runs at the end, which
//! writes each customer's history once, in storage order. Memory stays flat in the size of the
//! file (one run, plus a read buffer per spilled run).

use std::collections::binary_heap::PeekMut;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use super::history::{self, unzigzag, write_varint, zigzag, Chunk};
use super::import::EventRow;
use super::{StoreError, Tx};

/// A run is sorted and spilled once the rows held reach this many bytes (counting the rows'
/// own size, their text and the allocator's overhead).
const RUN_BYTES: usize = 64 << 20;
/// Buffer of each spilled run while merging: a large import has a few dozen runs.
const READ_BUFFER: usize = 256 << 10;

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
    run: Vec<EventRow>,
    run_bytes: usize,
    /// The run is spilled when `run_bytes` reaches this.
    budget: usize,
    spilled: Vec<File>,
}

impl Default for Sorter {
    fn default() -> Self {
        Sorter::with_budget(RUN_BYTES)
    }
}

impl Sorter {
    fn with_budget(budget: usize) -> Self {
        Sorter {
            run: Vec::new(),
            run_bytes: 0,
            budget,
            spilled: Vec::new(),
        }
    }

    /// Takes the rows (in file order) out of `rows`.
    pub(super) fn push(&mut self, rows: &mut Vec<EventRow>) -> Result<(), BulkError> {
        if self.run.len() + rows.len() > u32::MAX as usize {
            self.spill()?;
        }
        for row in rows.drain(..) {
            self.run_bytes += row.footprint();
            self.run.push(row);
        }
        if self.run_bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Takes the run, to be read in (customer, time, file) order.
    fn sorted_run(&mut self) -> SortedRun {
        let mut keys: Vec<SortKey> = self.run.iter().enumerate().map(SortKey::new).collect();
        let run = &self.run;
        keys.sort_unstable_by(|a, b| a.cmp(b, run));
        self.run_bytes = 0;
        SortedRun {
            keys: keys.into_iter(),
            // Collected in place: an `Option<EventRow>` is the size of an `EventRow`.
            rows: std::mem::take(&mut self.run)
                .into_iter()
                .map(Some)
                .collect(),
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
        let mut header = Vec::with_capacity(32);
        for row in self.sorted_run() {
            header.clear();
            encode_header(&row, &mut header);
            out.write_all(&header)?;
            out.write_all(row.text.as_bytes())?;
        }
        let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        io::Seek::rewind(&mut file)?;
        self.spilled.push(file);
        Ok(())
    }

    /// Merges the runs and adds each customer's events to its history, with ids in (customer,
    /// time, file) order. Returns how many events were written.
    pub(super) fn finish(mut self, tx: &Tx) -> Result<u64, BulkError> {
        let last = self.sorted_run();
        let mut heap = BinaryHeap::new();
        for (run, file) in self.spilled.into_iter().enumerate() {
            let mut cursor = Cursor::new(
                run,
                Source::File(BufReader::with_capacity(READ_BUFFER, file)),
            );
            if cursor.advance()? {
                heap.push(cursor);
            }
        }
        let count = heap.len();
        let mut memory = Cursor::new(count, Source::Memory(last));
        if memory.advance()? {
            heap.push(memory);
        }
        let mut writer = Writer {
            tx,
            // Ids are taken as events are written (their count is known at the end).
            next_id: tx.take_event_ids(0)?,
            customer: String::new(),
            chunk: Chunk::default(),
            written: 0,
        };
        while let Some(mut top) = heap.peek_mut() {
            writer.add(&top.row)?;
            if !top.advance()? {
                PeekMut::pop(top);
            }
        }
        writer.flush()?;
        tx.next_event_id.set(Some(writer.next_id));
        Ok(writer.written)
    }
}

/// A run's rows, moved out one at a time in key order.
struct SortedRun {
    keys: std::vec::IntoIter<SortKey>,
    rows: Vec<Option<EventRow>>,
}

impl Iterator for SortedRun {
    type Item = EventRow;

    fn next(&mut self) -> Option<EventRow> {
        let key = self.keys.next()?;
        self.rows[key.index as usize].take()
    }
}

/// What a run is sorted by, compact so that sorting moves little: the customer's first 16 bytes
/// (big-endian, so integer order is byte order), the time, and the row's index, which also
/// keeps rows of one customer at one instant in file order. Customers that share their first
/// 16 bytes are compared in full.
struct SortKey {
    prefix: u128,
    at: i64,
    index: u32,
    long: bool,
}

impl SortKey {
    fn new((index, row): (usize, &EventRow)) -> Self {
        let customer = row.customer().as_bytes();
        let mut prefix = [0; 16];
        let length = customer.len().min(16);
        prefix[..length].copy_from_slice(&customer[..length]);
        SortKey {
            prefix: u128::from_be_bytes(prefix),
            at: row.at,
            index: index as u32,
            long: customer.len() >= 16,
        }
    }

    fn cmp(&self, other: &Self, rows: &[EventRow]) -> std::cmp::Ordering {
        let customers = || {
            if self.long && other.long {
                let customer = |key: &SortKey| rows[key.index as usize].customer();
                customer(self).cmp(customer(other))
            } else {
                std::cmp::Ordering::Equal
            }
        };
        self.prefix
            .cmp(&other.prefix)
            .then_with(customers)
            .then(self.at.cmp(&other.at))
            .then(self.index.cmp(&other.index))
    }
}

/// Writes merged events, one history per customer.
struct Writer<'t, 'c> {
    tx: &'t Tx<'c>,
    next_id: i64,
    customer: String,
    chunk: Chunk,
    written: u64,
}

impl Writer<'_, '_> {
    fn add(&mut self, event: &EventRow) -> Result<(), StoreError> {
        if event.customer() != self.customer {
            self.flush()?;
            self.customer.clear();
            self.customer.push_str(event.customer());
        }
        let name = self.intern(event.name())?;
        let properties = event.properties().as_bytes();
        self.chunk.push(event.at, self.next_id, name, properties);
        self.next_id += 1;
        self.written += 1;
        Ok(())
    }

    fn intern(&mut self, name: &str) -> Result<u32, StoreError> {
        self.tx.names.borrow_mut().intern(&self.tx.tx, name)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        history::extend(&self.tx.tx, &self.customer, &self.chunk)?;
        self.chunk.clear();
        Ok(())
    }
}

/// A sorted run being merged, positioned on its current event.
struct Cursor {
    /// Which run: among equal (customer, time), earlier runs hold earlier lines of the file.
    run: usize,
    source: Source,
    row: EventRow,
}

enum Source {
    Memory(SortedRun),
    File(BufReader<File>),
}

impl Cursor {
    fn new(run: usize, source: Source) -> Self {
        Cursor {
            run,
            source,
            row: EventRow::default(),
        }
    }

    /// Moves to the next event; false at the end of the run.
    fn advance(&mut self) -> io::Result<bool> {
        match &mut self.source {
            Source::Memory(rows) => match rows.next() {
                Some(row) => {
                    self.row = row;
                    Ok(true)
                }
                None => Ok(false),
            },
            Source::File(reader) => read_row(reader, &mut self.row),
        }
    }

    fn key(&self) -> (&str, i64, usize) {
        (self.row.customer(), self.row.at, self.run)
    }
}

// The heap is a max-heap: the smallest key is the greatest cursor.
impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Cursor {}

/// A spilled event is its lengths and time, then its text (customer, name, properties).
fn encode_header(row: &EventRow, out: &mut Vec<u8>) {
    write_varint(out, row.name_start as u64);
    write_varint(out, (row.properties_start - row.name_start) as u64);
    write_varint(out, (row.text.len() - row.properties_start) as u64);
    write_varint(out, zigzag(row.at));
}

/// Reads a spilled event into `row`, reusing its text; false at the end of the run.
fn read_row(reader: &mut BufReader<File>, row: &mut EventRow) -> io::Result<bool> {
    let Some(customer) = read_varint_or_end(reader)? else {
        return Ok(false);
    };
    let name = read_varint(reader)?;
    let properties = read_varint(reader)?;
    row.at = unzigzag(read_varint(reader)?);
    let length = customer + name + properties;
    let mut bytes = std::mem::take(&mut row.text).into_bytes();
    bytes.resize(usize::try_from(length).map_err(io::Error::other)?, 0);
    reader.read_exact(&mut bytes)?;
    row.text = String::from_utf8(bytes).map_err(io::Error::other)?;
    row.name_start = customer as usize;
    row.properties_start = (customer + name) as usize;
    Ok(true)
}

fn read_varint(reader: &mut impl BufRead) -> io::Result<u64> {
    read_varint_or_end(reader)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// A varint, or `None` at the end of the input.
fn read_varint_or_end(reader: &mut impl BufRead) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = match reader.fill_buf()?.first() {
            Some(&byte) => byte,
            None if shift == 0 => return Ok(None),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        reader.consume(1);
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::other("a spilled event is damaged"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreError};

    fn row(customer: &str, name: &str, at: i64) -> EventRow {
        let properties = format!("{{\"n\":{at}}}");
        EventRow {
            text: format!("{customer}{name}{properties}"),
            name_start: customer.len(),
            properties_start: customer.len() + name.len(),
            at,
        }
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
        // A budget of one row spills every batch: each batch of two rows is its own run.
        let mut sorter = Sorter::with_budget(1);
        for batch in file.chunks(2) {
            let mut rows = batch.iter().map(|&(c, n, at)| row(c, n, at)).collect();
            sorter.push(&mut rows).unwrap();
        }
        assert_eq!(sorter.spilled.len(), 5);
        let mut store = Store::open_in_memory().unwrap();
        let written = store.transaction(|tx| sorter.finish(tx)).unwrap();
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

    #[test]
    fn a_second_import_appends_to_and_merges_into_histories() {
        let mut store = Store::open_in_memory().unwrap();
        for file in [
            &[("c", "a", 10), ("c", "b", 30)],
            &[("c", "c", 40), ("c", "d", 20)],
        ] {
            let mut sorter = Sorter::default();
            let mut rows = file.iter().map(|&(c, n, at)| row(c, n, at)).collect();
            sorter.push(&mut rows).unwrap();
            store.transaction(|tx| sorter.finish(tx)).unwrap();
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
}
