//! Event histories (schema v3): every event of a customer packed, in time order, into one row of
//! `event_histories`, with event names interned in `event_names`.
//!
//! The `events` BLOB holds the events in (at, id) order, each as
//!
//! ```text
//! at − previous at    zigzag varint (the first event's "previous" is 0)
//! id − previous id    zigzag varint (likewise)
//! name                varint: the event's row id in `event_names`
//! properties length   varint; 0 stands for `{}`
//! properties          the minified JSON object, UTF-8
//! ```
//!
//! Deltas keep an event at about 30 bytes. Because each event is relative to the one before,
//! events later than a history's last one are appended by concatenation: only the first
//! appended event is re-encoded, relative to the row's `last_at` and `last_id`. Events that
//! arrive out of order are merged, which rewrites the history.

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// The interned event names of a store, as far as this transaction knows them.
#[derive(Default)]
pub(super) struct Names {
    ids: HashMap<String, u32>,
    /// Indexed by id; ids are row ids of `event_names`, so there may be gaps (empty strings).
    names: Vec<String>,
    loaded: bool,
}

impl Names {
    fn load(&mut self, conn: &Connection) -> Result<(), StoreError> {
        if self.loaded {
            return Ok(());
        }
        let mut statement = conn.prepare_cached("SELECT id, name FROM event_names")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            self.remember(row.get(0)?, row.get(1)?);
        }
        self.loaded = true;
        Ok(())
    }

    fn remember(&mut self, id: u32, name: String) {
        let index = id as usize;
        if self.names.len() <= index {
            self.names.resize(index + 1, String::new());
        }
        self.names[index].clone_from(&name);
        self.ids.insert(name, id);
    }

    /// The name's id, recording the name if it is new.
    pub(super) fn intern(&mut self, conn: &Connection, name: &str) -> Result<u32, StoreError> {
        self.load(conn)?;
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let id: u32 = conn
            .prepare_cached("INSERT INTO event_names (name) VALUES (?1) RETURNING id")?
            .query_row([name], |row| row.get(0))?;
        self.remember(id, name.to_owned());
        Ok(id)
    }

    /// The name of an id. A name recorded by another connection since this one loaded them is
    /// looked up; an id that names nothing means the store is damaged.
    pub(super) fn name(&mut self, conn: &Connection, id: u32) -> Result<&str, StoreError> {
        self.load(conn)?;
        let known = self.names.get(id as usize).is_some_and(|n| !n.is_empty());
        if !known {
            let name: Option<String> = conn
                .prepare_cached("SELECT name FROM event_names WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            let name = name.ok_or_else(|| damaged(format!("no event name has id {id}")))?;
            self.remember(id, name);
        }
        Ok(&self.names[id as usize])
    }
}

/// Looks up names through a transaction's cache, one short borrow per call (callers may add
/// events, and so names, between two lookups).
pub(super) fn with_name<T>(
    names: &RefCell<Names>,
    conn: &Connection,
    id: u32,
    f: impl FnOnce(&str) -> T,
) -> Result<T, StoreError> {
    let mut names = names.borrow_mut();
    Ok(f(names.name(conn, id)?))
}

pub(super) fn damaged(what: String) -> StoreError {
    StoreError::Damaged(what)
}

/// An event read from a history, borrowing its properties from the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packed<'b> {
    pub(super) at: i64,
    pub(super) id: i64,
    pub(super) name: u32,
    /// JSON object text; checked as UTF-8 by whoever reads it (most events are only counted).
    pub(super) properties: &'b [u8],
}

impl Packed<'_> {
    fn key(&self) -> (i64, i64) {
        (self.at, self.id)
    }
}

/// Reads the events of a history, in order.
pub(super) struct Decoder<'b> {
    bytes: &'b [u8],
    at: i64,
    id: i64,
}

impl<'b> Decoder<'b> {
    pub(super) fn new(bytes: &'b [u8]) -> Self {
        Decoder {
            bytes,
            at: 0,
            id: 0,
        }
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value = 0u64;
        for (index, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[index + 1..];
                return Ok(value);
            }
        }
        Err(damaged("an event history ends mid-number".into()))
    }

    fn next_event(&mut self) -> Result<Packed<'b>, StoreError> {
        self.at = self.at.wrapping_add(unzigzag(self.varint()?));
        self.id = self.id.wrapping_add(unzigzag(self.varint()?));
        let name = u32::try_from(self.varint()?)
            .map_err(|_| damaged("an event name id is out of range".into()))?;
        let length = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        let Some((text, rest)) = self.bytes.split_at_checked(length) else {
            return Err(damaged("an event history ends mid-event".into()));
        };
        self.bytes = rest;
        let properties = match text {
            [] => b"{}".as_slice(),
            text => text,
        };
        Ok(Packed {
            at: self.at,
            id: self.id,
            name,
            properties,
        })
    }
}

impl<'b> Iterator for Decoder<'b> {
    type Item = Result<Packed<'b>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let event = self.next_event();
        if event.is_err() {
            self.bytes = &[];
        }
        Some(event)
    }
}

