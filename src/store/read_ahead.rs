//! Reading many customers by id, on a second thread: while the run decides one customer, the
//! next ones are looked up (three B-tree searches each, most pages not in memory yet), which
//! is half of an incremental run's time when done in turn. SQLite steps through a batch of
//! lookups in two statements (see [`read_in_batches`]). (A run that reads everyone reads on
//! its own thread: tried on a second one, it took 10–18% more CPU for no gain in wall time.)
//!
//! The reading thread has its own read-only connection, whose snapshot is the store as the
//! run's transaction found it: the run holds the write lock from its start, so nothing can be
//! committed in between. That is the customer as the run's own transaction sees it too, as
//! long as processing one customer writes only that customer's rows (tags, events, checks) —
//! which is how a run works: tag actions and tag rules change the customer at hand only, and a
//! customer re-read after its own changes is read through the run's transaction.

use std::path::Path;
use std::sync::mpsc;

use fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::{Connection, OpenFlags};

use super::scan::{Evaluated, Fill, Scanned, StoredTag};
use super::{configure_reader, StoreError, Tx};

/// How many customers the reading thread may be ahead of the run: the run's pace varies from
/// customer to customer far more than the reader's (one with deliveries to record takes many
/// times as long as one with none), and with 256 either thread waited for the other for 10–50 ms
/// of a 10,000-customer run; with 4,096 the run waits ~4 ms. At ~1 KB a customer, a few MB.
const AHEAD: usize = 4096;

/// How many customers the reading thread hands over at a time. One at a time, the two threads
/// woke each other for many of them (`perf stat`: 326–3,890 context switches in the
/// benchmark's incremental run, 81–308 with 32; 588,269 when a whole-audience pass of 1M
/// customers was tried on two threads).
const HANDOVER: usize = 32;

/// The reading connection's page cache, in KiB: enough for the upper levels of the three
/// B-trees it searches, which every lookup revisits; the leaves it reads are mostly read once.
/// A cache as large as the writer's (64 MB) is filled with fresh memory page by page, which
/// measured slower (reading 10,000 customers: 200–270 ms against 110–130 ms with 4 MB) and
/// 60 MB heavier.
const READER_CACHE_KIB: u32 = 4096;

/// A customer's rows as stored: its id, whether it was imported, its attributes (JSON text),
/// its tag rows and its packed history (empty without events). Refilled for each customer,
/// reusing buffers.
#[derive(Default)]
struct Rows {
    id: String,
    imported: bool,
    attributes: String,
    /// The first `tag_count` hold this customer's tag rows.
    tags: Vec<TagRow>,
    tag_count: usize,
    history: Vec<u8>,
}

/// A row of `tags` (see [`StoredTag`]), owned.
#[derive(Default)]
struct TagRow {
    tag: String,
    held: bool,
    events: Vec<u8>,
}

impl Rows {
    /// The customer's tag rows.
    fn tags(&self) -> impl Iterator<Item = StoredTag<'_>> {
        self.tags[..self.tag_count].iter().map(|row| StoredTag {
            tag: &row.tag,
            held: row.held,
            events: &row.events,
        })
    }

    /// Reads a tag row of the customer into the next slot.
    fn push_tag(&mut self, tag: StoredTag) {
        if self.tag_count == self.tags.len() {
            self.tags.push(TagRow::default());
        }
        let slot = &mut self.tags[self.tag_count];
        slot.tag.clear();
        slot.tag.push_str(tag.tag);
        slot.held = tag.held;
        slot.events.clear();
        slot.events.extend_from_slice(tag.events);
        self.tag_count += 1;
    }
}

/// How many ids one execution of the reading statements covers.
pub(super) const BATCH: usize = 1024;

/// The customers of a list (a JSON array), in its order: attributes (NULL when never
/// imported) and packed history (NULL without events).
const CUSTOMERS: &str = "SELECT ids.key, c.attributes, h.events
    FROM json_each(?1) AS ids
    LEFT JOIN customers AS c ON c.id = ids.value
    LEFT JOIN event_histories AS h ON h.customer = ids.value";

