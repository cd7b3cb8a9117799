//! The event store: one SQLite file holding customers, tags, employee relations and events, and
//! the engine's own state (runs, per-campaign progress, every delivery outcome).
//!
//! All reads and writes go through a [`Tx`]: [`Store::transaction`] commits only if the whole
//! closure succeeds, so an import or a run is either entirely in the store or not at all, and a
//! process killed part-way leaves the store as it was (SQLite's WAL guarantees that).

mod bulk;
mod deliveries;
mod history;
mod import;
mod read_ahead;
mod rows;
mod scan;
mod schema;
mod tag_log;

use std::cell::{Cell, RefCell};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

pub use deliveries::{Delivery, Outcome, QueueKey, Whose};
pub use import::{
    import, BadRow, ImportError, ImportFile, ImportObserver, ImportOptions, ImportSummary, Kind,
};
pub use scan::{Attributes, Events, Scanned};
use tag_log::TagEvent;

/// Failures of the store itself (as opposed to bad data in an import file).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store `{}`: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the store has schema version {found}, but this nudge knows versions up to {known}: \
         was it written by a newer nudge?"
    )]
    UnknownSchema { found: i64, known: usize },
    #[error(
        "cannot run at {}: the store was last run at {}, and runs cannot go back in time",
        rfc3339(*now),
        rfc3339(*last)
    )]
    NowBeforeLastRun {
        now: DateTime<Utc>,
        last: DateTime<Utc>,
    },
    #[error("the store is damaged: {0}")]
    Damaged(String),
    #[error(
        "the store is busy: another command is writing to it (an import of a large file has it \
         to itself until it is done); try again when that has finished"
    )]
    Busy,
    #[error("store: {0}")]
    Sqlite(rusqlite::Error),
}

/// SQLite's errors, with "database is locked" (still locked after the five seconds a connection
/// waits) told apart: it is about another command, not about this one or the store.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) => StoreError::Busy,
            _ => StoreError::Sqlite(error),
        }
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(error: rusqlite::types::FromSqlError) -> Self {
        StoreError::Sqlite(error.into())
    }
}