/// Events encoded in order, ready to become a history or to be appended to one.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    pub(super) bytes: Vec<u8>,
    /// (at, id) of the first and the last event.
    pub(super) first: (i64, i64),
    pub(super) last: (i64, i64),
    pub(super) count: i64,
}

impl Chunk {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends an event, which must not come before the last one in (at, id) order.
    pub(super) fn push(&mut self, at: i64, id: i64, name: u32, properties: &[u8]) {
        debug_assert!(
            self.count == 0 || (at, id) > self.last,
            "events out of order"
        );
        let (previous_at, previous_id) = match self.count {
            0 => (0, 0),
            _ => self.last,
        };
        write_varint(&mut self.bytes, zigzag(at.wrapping_sub(previous_at)));
        write_varint(&mut self.bytes, zigzag(id.wrapping_sub(previous_id)));
        write_varint(&mut self.bytes, u64::from(name));
        let properties = match properties {
            b"{}" => b"".as_slice(),
            other => other,
        };
        write_varint(&mut self.bytes, properties.len() as u64);
        self.bytes.extend_from_slice(properties);
        if self.count == 0 {
            self.first = (at, id);
        }
        self.last = (at, id);
        self.count += 1;
    }

    /// The bytes to append to a history whose last event is `last`: the first event is
    /// re-encoded relative to it, the rest are already relative to their predecessors.
    fn rebased(&self, last: (i64, i64)) -> Result<Vec<u8>, StoreError> {
        let mut decoder = Decoder::new(&self.bytes);
        decoder.varint()?;
        decoder.varint()?;
        let rest = decoder.bytes;
        let mut bytes = Vec::with_capacity(self.bytes.len() + 4);
        write_varint(&mut bytes, zigzag(self.first.0.wrapping_sub(last.0)));
        write_varint(&mut bytes, zigzag(self.first.1.wrapping_sub(last.1)));
        bytes.extend_from_slice(rest);
        Ok(bytes)
    }
}

pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

pub(super) fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Adds a chunk of one customer's events (ids new to the store) to the customer's history:
/// creates it, appends to it (the usual case: events arrive in time order), or merges.
pub(super) fn extend(conn: &Connection, customer: &str, chunk: &Chunk) -> Result<(), StoreError> {
    if chunk.is_empty() {
        return Ok(());
    }
    let stored: Option<(i64, i64)> = conn
        .prepare_cached("SELECT last_at, last_id FROM event_histories WHERE customer = ?1")?
        .query_row([customer], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match stored {
        None => {
            create(conn, customer, chunk)?;
        }
        Some(last) if chunk.first > last => {
            // `||` joins the bytes; the cast keeps the result a BLOB.
            conn.prepare_cached(
                "UPDATE event_histories SET events = CAST(events || ?2 AS BLOB), last_at = ?3,
                     last_id = ?4, count = count + ?5
                 WHERE customer = ?1",
            )?
            .execute(params![
                customer,
                chunk.rebased(last)?,
                chunk.last.0,
                chunk.last.1,
                chunk.count
            ])?;
        }
        Some(_) => merge(conn, customer, chunk)?,
    }
    Ok(())
}

/// [`extend`] for customers that mostly have no history yet, as in bulk loads: creating the
/// history straight away spares a lookup for each of them.
pub(super) fn create_or_extend(
    conn: &Connection,
    customer: &str,
    chunk: &Chunk,
) -> Result<(), StoreError> {
    if chunk.is_empty() || create(conn, customer, chunk)? {
        return Ok(());
    }
    extend(conn, customer, chunk)
}

/// Creates the customer's history from the chunk, unless the customer has one; returns whether
/// it did.
fn create(conn: &Connection, customer: &str, chunk: &Chunk) -> Result<bool, StoreError> {
    let created = conn
        .prepare_cached(
            "INSERT INTO event_histories (customer, first_at, last_at, last_id, count, events)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            customer,
            chunk.first.0,
            chunk.last.0,
            chunk.last.1,
            chunk.count,
            chunk.bytes
        ])?;
    Ok(created == 1)
}

/// Rewrites a history with a chunk whose events fall among the stored ones.
fn merge(conn: &Connection, customer: &str, chunk: &Chunk) -> Result<(), StoreError> {
    let stored: Vec<u8> = conn
        .prepare_cached("SELECT events FROM event_histories WHERE customer = ?1")?
        .query_row([customer], |row| row.get(0))?;
    let old = Decoder::new(&stored).collect::<Result<Vec<_>, _>>()?;
    let new = Decoder::new(&chunk.bytes).collect::<Result<Vec<_>, _>>()?;
    let mut merged = Chunk::default();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.key() <= y.key() => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        if let Some(event) = next {
            merged.push(event.at, event.id, event.name, event.properties);
        }
    }
    conn.prepare_cached(
        "UPDATE event_histories SET events = ?2, first_at = ?3, last_at = ?4, last_id = ?5,
             count = ?6
         WHERE customer = ?1",
    )?
    .execute(params![
        customer,
        merged.bytes,
        merged.first.0,
        merged.last.0,
        merged.last.1,
        merged.count
    ])?;
    Ok(())
}

