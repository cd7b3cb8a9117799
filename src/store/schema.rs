//! The store's tables and the migrations that create them.
//!
//! Times are INTEGER milliseconds since the Unix epoch, UTC. JSON columns hold minified JSON
//! objects whose values are text, numbers or booleans: the store does not know the rules' schema,
//! values get their types when campaigns are evaluated.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::StoreError;

/// One step of the schema: SQL, or Rust code for steps that transform data SQL cannot (such as
/// packing events into the histories' binary encoding).
enum Migration {
    Sql(&'static str),
    Code(fn(&Transaction) -> Result<(), StoreError>),
}

use Migration::{Code, Sql};

impl Migration {
    fn apply(&self, tx: &Transaction) -> Result<(), StoreError> {
        match self {
            Sql(sql) => tx.execute_batch(sql)?,
            Code(migrate) => migrate(tx)?,
        }
        Ok(())
    }
}

/// Migration `i` takes a store from version `i` to version `i + 1`. Steps are only ever appended:
/// a released step must never change, or stores created by different builds would differ.
const MIGRATIONS: &[Migration] = &[
    Sql(V1),
    Sql(V2),
    Code(event_histories),
    Sql(V4),
    Sql(V5),
    Sql(V6),
    Sql(V7),
    Sql(V8),
    Sql(V9),
    Sql(V10),
];

/// Version 1: the initial schema.
const V1: &str = "
CREATE TABLE customers (
    id         TEXT NOT NULL PRIMARY KEY,
    attributes TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;

CREATE TABLE tags (
    customer TEXT NOT NULL,
    tag      TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (customer, tag)
) WITHOUT ROWID;

-- Which employee added which customer (WeCom), and when.
CREATE TABLE employees (
    customer TEXT NOT NULL,
    employee TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (customer, employee)
) WITHOUT ROWID;

-- Clustered by (customer, at): a customer's time range and the whole table in (customer, time)
-- order are both read in storage order, with no index lookup per event. `id` is unique across
-- the store (taken from `counters`) and orders events that share a millisecond.
CREATE TABLE events (
    customer   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    id         INTEGER NOT NULL,
    name       TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (customer, at, id)
) WITHOUT ROWID;

CREATE TABLE counters (
    name  TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('next_event_id', 1);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    now         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);

-- Whatever the interpreter keeps per campaign between runs (e.g. the last instant evaluated).
CREATE TABLE campaign_progress (
    campaign TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (campaign, key)
) WITHOUT ROWID;

-- One row per trigger occurrence per customer: the UNIQUE constraint is what makes delivery
-- exactly-once, whatever the interpreter does.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    run        INTEGER NOT NULL REFERENCES runs (id),
    campaign   TEXT NOT NULL,
    customer   TEXT NOT NULL,
    occurrence TEXT NOT NULL,
    outcome    TEXT NOT NULL
        CHECK (outcome IN ('sent', 'expired', 'capped', 'unreachable', 'control', 'queued')),
    channel    TEXT,
    address    TEXT,
    variant    TEXT,
    fired_at   INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    content    TEXT,
    reason     TEXT,
    UNIQUE (campaign, customer, occurrence)
);
-- Caps and `explain` look at one customer's deliveries by due time; each run releases the
-- queued deliveries that have come due; `assign … evenly` counts each employee's deliveries.
CREATE INDEX deliveries_by_customer ON deliveries (customer, due_at);
CREATE INDEX deliveries_queued ON deliveries (due_at) WHERE outcome = 'queued';
CREATE INDEX deliveries_by_address ON deliveries (campaign, address);
";

/// Version 2: events by time, so that a run finds the customers with events in its range without
/// reading every customer (incremental runs cost what is new, not the whole history).
const V2: &str = "CREATE INDEX events_by_time ON events (at, customer);";

/// Version 3: events packed per customer. One row per customer holds its whole history in time
/// order (the encoding is in `history.rs`), with event names interned: a whole-audience pass
/// reads one row per customer instead of one per event, and no event name or property is
/// copied into a string of its own until it is used. Each history keeps its first and last
/// instants; the index on them finds the customers with events in a run's range (a history
/// ending before the range cannot have any), which replaces v2's per-event time index.
const V3: &str = "
CREATE TABLE event_names (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE event_histories (
    customer TEXT NOT NULL PRIMARY KEY,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    -- The id of the last event in (at, id) order: appending later events needs no decoding.
    last_id  INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    -- Last, so that reading the other columns does not load a long history's overflow pages.
    events   BLOB NOT NULL
) WITHOUT ROWID;
";

/// The index of histories by their last and first instants (see [`V3`]); a bulk load of events
/// drops it and builds it again (see `bulk.rs`).
pub(super) const HISTORIES_BY_TIME: &str =
    "CREATE INDEX event_histories_by_time ON event_histories (last_at, first_at)";

/// Version 3 (see [`V3`]): creates the histories and moves the v2 `events` rows into them.
fn event_histories(tx: &Transaction) -> Result<(), StoreError> {
    tx.execute_batch(V3)?;
    tx.execute_batch(HISTORIES_BY_TIME)?;
    super::history::pack_v2_events(tx)?;
    tx.execute_batch("DROP TABLE events;")?;
    Ok(())
}

/// Version 4: the delivery-policy pass. Queued deliveries are released in (due time, campaign,
/// customer) order a page at a time, which an index in that order makes a range scan; `rate`
/// counts a campaign's sent deliveries per calendar bucket.
///
/// And a version number of customers' attributes and tags, bumped by triggers on every change,
/// so that a run can tell whether anything but its own tag changes touched them since the last
/// run (then tag rules must be recomputed for everyone, not only for customers with new events).
const V4: &str = "
CREATE TABLE store_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO store_state (key, value) VALUES ('customers_version', 0), ('customers_seen', -1);
CREATE TRIGGER customers_inserted AFTER INSERT ON customers BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'; END;
CREATE TRIGGER customers_updated AFTER UPDATE ON customers BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'; END;
CREATE TRIGGER tags_inserted AFTER INSERT ON tags BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'; END;
CREATE TRIGGER tags_deleted AFTER DELETE ON tags BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'; END;
DROP INDEX deliveries_queued;
CREATE INDEX deliveries_queue ON deliveries (due_at, campaign, customer, id)
    WHERE outcome = 'queued';
CREATE INDEX deliveries_sent_by_campaign ON deliveries (campaign, due_at)
    WHERE outcome = 'sent';
";

/// Version 5: when each customer must next be looked at by a run even without new events: its
/// rule tags may change with the clock alone (an event leaving a `within last` window, a time
/// attribute entering or leaving one), or an `unless` window of one of its trigger events
/// closes. A run then reads only the customers that are due, not everyone active within the
/// longest window. The tag rules' fingerprint is forgotten: the next run tags everyone, which
/// fills the table.
const V5: &str = "
CREATE TABLE customer_checks (
    customer TEXT NOT NULL PRIMARY KEY,
    due_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX customer_checks_due ON customer_checks (due_at);
DELETE FROM store_state WHERE key = 'tag_rules';
";

/// Version 6: `deliveries` rebuilt with the same columns, indexes and rows, and two constraints
/// that cost more than they gave. SQLite checks `outcome IN (six values)` by building a
/// temporary B-tree of the six at every insert and update (with 16 KB pages, 320 KB of fresh
/// memory each time: measured, a fifth of an incremental run); the same test written with `OR`
/// is a few comparisons. And `run REFERENCES runs (id)` goes: the run writes both rows in one
/// transaction, and enforcing it made SQLite journal every page an update touched.
const V6: &str = "
CREATE TABLE deliveries_v6 (
    id         INTEGER PRIMARY KEY,
    run        INTEGER NOT NULL,
    campaign   TEXT NOT NULL,
    customer   TEXT NOT NULL,
    occurrence TEXT NOT NULL,
    outcome    TEXT NOT NULL
        CHECK (outcome = 'sent' OR outcome = 'expired' OR outcome = 'capped'
            OR outcome = 'unreachable' OR outcome = 'control' OR outcome = 'queued'),
    channel    TEXT,
    address    TEXT,
    variant    TEXT,
    fired_at   INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    content    TEXT,
    reason     TEXT,
    UNIQUE (campaign, customer, occurrence)
);
INSERT INTO deliveries_v6 (id, run, campaign, customer, occurrence, outcome, channel, address,
        variant, fired_at, due_at, content, reason)
    SELECT id, run, campaign, customer, occurrence, outcome, channel, address,
        variant, fired_at, due_at, content, reason
    FROM deliveries ORDER BY id;
DROP TABLE deliveries;
ALTER TABLE deliveries_v6 RENAME TO deliveries;
CREATE INDEX deliveries_by_customer ON deliveries (customer, due_at);
CREATE INDEX deliveries_by_address ON deliveries (campaign, address);
CREATE INDEX deliveries_queue ON deliveries (due_at, campaign, customer, id)
    WHERE outcome = 'queued';
CREATE INDEX deliveries_sent_by_campaign ON deliveries (campaign, due_at)
    WHERE outcome = 'sent';
";

/// Version 7: tag events kept with their tag. A tag's `tag_added` and `tag_removed` events
/// (packed in `tags.events`, encoding in `tag_log.rs`) used to join the customer's history,
/// so a run's tag change rewrote three pages at unrelated places: the `tags` row, the history
/// and the history's entry in the time index (measured: 493 of the 851 pages the benchmark's
/// incremental run wrote, twice each with the WAL). Now it rewrites the `tags` row alone, and a
/// tag the customer lost keeps its row (`removed_at` set) and with it its events.
/// `tag_changes` finds the customers with tag events in a time range, as the histories' time
/// index does for other events; keyed by time first, it grows at its end, a page per many
/// changes. Tag events recorded before version 7 stay in the histories, where every reader
/// still finds them.
const V7: &str = "
ALTER TABLE tags ADD COLUMN removed_at INTEGER;
ALTER TABLE tags ADD COLUMN events BLOB NOT NULL DEFAULT x'';
CREATE TABLE tag_changes (
    at       INTEGER NOT NULL,
    customer TEXT NOT NULL,
    PRIMARY KEY (at, customer)
) WITHOUT ROWID;
CREATE TRIGGER tags_updated AFTER UPDATE ON tags BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'customers_version'; END;
";

/// Version 8: `deliveries` clustered by occurrence, customer first. The row is stored in the
/// B-tree of the key that makes delivery exactly-once, (customer, campaign, occurrence),
/// instead of in a rowid table beside that key's index, and the same key serves what the
/// by-customer index did (caps, pace slots, `explain`): a sent delivery is written to three
/// B-trees instead of five. The row's `id` (recording order, which breaks ties in the queue)
/// comes from `counters`, as event ids do. The price: a row of more than about 4 KB (a long
/// e-mail's content) spills into overflow pages, where a rowid table kept up to 16 KB in its
/// leaf. The columns are V6's, key first: a released step
/// never changes, so each spells out the table it builds rather than sharing text with another.
const V8: &str = "
CREATE TABLE deliveries_v8 (
    customer   TEXT NOT NULL,
    campaign   TEXT NOT NULL,
    occurrence TEXT NOT NULL,
    id         INTEGER NOT NULL,
    run        INTEGER NOT NULL,
    outcome    TEXT NOT NULL
        CHECK (outcome = 'sent' OR outcome = 'expired' OR outcome = 'capped'
            OR outcome = 'unreachable' OR outcome = 'control' OR outcome = 'queued'),
    channel    TEXT,
    address    TEXT,
    variant    TEXT,
    fired_at   INTEGER NOT NULL,
    due_at     INTEGER NOT NULL,
    content    TEXT,
    reason     TEXT,
    PRIMARY KEY (customer, campaign, occurrence)
) WITHOUT ROWID;
INSERT INTO deliveries_v8 (customer, campaign, occurrence, id, run, outcome, channel, address,
        variant, fired_at, due_at, content, reason)
    SELECT customer, campaign, occurrence, id, run, outcome, channel, address,
        variant, fired_at, due_at, content, reason
    FROM deliveries ORDER BY customer, campaign, occurrence;
INSERT INTO counters (name, value)
    SELECT 'next_delivery_id', coalesce(max(id), 0) + 1 FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v8 RENAME TO deliveries;
CREATE INDEX deliveries_by_address ON deliveries (campaign, address);
CREATE INDEX deliveries_queue ON deliveries (due_at, campaign, customer, id)
    WHERE outcome = 'queued';
CREATE INDEX deliveries_sent_by_campaign ON deliveries (campaign, due_at)
    WHERE outcome = 'sent';
";

/// Version 9: the triggers that bumped `customers_version` at every change to customers'
/// attributes or tags are gone; the transaction that changes them bumps it once, at its commit
/// (`Tx::commit`), and a run's own tag changes do not bump it at all (it marks everything seen).
/// A statement that fires a trigger has SQLite keep a statement journal of every page it
/// changes, in a temporary file: the benchmark's incremental run wrote 1,170 pages of 16 KB to
/// it for its 259 tag changes, and importing 1M customers spent 8–9 s of system time on it
/// (`strace`, `time`).
const V9: &str = "
DROP TRIGGER customers_inserted;
DROP TRIGGER customers_updated;
DROP TRIGGER tags_inserted;
DROP TRIGGER tags_deleted;
DROP TRIGGER tags_updated;
";

/// Version 10: how many deliveries each employee was given in a campaign (what `assign …
/// evenly` balances) is counted in `employee_loads`, one row per campaign and employee, instead
/// of read from an index of every delivery by (campaign, address). That index was written for
/// every delivery of every campaign, and read only by campaigns that assign employees: it was
/// one of the three B-trees a sent delivery is written to, and 2.8% of the instructions of the
/// benchmark's incremental run. The counts start from the sent deliveries of each address (as
/// the index's query counted them, so phone numbers and e-mail addresses of earlier sends have
/// rows too, which nothing looks up); from now on only sends through an employee (moments,
/// tasks) are counted.
const V10: &str = "
CREATE TABLE employee_loads (
    campaign TEXT NOT NULL,
    employee TEXT NOT NULL,
    sent     INTEGER NOT NULL,
    PRIMARY KEY (campaign, employee)
) WITHOUT ROWID;
INSERT INTO employee_loads (campaign, employee, sent)
    SELECT campaign, address, count(*) FROM deliveries
    WHERE outcome = 'sent' AND address IS NOT NULL
    GROUP BY campaign, address;
DROP INDEX deliveries_by_address;
";

/// Brings the schema up to the newest version, all steps in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    let known = MIGRATIONS.len();
    let pending = usize::try_from(found)
        .ok()
        .and_then(|found| MIGRATIONS.get(found..))
        .ok_or(StoreError::UnknownSchema { found, known })?;
    if !pending.is_empty() {
        for step in pending {
            step.apply(&tx)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [known as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_packs_the_events_of_a_version_2_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        for step in [V1, V2] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (2);
             INSERT INTO events (customer, at, id, name, properties) VALUES
                 ('b', 20, 4, 'view', '{\"page\":\"/\"}'),
                 ('a', 10, 3, 'buy', '{}'),
                 ('b', 10, 2, 'view', '{}'),
                 ('b', 10, 1, 'buy', '{\"amount\":3}');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let histories: Vec<(String, i64, i64, i64, i64)> = all(
            &conn,
            "SELECT customer, first_at, last_at, last_id, count FROM event_histories",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        );
        assert_eq!(
            histories,
            [("a".into(), 10, 10, 3, 1), ("b".into(), 10, 20, 4, 3)]
        );
        let names: Vec<String> = all(&conn, "SELECT name FROM event_names ORDER BY id", |r| {
            r.get(0)
        });
        assert_eq!(names, ["buy", "view"]);
        let events_left = number(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'events'",
        );
        assert_eq!(events_left, 0);
    }

    /// Every row of `sql`, as `row` reads it.
    fn all<T>(
        conn: &Connection,
        sql: &str,
        row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let mut statement = conn.prepare(sql).unwrap();
        let rows = statement.query_map([], row).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// The one number `sql` selects.
    fn number(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A store in memory at schema `version` (its first `version` steps), holding `rows`.
    fn store_at_version(version: usize, rows: &str) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for step in &MIGRATIONS[..version] {
            step.apply(&tx).unwrap();
        }
        tx.execute_batch(&format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES ({version});
             {rows}"
        ))
        .unwrap();
        tx.commit().unwrap();
        conn
    }

    #[test]
    fn version_7_keeps_every_tag_held_with_no_events_of_its_own() {
        let mut conn = store_at_version(
            6,
            "INSERT INTO tags (customer, tag, added_at) VALUES ('a', 'VIP', 5), ('b', 'VIP', 6);",
        );
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, Option<i64>, Vec<u8>)> = all(
            &conn,
            "SELECT customer, removed_at, events FROM tags ORDER BY customer",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        );
        assert_eq!(
            rows,
            [("a".into(), None, vec![]), ("b".into(), None, vec![])]
        );
        let changes = number(&conn, "SELECT count(*) FROM tag_changes");
        assert_eq!(changes, 0, "the tags' events are still in the histories");
    }

    #[test]
    fn versions_6_and_8_keep_every_delivery_and_its_constraints() {
        let mut conn = store_at_version(
            5,
            "INSERT INTO runs (id, now, started_at) VALUES (1, 0, 0);
             INSERT INTO deliveries (id, run, campaign, customer, occurrence, outcome,
                 fired_at, due_at) VALUES
                 (7, 1, 'c', 'a', 'o1', 'queued', 1, 2),
                 (9, 1, 'c', 'b', 'o1', 'sent', 1, 2);",
        );
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, String, String)> = all(
            &conn,
            "SELECT id, customer, outcome FROM deliveries ORDER BY id",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        );
        assert_eq!(
            rows,
            [
                (7, "a".into(), "queued".into()),
                (9, "b".into(), "sent".into())
            ]
        );
        let insert = |occurrence: &str, outcome: &str| {
            conn.execute(
                "INSERT INTO deliveries (id, run, campaign, customer, occurrence, outcome,
                     fired_at, due_at) VALUES (10, 1, 'c', 'a', ?1, ?2, 1, 2)",
                [occurrence, outcome],
            )
        };
        assert!(insert("o1", "sent").is_err(), "one occurrence, one row");
        assert!(insert("o2", "lost").is_err(), "outcomes are checked");
        insert("o2", "capped").unwrap();
        let indexes = number(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'deliveries'
                     AND name LIKE 'deliveries_%'",
        );
        assert_eq!(indexes, 2, "the queue, sent by campaign");
        let next_id = number(
            &conn,
            "SELECT value FROM counters WHERE name = 'next_delivery_id'",
        );
        assert_eq!(next_id, 10, "after the largest id kept");
    }

    #[test]
    fn version_10_counts_each_address_s_sent_deliveries_and_drops_their_index() {
        let mut conn = store_at_version(
            9,
            "INSERT INTO deliveries (id, run, campaign, customer, occurrence, outcome, address,
                 fired_at, due_at) VALUES
                 (1, 1, 'calls', 'a', 'o1', 'sent', 'alice', 1, 2),
                 (2, 1, 'calls', 'b', 'o1', 'sent', 'alice', 1, 2),
                 (3, 1, 'calls', 'c', 'o1', 'sent', 'bob', 1, 2),
                 (4, 1, 'calls', 'd', 'o1', 'queued', 'bob', 1, 2),
                 (5, 1, 'calls', 'e', 'o1', 'unreachable', NULL, 1, 2),
                 (6, 1, 'texts', 'a', 'o1', 'sent', '138', 1, 2);",
        );
        migrate(&mut conn).unwrap();
        let loads: Vec<(String, String, i64)> = all(
            &conn,
            "SELECT campaign, employee, sent FROM employee_loads ORDER BY campaign, employee",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        );
        assert_eq!(
            loads,
            [
                ("calls".into(), "alice".into(), 2),
                ("calls".into(), "bob".into(), 1),
                ("texts".into(), "138".into(), 1)
            ]
        );
        let index = number(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'deliveries_by_address'",
        );
        assert_eq!(index, 0);
    }

    #[test]
    fn version_9_drops_the_triggers_on_customers_and_tags() {
        let mut conn = store_at_version(8, "");
        let triggers = |conn: &Connection| -> i64 {
            number(
                conn,
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            )
        };
        assert_eq!(triggers(&conn), 5);
        migrate(&mut conn).unwrap();
        assert_eq!(triggers(&conn), 0);
        conn.execute("INSERT INTO customers (id) VALUES ('a')", [])
            .unwrap();
        let version = number(
            &conn,
            "SELECT value FROM store_state WHERE key = 'customers_version'",
        );
        assert_eq!(
            version, 0,
            "bumped by the transaction that commits, not by SQL"
        );
    }
}