/// An open store. Cheap to keep open; one writer at a time (others wait up to five seconds).
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens the store at `path`, creating the file and bringing its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path)
            .and_then(configure)
            .map_err(|source| match StoreError::from(source) {
                StoreError::Sqlite(source) => StoreError::Open {
                    path: path.to_owned(),
                    source,
                },
                busy => busy,
            })?;
        Self::with_schema(conn)
    }

    /// A store that lives in memory only, for tests and scratch work.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::with_schema(Connection::open_in_memory().and_then(configure)?)
    }

    fn with_schema(mut conn: Connection) -> Result<Self, StoreError> {
        schema::migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Runs `f` in one transaction that commits if `f` succeeds and rolls back if it fails (or
    /// panics). The write lock is taken at the start, so two runs cannot interleave.
    pub fn transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = Tx::begin(&mut self.conn, TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` in one transaction, as [`Store::transaction`], written through a rollback
    /// journal rather than the WAL: for bulk loads. With the WAL every page is written twice,
    /// to the WAL and again by the checkpoint at the end — after importing the benchmark's 20M
    /// events, 7 s of copying the 640 MB WAL into the store, syncing both and deleting the WAL
    /// (`strace`) — where a rollback journal writes the new pages once, into the store, and
    /// journals only the pages that existed before. The price: while it writes, the store is
    /// the transaction's alone, and readers wait for it (other writers always do). When the
    /// journal cannot be switched (another connection has the store open), the WAL is used.
    pub fn bulk_transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let switched = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |row| {
                row.get::<_, String>(0)
            })
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("delete"));
        // Without the WAL, `NORMAL` would sync too seldom to rule out a corrupt store after a
        // power cut; `FULL` syncs the journal before the store is written.
        let synced = match switched {
            true => self.conn.execute_batch("PRAGMA synchronous = FULL"),
            false => Ok(()),
        };
        let result = match synced {
            Ok(()) => self.transaction(f),
            Err(error) => Err(StoreError::from(error).into()),
        };
        if switched {
            // Should this fail (a reader arrived meanwhile), every connection opened later sets
            // the WAL again (`configure`).
            let _ = self
                .conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
        }
        result
    }

    /// Runs `f` in a transaction that is always rolled back: for reads (one consistent snapshot)
    /// and dry runs (writes that are seen inside `f` and then discarded).
    pub fn scratch<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = Tx::begin(&mut self.conn, TransactionBehavior::Deferred)?;
        f(&tx)
    }
}

/// WAL keeps readers and the writer out of each other's way and makes commits atomic even when
/// the process is killed; `synchronous = NORMAL` is durable enough with WAL (a power cut may
/// lose the last commit, never corrupt). The page size only matters when the file is created:
/// bigger pages keep more of a customer's packed history on one page, and make the histories
/// cheaper to fill and to scan. The cache (64 MB) keeps the upper levels of the tables' B-trees
/// and the pages a run revisits; whatever an import or a run writes beyond it goes to the WAL
/// file, not to memory, so memory stays flat however large a transaction is.
/// A run uses a few dozen distinct statements per customer and per delivery; rusqlite's default
/// statement cache (16) would re-parse them all the time.
const STATEMENT_CACHE: usize = 128;

fn configure(conn: Connection) -> rusqlite::Result<Connection> {
    let conn = configure_reader(conn)?;
    // The cache size after the page size: set before it on a new store, importing customers
    // peaked at 300 MB instead of 150 (measured), as if the 64 MB had become 16,384 pages of
    // the default 4 KB and then 16,384 pages of 16 KB.
    conn.execute_batch(
        "PRAGMA page_size = 16384;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -65536;",
    )?;
    Ok(conn)
}

/// What every connection needs, read-only ones included.
fn configure_reader(conn: Connection) -> rusqlite::Result<Connection> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee, SQLite marks some statements (the
    // customer's tags, `WHERE customer = ?1 ORDER BY tag`) to be re-planned whenever their
    // bound values change, and a cached statement is reset with its bindings cleared: each
    // use would parse and plan it again (measured: 17% of an incremental run's time).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// How many pages a transaction whose cache is limited ([`Tx::limit_cache`]) may hold in memory
/// before it writes changed ones to the WAL early (16 MB of 16 KB pages). Written early, a page
/// that changes again is written again at the commit, and read back from the WAL whenever it
/// is needed in between: with SQLite's default (spill once the cache is full), the benchmark's
/// incremental run wrote 652 frames for its 373 changed pages and read 749 pages from the WAL.
/// Kept, it writes 373 frames and reads only what the checkpoint copies (373). (`PRAGMA
/// cache_spill = OFF` would keep them all, but inside a transaction SQLite applies only a
/// number of pages.)
const DIRTY_PAGES_KEPT: u32 = 1024;

/// A customer: its id, its attributes and its tags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Customer {
    pub id: String,
    /// A JSON object whose values are text, numbers or booleans (checked on import); parse it
    /// with `serde_json` when needed. Types come from the rules' `customer { … }` declaration.
    pub attributes: String,
    /// The customer's tags, in byte order.
    pub tags: Vec<String>,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique in the store; among events of one customer at one millisecond, the later-recorded
    /// has the larger id.
    pub id: i64,
    pub name: String,
    /// Milliseconds precision.
    pub at: DateTime<Utc>,
    /// A JSON object whose values are text, numbers or booleans.
    pub properties: String,
}

/// An event to record.
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    pub customer: &'a str,
    pub name: &'a str,
    pub at: DateTime<Utc>,
    /// A JSON object (not checked here: import checks what comes from files).
    pub properties: &'a str,
}

/// An employee relation: `employee` added the customer (WeCom) at `added_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Employee {
    pub employee: String,
    pub added_at: DateTime<Utc>,
}

/// Identifies a run (a row of `runs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunId(pub i64);

/// The `counters` row of the next event's id.
const NEXT_EVENT_ID: &str = "next_event_id";

/// A transaction on the store: every read and write of the engine and of imports.
pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    /// The next event id, read from `counters` on first use and written back at commit, so that
    /// recording events needs no query for it.
    next_event_id: Cell<Option<i64>>,
    /// Event names by id and ids by name, loaded on first use.
    names: RefCell<history::Names>,
    held: RefCell<deliveries::Held>,
    /// Whether this transaction changed customers' attributes or tags in a way a run has not
    /// seen: then the commit bumps `customers_version` (see [`Tx::customers_changed`]).
    customers_touched: Cell<bool>,
}

impl<'c> Tx<'c> {
    fn begin(conn: &'c mut Connection, behavior: TransactionBehavior) -> Result<Self, StoreError> {
        Ok(Tx {
            tx: conn.transaction_with_behavior(behavior)?,
            next_event_id: Cell::new(None),
            names: RefCell::default(),
            held: RefCell::default(),
            customers_touched: Cell::new(false),
        })
    }