/// Migration to v3: packs the rows of v2's `events` table into histories, one customer at a
/// time (the table is read in its storage order, which is the histories' order).
pub(super) fn pack_v2_events(conn: &Connection) -> Result<(), StoreError> {
    let mut names = Names::default();
    let mut statement = conn.prepare(
        "SELECT customer, at, id, name, properties FROM events ORDER BY customer, at, id",
    )?;
    let mut rows = statement.query([])?;
    let mut customer = String::new();
    let mut chunk = Chunk::default();
    while let Some(row) = rows.next()? {
        let id: &str = row.get_ref(0)?.as_str()?;
        if id != customer {
            extend(conn, &customer, &chunk)?;
            chunk.clear();
            customer = id.to_owned();
        }
        let name = names.intern(conn, row.get_ref(3)?.as_str()?)?;
        chunk.push(row.get(1)?, row.get(2)?, name, row.get_ref(4)?.as_bytes()?);
    }
    extend(conn, &customer, &chunk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(events: &[(i64, i64, u32, &str)]) -> Chunk {
        let mut chunk = Chunk::default();
        for &(at, id, name, properties) in events {
            chunk.push(at, id, name, properties.as_bytes());
        }
        chunk
    }

    fn decode(bytes: &[u8]) -> Vec<(i64, i64, u32, String)> {
        Decoder::new(bytes)
            .map(|e| {
                e.map(|e| {
                    (
                        e.at,
                        e.id,
                        e.name,
                        String::from_utf8(e.properties.to_vec()).unwrap(),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn events_round_trip_through_the_encoding() {
        let events = [
            (-5_000, 9, 1, "{}"),
            (1_772_359_200_000, 3, 2, r#"{"page":"/定价"}"#),
            (1_772_359_200_000, 40_000_000, 0, r#"{"a":1}"#),
            (i64::MAX, i64::MAX, u32::MAX, "{}"),
        ];
        let chunk = history(&events);
        let expected: Vec<_> = events
            .iter()
            .map(|&(at, id, name, p)| (at, id, name, p.to_owned()))
            .collect();
        assert_eq!(decode(&chunk.bytes), expected);
        assert_eq!(
            (chunk.first, chunk.last, chunk.count),
            ((-5_000, 9), (i64::MAX, i64::MAX), 4)
        );
    }

    #[test]
    fn a_rebased_chunk_continues_a_history() {
        let mut stored = history(&[(100, 1, 0, "{}"), (200, 2, 1, r#"{"x":true}"#)]);
        let later = history(&[(200, 7, 1, "{}"), (300, 8, 0, r#"{"y":2}"#)]);
        stored.bytes.extend(later.rebased(stored.last).unwrap());
        let times: Vec<_> = decode(&stored.bytes)
            .into_iter()
            .map(|(at, id, _, _)| (at, id))
            .collect();
        assert_eq!(times, [(100, 1), (200, 2), (200, 7), (300, 8)]);
    }

    #[test]
    fn truncated_histories_are_reported_not_misread() {
        // (Cuts inside the properties' text are caught by the length prefix.)
        let chunk = history(&[(100, 1, 0, r#"{"page":"/home"}"#)]);
        for cut in 1..chunk.bytes.len() {
            let result: Result<Vec<_>, _> = Decoder::new(&chunk.bytes[..cut]).collect();
            assert!(
                matches!(result, Err(StoreError::Damaged(_))),
                "cut at {cut}"
            );
        }
    }

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// (at, id) of each stored event, and the row's first_at, last_at, last_id and count.
    type Stored = (Vec<(i64, i64)>, (i64, i64, i64, i64));

    fn stored(conn: &Connection) -> Stored {
        let (bytes, first, last, last_id, count): (Vec<u8>, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT events, first_at, last_at, last_id, count FROM event_histories",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        let times = decode(&bytes).into_iter().map(|e| (e.0, e.1)).collect();
        (times, (first, last, last_id, count))
    }

    #[test]
    fn histories_are_created_appended_to_and_merged() {
        let conn = store();
        extend(
            &conn,
            "c",
            &history(&[(100, 1, 0, "{}"), (300, 2, 0, "{}")]),
        )
        .unwrap();
        // Later events are appended by SQL concatenation of the bytes.
        extend(
            &conn,
            "c",
            &history(&[(300, 5, 0, "{}"), (400, 6, 0, "{\"\\u0000\":0}")]),
        )
        .unwrap();
        assert_eq!(
            stored(&conn),
            (
                vec![(100, 1), (300, 2), (300, 5), (400, 6)],
                (100, 400, 6, 4)
            )
        );
        // Earlier ones are merged into place.
        extend(&conn, "c", &history(&[(50, 7, 0, "{}"), (300, 8, 0, "{}")])).unwrap();
        assert_eq!(
            stored(&conn),
            (
                vec![(50, 7), (100, 1), (300, 2), (300, 5), (300, 8), (400, 6)],
                (50, 400, 6, 6)
            )
        );
    }
}
