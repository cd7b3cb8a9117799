//! Reading many customers by id, on a second thread: while the run decides one customer, the
//! next ones are looked up (three B-tree searches each, most pages not in memory yet), which
//! is half of an incremental run's time when done in turn.
//!
//! The reading thread has its own read-only connection, whose snapshot is the store as the
//! run's transaction found it: the run holds the write lock from its start, so nothing can be
//! committed in between. That is the customer as the run's own transaction sees it too, as
//! long as processing one customer writes only that customer's rows (tags, events, checks) —
//! which is how a run works: tag actions and tag rules change the customer at hand only, and a
//! customer re-read after its own changes is read through the run's transaction.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags};

use super::scan::{Evaluated, Fill, Scanned};
use super::{configure_reader, StoreError, Tx};

/// How many customers the reading thread may be ahead of the run: enough to ride out a
/// customer that takes long to decide, small enough to keep memory flat.
const AHEAD: usize = 256;

/// The reading connection's page cache, in KiB: enough for the upper levels of the three
/// B-trees it searches, which every lookup revisits; the leaves it reads are mostly read once.
/// A cache as large as the writer's (64 MB) is filled with fresh memory page by page, which
/// measured slower (reading 10,000 customers: 200–270 ms against 110–130 ms with 4 MB) and
/// 60 MB heavier.
const READER_CACHE_KIB: u32 = 4096;

/// A customer's rows as stored: whether it was imported, its attributes (JSON text) and tags,
/// and its packed history (empty without events). Refilled for each customer, reusing buffers.
#[derive(Default)]
struct Rows {
    imported: bool,
    attributes: String,
    tags: Vec<String>,
    history: Vec<u8>,
}

/// Reads `id`'s rows into `rows`.
fn read(conn: &Connection, id: &str, rows: &mut Rows) -> Result<(), StoreError> {
    rows.imported = super::attributes_into(conn, id, &mut rows.attributes)?;
    rows.tags.clear();
    if rows.imported {
        super::tags_into(conn, id, &mut rows.tags)?;
    }
    rows.history.clear();
    super::with_history(conn, id, |bytes| {
        rows.history.extend_from_slice(bytes);
        Ok(())
    })?;
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
        mut each: impl FnMut(&mut Scanned) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut fill = Evaluated::default();
        let mut hand = |id: &str, rows: &mut Rows| -> Result<(), E> {
            if !rows.imported {
                return Ok(());
            }
            fill.customer(id, &rows.attributes)?;
            for tag in &rows.tags {
                fill.tag(tag)?;
            }
            fill.history(self, &rows.history)?;
            fill.done();
            each(&mut fill.scanned)
        };
        let in_turn = |hand: &mut dyn FnMut(&str, &mut Rows) -> Result<(), E>| {
            let mut rows = Rows::default();
            for id in ids {
                read(&self.tx, id, &mut rows)?;
                hand(id, &mut rows)?;
            }
            Ok(())
        };
        let file = self.tx.path().filter(|path| !path.is_empty());
        let (Some(path), true) = (file, ids.len() > 1) else {
            return in_turn(&mut hand);
        };
        std::thread::scope(|scope| {
            let (ahead, arrived) = mpsc::sync_channel(AHEAD);
            let (give_back, returned) = mpsc::channel::<Rows>();
            let reader = std::thread::Builder::new()
                .name("nudge-reader".into())
                .spawn_scoped(scope, move || {
                    read_ahead(Path::new(path), ids, &ahead, &returned)
                });
            if reader.is_err() {
                // No thread to be had (a process limit): the same reads, in turn.
                return in_turn(&mut hand);
            }
            for id in ids {
                let mut rows = arrived
                    .recv()
                    .map_err(|_| StoreError::Damaged("the reading thread stopped".into()))??;
                hand(id, &mut rows)?;
                // Back to the reader for its next customer: its buffers are reused.
                let _ = give_back.send(rows);
            }
            Ok(())
        })
    }
}

/// The reading thread: sends each customer's rows in order, and stops at the first error
/// (sent too) or when the run stops listening.
fn read_ahead(
    path: &Path,
    ids: &[String],
    ahead: &mpsc::SyncSender<Result<Rows, StoreError>>,
    returned: &mpsc::Receiver<Rows>,
) {
    let conn = match open_reader(path) {
        Ok(conn) => conn,
        Err(error) => {
            let _ = ahead.send(Err(error));
            return;
        }
    };
    for id in ids {
        let mut rows = returned.try_recv().unwrap_or_default();
        let result = read(&conn, id, &mut rows).map(|()| rows);
        let failed = result.is_err();
        if ahead.send(result).is_err() || failed {
            return;
        }
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