    fn commit(self) -> Result<(), StoreError> {
        self.write_held_deliveries()?;
        if self.customers_touched.get() {
            self.tx.execute(
                "UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'",
                [],
            )?;
        }
        let event_ids = self.next_event_id.get().map(|next| (NEXT_EVENT_ID, next));
        for (name, next) in event_ids.into_iter().chain(self.next_delivery_id_taken()) {
            self.tx.execute(
                "UPDATE counters SET value = ?2 WHERE name = ?1",
                params![name, next],
            )?;
        }
        self.tx.commit()?;
        Ok(())
    }

    /// The value of a row of `counters`: the next id of events or deliveries, taken without a
    /// query once read, and written back at the commit.
    fn counter(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.tx.query_row(
            "SELECT value FROM counters WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?)
    }

    /// The underlying connection, for tools and tests that need SQL of their own (with every
    /// delivery recorded so far written to the store).
    pub fn connection(&self) -> Result<&Connection, StoreError> {
        self.write_held_deliveries()?;
        Ok(&self.tx)
    }

    /// Creates the customer or merges `attributes` into its attributes (RFC 7396: a key in
    /// `attributes` replaces the stored value, and a `null` value removes it).
    pub fn upsert_customer(
        &self,
        id: &str,
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(attributes).expect("JSON maps serialize");
        self.upsert_customer_json(id, &json)
    }

    /// [`Tx::upsert_customer`] with the attributes as JSON object text.
    fn upsert_customer_json(&self, id: &str, attributes: &str) -> Result<(), StoreError> {
        self.customers_touched.set(true);
        self.tx
            .prepare_cached(
                "INSERT INTO customers (id, attributes) VALUES (?1, json_patch('{}', ?2))
                 ON CONFLICT (id) DO UPDATE SET attributes = json_patch(attributes, ?2)",
            )?
            .execute(params![id, attributes])?;
        Ok(())
    }

    /// One customer with its attributes and tags.
    pub fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        let mut customer = Customer {
            id: id.to_owned(),
            ..Customer::default()
        };
        if !attributes_into(&self.tx, id, &mut customer.attributes)? {
            return Ok(None);
        }
        tags_into(&self.tx, id, &mut customer.tags)?;
        Ok(Some(customer))
    }