/// The tag rows of the customers of a list, in its order, then in tag byte order.
const TAGS: &str = "SELECT ids.key, t.tag, t.removed_at IS NULL, t.events FROM json_each(?1) AS ids
    CROSS JOIN tags AS t ON t.customer = ids.value";

/// Reads the rows of `ids` into `rows` one customer after another, in order, calling `each`
/// with each. SQLite steps through the lookups of a whole batch of ids in two statements;
/// three statements per customer cost as much again as the page reads they made (the
/// reading thread's own work, measured).
fn read_in_batches<E: From<StoreError>>(
    conn: &Connection,
    ids: &[String],
    rows: &mut Rows,
    mut each: impl FnMut(&mut Rows) -> Result<(), E>,
) -> Result<(), E> {
    let mut customers = conn.prepare_cached(CUSTOMERS).map_err(StoreError::from)?;
    let mut tags = conn.prepare_cached(TAGS).map_err(StoreError::from)?;
    for batch in ids.chunks(BATCH) {
        let list = serde_json::to_string(batch).expect("strings serialize");
        let mut customer_rows = customers.query([&list]).map_err(StoreError::from)?;
        let mut tag_rows = tags.query([&list]).map_err(StoreError::from)?;
        tag_rows.advance().map_err(StoreError::from)?;
        for (index, id) in (0_i64..).zip(batch) {
            read_customer(customer_rows.next(), index, rows)?;
            rows.id.clone_from(id);
            rows.tag_count = 0;
            while let Some(row) = tag_rows.get() {
                if row.get::<_, i64>(0).map_err(StoreError::from)? != index {
                    break;
                }
                rows.push_tag(StoredTag::of(row)?);
                tag_rows.advance().map_err(StoreError::from)?;
            }
            each(rows)?;
        }
    }
    Ok(())
}

/// The customer row of the `index`th id of a batch, into `rows`.
fn read_customer(
    row: rusqlite::Result<Option<&rusqlite::Row>>,
    index: i64,
    rows: &mut Rows,
) -> Result<(), StoreError> {
    let row = row?.ok_or_else(|| StoreError::Damaged("a customer read went missing".into()))?;
    if row.get::<_, i64>(0)? != index {
        return Err(StoreError::Damaged(
            "customers were read out of order".into(),
        ));
    }
    rows.attributes.clear();
    let attributes = row.get_ref(1)?.as_str_or_null()?;
    rows.imported = attributes.is_some();
    rows.attributes.push_str(attributes.unwrap_or_default());
    rows.history.clear();
    if let Some(history) = row.get_ref(2)?.as_blob_or_null()? {
        rows.history.extend_from_slice(history);
    }
    Ok(())
}

impl Tx<'_> {
    /// Calls `each` with every customer of `ids` that was imported, in that order, as
    /// evaluation reads it (see [`Scanned`]; events of customers never imported are not read
    /// for anyone). The customer is refilled in place for the next one, as in
    /// [`Tx::for_each_evaluated`]. The rows are read on a second thread when the store is a
    /// file, on this thread otherwise; either way `each` runs here.
    pub fn for_customers<E: From<StoreError>>(
        &self,
        ids: &[String],
        each: impl FnMut(&mut Scanned) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut hand = handing(self, each);
        let in_turn = |hand: &mut dyn FnMut(&mut Rows) -> Result<(), E>| {
            read_in_batches(&self.tx, ids, &mut Rows::default(), hand)
        };
        let file = self.tx.path().filter(|path| !path.is_empty());
        let (Some(path), true) = (file, ids.len() > 1) else {
            return in_turn(&mut hand);
        };
        std::thread::scope(|scope| {
            let (ahead, arrived) = mpsc::sync_channel(AHEAD / HANDOVER);
            let (give_back, returned) = mpsc::channel::<Vec<Rows>>();
            let reader = std::thread::Builder::new()
                .name("nudge-reader".into())
                .spawn_scoped(scope, move || {
                    read_ahead(Path::new(path), ids, &ahead, &returned)
                });
            if reader.is_err() {
                // No thread to be had (a process limit): the same reads, in turn.
                return in_turn(&mut hand);
            }
            // Until the reader is done (and drops its end), or fails (and says so); should it
            // panic instead, the scope passes the panic on.
            for batch in arrived {
                let mut batch = batch?;
                for rows in &mut batch {
                    hand(rows)?;
                }
                // Back to the reader for its next customers: their buffers are reused.
                let _ = give_back.send(batch);
            }
            Ok(())
        })
    }

    /// Calls `each` with every imported customer of `ids`, in that order, as this transaction
    /// has them now, its own changes included (unlike [`Tx::for_customers`], whose reading
    /// thread sees the store as the transaction found it). On this thread, in batches.
    pub fn for_customers_as_changed<E: From<StoreError>>(
        &self,
        ids: &[String],
        each: impl FnMut(&mut Scanned) -> Result<(), E>,
    ) -> Result<(), E> {
        read_in_batches(&self.tx, ids, &mut Rows::default(), handing(self, each))
    }
}