    /// Tags the customer; when the tag is new, also records the built-in `tag_added` event at
    /// `at`, which `on tag added` triggers see. Returns that event, if the tag was new.
    pub fn add_tag(
        &self,
        customer: &str,
        tag: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Event>, StoreError> {
        let event = self.tag_event(at, true)?;
        // A tag the customer lost still has its row (and its events): it is taken up again.
        let added = self
            .tx
            .prepare_cached(
                "INSERT INTO tags (customer, tag, added_at, events) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer, tag) DO UPDATE SET added_at = excluded.added_at,
                     removed_at = NULL, events = CAST(events || excluded.events AS BLOB)
                 WHERE removed_at IS NOT NULL",
            )?
            .execute(params![customer, tag, event.at, event.encode()])?;
        self.record_tag_change(added == 1, event, customer, tag)
    }

    /// Removes the tag; when the customer had it, also records the built-in `tag_removed` event
    /// at `at`. Returns that event, if the customer had the tag.
    pub fn remove_tag(
        &self,
        customer: &str,
        tag: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Event>, StoreError> {
        let event = self.tag_event(at, false)?;
        let removed = self
            .tx
            .prepare_cached(
                "UPDATE tags SET removed_at = ?3, events = CAST(events || ?4 AS BLOB)
                 WHERE customer = ?1 AND tag = ?2 AND removed_at IS NULL",
            )?
            .execute(params![customer, tag, event.at, event.encode()])?;
        self.record_tag_change(removed == 1, event, customer, tag)
    }

    /// The event a tag change at `at` records, with the next event id (taken only if the tag
    /// does change: see [`Tx::record_tag_change`]).
    fn tag_event(&self, at: DateTime<Utc>, added: bool) -> Result<TagEvent, StoreError> {
        Ok(TagEvent {
            at: millis(at),
            id: self.next_event_id()?,
            added,
        })
    }

    /// After a tag row was written: takes the event's id and notes the customer under the
    /// event's instant for [`Tx::customers_with_events_between`].
    fn record_tag_change(
        &self,
        changed: bool,
        event: TagEvent,
        customer: &str,
        tag: &str,
    ) -> Result<Option<Event>, StoreError> {
        if !changed {
            return Ok(None);
        }
        self.customers_touched.set(true);
        self.take_event_ids(1)?;
        self.tx
            .prepare_cached(
                "INSERT INTO tag_changes (at, customer) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![event.at, customer])?;
        Ok(Some(stored_tag_event(&event, tag)?))
    }

    /// Records that `employee` added the customer at `added_at` (a later record of the same pair
    /// replaces the time).
    pub fn add_employee(
        &self,
        customer: &str,
        employee: &str,
        added_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO employees (customer, employee, added_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET added_at = excluded.added_at",
            )?
            .execute(params![customer, employee, millis(added_at)])?;
        Ok(())
    }

    /// The employees who added the customer, first added first (ties by employee id).
    pub fn employees_for_customer(&self, customer: &str) -> Result<Vec<Employee>, StoreError> {
        let employees = self
            .tx
            .prepare_cached(
                "SELECT employee, added_at FROM employees WHERE customer = ?1
                 ORDER BY added_at, employee",
            )?
            .query_map([customer], |row| {
                Ok(Employee {
                    employee: row.get(0)?,
                    added_at: time(row, 1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(employees)
    }

    /// Records an event and returns its id. Events need not belong to an imported customer.
    pub fn add_event(&self, event: &NewEvent) -> Result<i64, StoreError> {
        self.add_events(std::slice::from_ref(event))
    }

    /// Records events with consecutive ids, in order, and returns the first id. Each customer's
    /// events join its history in one write, so passing many events at once is cheapest.
    pub fn add_events(&self, events: &[NewEvent]) -> Result<i64, StoreError> {
        let first = self.take_event_ids(events.len())?;
        let mut order: Vec<usize> = (0..events.len()).collect();
        // Stable: a customer's events at one instant keep their order, which their ids follow.
        order.sort_by_key(|&i| (events[i].customer, millis(events[i].at)));
        let mut chunk = history::Chunk::default();
        for group in order.chunk_by(|&a, &b| events[a].customer == events[b].customer) {
            chunk.clear();
            for &index in group {
                let event = &events[index];
                let name = self.names.borrow_mut().intern(&self.tx, event.name)?;
                let properties = event.properties.as_bytes();
                chunk.push(millis(event.at), first + index as i64, name, properties);
            }
            history::extend(&self.tx, events[group[0]].customer, &chunk)?;
        }
        Ok(first)
    }

    /// Reserves `count` consecutive event ids and returns the first.
    fn take_event_ids(&self, count: usize) -> Result<i64, StoreError> {
        let first = self.next_event_id()?;
        self.next_event_id.set(Some(first + count as i64));
        Ok(first)
    }

    /// The id the next event recorded will have.
    fn next_event_id(&self) -> Result<i64, StoreError> {
        if let Some(id) = self.next_event_id.get() {
            return Ok(id);
        }
        let id = self.counter(NEXT_EVENT_ID)?;
        self.next_event_id.set(Some(id));
        Ok(id)
    }

    /// The customer's events at instants in `range`, in time order (then id order). Pass
    /// `(Bound::Excluded(t), Bound::Included(t + w))` for a half-open window such as `unless`'s.
    pub fn events_for_customer(
        &self,
        customer: &str,
        range: impl RangeBounds<DateTime<Utc>>,
    ) -> Result<Vec<Event>, StoreError> {
        let (from, to) = millis_range(&range);
        let mut events = with_history(&self.tx, customer, |bytes| {
            self.decode_events(bytes, from, to)
        })?
        .unwrap_or_default();
        let from_history = events.len();
        self.tag_events_into(customer, from, to, &mut events)?;
        if events.len() > from_history {
            events.sort_unstable_by_key(|event| (event.at, event.id));
        }
        Ok(events)
    }

    /// Appends the customer's tag events at instants within `from..=to` (those kept with their
    /// tags: see schema v7) to `out`.
    fn tag_events_into(
        &self,
        customer: &str,
        from: i64,
        to: i64,
        out: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        let mut statement = self
            .tx
            .prepare_cached("SELECT tag, events FROM tags WHERE customer = ?1")?;
        let mut rows = statement.query([customer])?;
        while let Some(row) = rows.next()? {
            let tag = row.get_ref(0)?.as_str()?;
            for event in tag_log::decode(row.get_ref(1)?.as_blob()?) {
                let event = event?;
                if (from..=to).contains(&event.at) {
                    out.push(stored_tag_event(&event, tag)?);
                }
            }
        }
        Ok(())
    }

    /// The events of a packed history at instants within `from..=to`.
    fn decode_events(&self, bytes: &[u8], from: i64, to: i64) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        for packed in history::Decoder::new(bytes) {
            let packed = packed?;
            if (from..=to).contains(&packed.at) {
                events.push(self.event(&packed)?);
            }
        }
        Ok(events)
    }

    /// An event of a history as the store's callers see it.
    fn event(&self, packed: &history::Packed) -> Result<Event, StoreError> {
        Ok(Event {
            id: packed.id,
            name: history::with_name(&self.names, &self.tx, packed.name, str::to_owned)?,
            at: instant(packed.at)?,
            properties: String::from_utf8(packed.properties.to_vec())
                .map_err(|_| history::damaged("event properties are not UTF-8".into()))?,
        })
    }

    /// The `now` of the latest run, if any.
    pub fn last_run_now(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let last: Option<i64> = self
            .tx
            .query_row("SELECT max(now) FROM runs", [], |row| row.get(0))?;
        Ok(last.map(instant).transpose()?)
    }

    /// Starts a run at `now`, refusing a `now` earlier than the last run's (the same `now` again
    /// is allowed: it finds nothing new).
    pub fn begin_run(&self, now: DateTime<Utc>) -> Result<RunId, StoreError> {
        if let Some(last) = self.last_run_now()? {
            if now < last {
                return Err(StoreError::NowBeforeLastRun { now, last });
            }
        }
        self.tx.execute(
            "INSERT INTO runs (now, started_at) VALUES (?1, ?2)",
            [millis(now), millis(Utc::now())],
        )?;
        Ok(RunId(self.tx.last_insert_rowid()))
    }

    /// A number the engine keeps between runs under `key` (e.g. a fingerprint of the tag rules).
    pub fn state(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM store_state WHERE key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?)
    }

    /// Limits this connection's page cache to `kib` KiB for the rest of its life. For work that
    /// reads most pages once, such as a run that reads only the customers with something new:
    /// every page the cache keeps is memory the process must take fresh from the system, which
    /// costs more than reading the page again from the OS's file cache (measured on the
    /// incremental-run benchmark with the store in memory, three runs each: a 64 MB cache
    /// 0.36–0.61 s, 8 MB 0.26–0.31 s, 4 MB 0.26–0.28 s). Pages the transaction changed stay in
    /// memory beyond that limit, up to [`DIRTY_PAGES_KEPT`]: see there.
    pub fn limit_cache(&self, kib: u32) -> Result<(), StoreError> {
        self.tx.execute_batch(&format!(
            "PRAGMA cache_size = -{kib}; PRAGMA cache_spill = {DIRTY_PAGES_KEPT}"
        ))?;
        Ok(())
    }

    pub fn set_state(&self, key: &str, value: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO store_state (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }

    /// The customers due to be looked at again at `now` (see [`Tx::set_check`]), in id order.
    pub fn checks_due(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .tx
            .prepare_cached("SELECT customer FROM customer_checks WHERE due_at <= ?1")?
            .query_map([millis(now)], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// When a run must next look at the customer even without new events, as last set
    /// (milliseconds; see [`Tx::set_check`]).
    pub fn check(&self, customer: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT due_at FROM customer_checks WHERE customer = ?1")?
            .query_row([customer], |row| row.get(0))
            .optional()?)
    }

    /// Records when a run must next look at the customer even without new events (`None`:
    /// only when its events or attributes change).
    pub fn set_check(&self, customer: &str, due: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        match due {
            Some(due) => self
                .tx
                .prepare_cached(
                    "INSERT INTO customer_checks (customer, due_at) VALUES (?1, ?2)
                     ON CONFLICT (customer) DO UPDATE SET due_at = excluded.due_at",
                )?
                .execute(params![customer, millis(due)])?,
            None => self
                .tx
                .prepare_cached("DELETE FROM customer_checks WHERE customer = ?1")?
                .execute([customer])?,
        };
        Ok(())
    }

    /// Forgets every customer's check, before a run that looks at everyone records them anew.
    pub fn clear_checks(&self) -> Result<(), StoreError> {
        self.tx.execute("DELETE FROM customer_checks", [])?;
        Ok(())
    }

    /// Whether customers' attributes or tags changed since `mark_customers_seen` was last
    /// called (by imports, say); true on a store no run has marked yet. Every transaction that
    /// changes them bumps `customers_version` at its commit, unless it marked them seen after.
    pub fn customers_changed(&self) -> Result<bool, StoreError> {
        Ok(self.state("customers_version")? != self.state("customers_seen")?)
    }

    /// Records that every change to customers' attributes and tags so far has been seen, this
    /// transaction's own included (a run's tag changes).
    pub fn mark_customers_seen(&self) -> Result<(), StoreError> {
        self.customers_touched.set(false);
        let version = self.state("customers_version")?.unwrap_or_default();
        self.set_state("customers_seen", version)
    }

    /// Marks the run finished (at the clock's time).
    pub fn finish_run(&self, run: RunId) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE runs SET finished_at = ?2 WHERE id = ?1",
            [run.0, millis(Utc::now())],
        )?;
        Ok(())
    }

    /// A value the interpreter keeps for a campaign between runs.
    pub fn progress(&self, campaign: &str, key: &str) -> Result<Option<String>, StoreError> {
        let value = self
            .tx
            .prepare_cached("SELECT value FROM campaign_progress WHERE campaign = ?1 AND key = ?2")?
            .query_row([campaign, key], |row| row.get(0))
            .optional()?;
        Ok(value)
    }

    pub fn set_progress(&self, campaign: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO campaign_progress (campaign, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET value = excluded.value",
            )?
            .execute([campaign, key, value])?;
        Ok(())
    }
}

/// Stored times are milliseconds since the epoch, UTC (sub-millisecond parts are dropped).
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn instant(ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| conversion_error(0, Type::Integer, format!("{ms} ms is not a time")))
}

fn time(row: &Row, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    instant(row.get(column)?)
}

fn conversion_error(column: usize, stored: Type, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, stored, message.into())
}

/// A tag event of `tag` as the store's callers see events.
fn stored_tag_event(event: &TagEvent, tag: &str) -> Result<Event, StoreError> {
    Ok(Event {
        id: event.id,
        name: event.name().to_owned(),
        at: instant(event.at)?,
        properties: tag_log::properties(tag),
    })
}

/// Reads the customer's attributes (JSON text) into `out`; false if it was never imported.
fn attributes_into(conn: &Connection, id: &str, out: &mut String) -> Result<bool, StoreError> {
    let mut statement = conn.prepare_cached("SELECT attributes FROM customers WHERE id = ?1")?;
    let mut rows = statement.query([id])?;
    out.clear();
    let Some(row) = rows.next()? else {
        return Ok(false);
    };
    out.push_str(row.get_ref(0)?.as_str()?);
    Ok(true)
}

/// Appends the customer's tags to `out`, in byte order.
fn tags_into(conn: &Connection, id: &str, out: &mut Vec<String>) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT tag FROM tags WHERE customer = ?1 AND removed_at IS NULL ORDER BY tag",
    )?;
    for tag in statement.query_map([id], |row| row.get(0))? {
        out.push(tag?);
    }
    Ok(())
}

/// Calls `read` with the customer's packed history, read over `conn`, if it has one.
fn with_history<T>(
    conn: &Connection,
    customer: &str,
    read: impl FnOnce(&[u8]) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT events FROM event_histories WHERE customer = ?1")?;
    let mut rows = statement.query([customer])?;
    match rows.next()? {
        Some(row) => Ok(Some(read(row.get_ref(0)?.as_blob()?)?)),
        None => Ok(None),
    }
}

/// The inclusive millisecond range of stored times that fall in `range`.
fn millis_range(range: &impl RangeBounds<DateTime<Utc>>) -> (i64, i64) {
    // `timestamp_millis` rounds down; a bound with a sub-millisecond part lies between two
    // stored values, which decides which one an inclusive or exclusive bound admits.
    let floor = |t: &DateTime<Utc>| millis(*t);
    let ceil = |t: &DateTime<Utc>| {
        millis(*t) + i64::from(!t.timestamp_subsec_nanos().is_multiple_of(1_000_000))
    };
    let from = match range.start_bound() {
        Bound::Included(t) => ceil(t),
        Bound::Excluded(t) => floor(t).saturating_add(1),
        Bound::Unbounded => i64::MIN,
    };
    let to = match range.end_bound() {
        Bound::Included(t) => floor(t),
        Bound::Excluded(t) => ceil(t).saturating_sub(1),
        Bound::Unbounded => i64::MAX,
    };
    (from, to)
}

/// RFC 3339 in UTC with a `Z`, as every time Nudge prints.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