/// What takes each customer's rows: fills the customer as evaluation reads it and calls
/// `each` with it, unless it was never imported.
fn handing<'t, E: From<StoreError>>(
    tx: &'t Tx,
    mut each: impl FnMut(&mut Scanned) -> Result<(), E> + 't,
) -> impl FnMut(&mut Rows) -> Result<(), E> + 't {
    let mut fill = Evaluated::default();
    move |rows| match fill_from(tx, &mut fill, rows)? {
        true => each(&mut fill.scanned),
        false => Ok(()),
    }
}

/// Fills `fill` with the customer of `rows` if it was imported, and says whether it was.
fn fill_from(tx: &Tx, fill: &mut Evaluated, rows: &Rows) -> Result<bool, StoreError> {
    if !rows.imported {
        return Ok(false);
    }
    fill.customer(&rows.id, &rows.attributes)?;
    for tag in rows.tags() {
        fill.tag(tag)?;
    }
    fill.history(tx, &rows.history)?;
    fill.done();
    Ok(true)
}

/// The reading thread: sends the customers' rows in order, [`HANDOVER`] at a time, and stops
/// at the first error (sent too) or when the run stops listening.
fn read_ahead(
    path: &Path,
    ids: &[String],
    ahead: &mpsc::SyncSender<Result<Vec<Rows>, StoreError>>,
    returned: &mpsc::Receiver<Vec<Rows>>,
) {
    let mut batch = Vec::with_capacity(HANDOVER);
    // Buffers the run is done with, refilled for the next customers.
    let mut spare: Vec<Rows> = Vec::new();
    let read = open_reader(path).map_err(Stopped::Failed).and_then(|conn| {
        read_in_batches(&conn, ids, &mut Rows::default(), |rows| {
            if spare.is_empty() {
                spare.extend(returned.try_iter().flatten());
            }
            batch.push(std::mem::replace(rows, spare.pop().unwrap_or_default()));
            if batch.len() < HANDOVER {
                return Ok(());
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(HANDOVER));
            ahead.send(Ok(full)).map_err(|_| Stopped::Listening)
        })
    });
    let _ = match read {
        Ok(()) if !batch.is_empty() => ahead.send(Ok(batch)),
        Err(Stopped::Failed(error)) => ahead.send(Err(error)),
        Ok(()) | Err(Stopped::Listening) => Ok(()),
    };
}

/// Why the reading thread stopped early.
enum Stopped {
    /// The run stopped listening (it failed, or is done).
    Listening,
    Failed(StoreError),
}

impl From<StoreError> for Stopped {
    fn from(error: StoreError) -> Self {
        Stopped::Failed(error)
    }
}

/// A read-only connection to the store at `path`, in one read transaction for all its reads.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .and_then(configure_reader)
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB}; BEGIN"))?;
    Ok(conn)
}
