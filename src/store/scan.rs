//! Reading many customers with their tags and events: every customer, for whole-audience
//! evaluation, or those with events in a range, for incremental runs.
//!
//! A whole pass reads three tables in customer order (customers, tags, histories) and merges
//! them here, so memory holds one customer at a time however large the store. Tags and events
//! of ids that were never imported as customers are skipped.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::{Row, Rows};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::history::{self, Decoder};
use super::tag_log;
use super::{StoreError, Tx};
use crate::eval::{self, JsonKey};

/// Which customer attributes a pass parses: evaluating a few campaigns reads a handful of
/// attributes, and parsing the others for every customer would cost more than evaluating.
#[derive(Clone, Copy, Debug)]
pub enum Attributes<'a> {
    All,
    /// A handful of names: looked through one by one, which costs less than hashing each key
    /// of each customer (measured: hashing made a run that reads nearly every attribute 2.7%
    /// dearer than parsing them all).
    Only(&'a [String]),
}

impl Attributes<'_> {
    fn wants(&self, name: &str) -> bool {
        match self {
            Attributes::All => true,
            Attributes::Only(names) => names.iter().any(|wanted| wanted == name),
        }
    }
}

/// Which of a customer's events a whole-audience pass fills in.
#[derive(Clone, Copy, Debug)]
pub enum Events<'a> {
    All,
    /// Only events of these names: an estimate's audiences look at events through `did` alone,
    /// and in the benchmark's shop more than half of the events are of names no audience
    /// counts (page views), which the pass would otherwise copy and evaluation step over.
    Named(&'a HashSet<String>),
}

impl Tx<'_> {
    /// Calls `f` once per customer, in id order, with the customer as evaluation reads it:
    /// the `events` asked for in time order, attributes still as stored (see [`Scanned`]). The
    /// customer is refilled in place for the next one, reusing its strings, so a pass allocates
    /// next to nothing per event; `f` may swap it for another (whose memory is then reused).
    pub fn for_each_evaluated<E: From<StoreError>>(
        &self,
        events: Events,
        mut f: impl FnMut(&mut Scanned) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut fill = Evaluated {
            only: match events {
                Events::All => None,
                Events::Named(names) => Some(names.clone()),
            },
            ..Evaluated::default()
        };
        self.scan(&mut fill, |fill| f(&mut fill.scanned))
    }

    fn scan<F: Fill, E: From<StoreError>>(
        &self,
        fill: &mut F,
        mut each: impl FnMut(&mut F) -> Result<(), E>,
    ) -> Result<(), E> {
        let sql = |text| self.tx.prepare(text).map_err(StoreError::from);
        let mut customers = sql("SELECT id, attributes FROM customers ORDER BY id")?;
        let mut tags = sql(
            "SELECT customer, tag, removed_at IS NULL, events FROM tags ORDER BY customer, tag",
        )?;
        let mut histories = sql("SELECT customer, events FROM event_histories ORDER BY customer")?;
        let mut customers = customers.query([]).map_err(StoreError::from)?;
        let mut tags = Follower::new(tags.query([]).map_err(StoreError::from)?);
        let mut histories = Follower::new(histories.query([]).map_err(StoreError::from)?);
        let mut id = String::new();
        while let Some(row) = customers.next().map_err(StoreError::from)? {
            id.clear();
            id.push_str(text(row, 0)?);
            fill.customer(&id, text(row, 1)?)?;
            tags.for_customer(&id, |row| fill.tag(StoredTag::of(row)?))?;
            histories.for_customer(&id, |row| fill.history(self, row.get_ref(1)?.as_blob()?))?;
            fill.done();
            each(fill)?;
        }
        Ok(())
    }

    /// The customers (imported or not) with an event at an instant in `(after, until]`, in id
    /// order.
    ///
    /// The index on the histories' last and first instants finds the histories that reach into
    /// the range (asking for id order instead would make SQLite scan every history). One whose
    /// last event is in the range has an event in it, known from the index alone; only one that
    /// reaches past `until` (events dated after the range) is read to look. Tag events kept
    /// with their tags are found by `tag_changes`, which is ordered by time.
    pub fn customers_with_events_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let (after, until) = (after.timestamp_millis(), until.timestamp_millis());
        let spanning: Vec<(String, i64)> = self
            .tx
            .prepare_cached(
                "SELECT customer, last_at FROM event_histories
                 WHERE last_at > ?1 AND first_at <= ?2",
            )?
            .query_map([after, until], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut ids: Vec<String> = self
            .tx
            .prepare_cached("SELECT customer FROM tag_changes WHERE at > ?1 AND at <= ?2")?
            .query_map([after, until], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for (id, last) in spanning {
            if last <= until || self.has_event_between(&id, after, until)? {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn has_event_between(
        &self,
        customer: &str,
        after: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let found = super::with_history(&self.tx, customer, |bytes| {
            for event in Decoder::new(bytes) {
                let at = event?.at;
                if at > until {
                    break;
                }
                if at > after {
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        Ok(found == Some(true))
    }
}

fn text<'r>(row: &'r Row, column: usize) -> Result<&'r str, StoreError> {
    Ok(row.get_ref(column)?.as_str()?)
}

/// A row of `tags`: the tag, whether the customer has it, and its events (see `tag_log.rs`).
pub(super) struct StoredTag<'a> {
    pub tag: &'a str,
    pub held: bool,
    pub events: &'a [u8],
}

impl<'a> StoredTag<'a> {
    /// The tag of a row whose columns 1 to 3 are a `tags` row's tag, whether it is held, and
    /// its events.
    pub(super) fn of(row: &'a Row) -> Result<StoredTag<'a>, StoreError> {
        Ok(StoredTag {
            tag: row.get_ref(1)?.as_str()?,
            held: row.get(2)?,
            events: row.get_ref(3)?.as_blob()?,
        })
    }
}

/// Receives one customer of a pass, part by part.
pub(super) trait Fill {
    /// Starts the next customer (tags and events empty).
    fn customer(&mut self, id: &str, attributes: &str) -> Result<(), StoreError>;
    /// One of the customer's tag rows, in tag order, before its history.
    fn tag(&mut self, tag: StoredTag) -> Result<(), StoreError>;
    /// The customer's packed history.
    fn history(&mut self, tx: &Tx, bytes: &[u8]) -> Result<(), StoreError>;
    /// The customer is complete.
    fn done(&mut self) {}
}

/// A customer of a whole-audience pass: id, tags and events ready for evaluation, attributes
/// still the stored JSON until [`Scanned::parse_attributes`]. Parsing them costs about as much
/// as reading the rest, so a pass can leave it to the thread that evaluates.
#[derive(Debug, Default)]
pub struct Scanned {
    pub customer: eval::Customer,
    attributes: String,
}

impl Scanned {
    /// Parses the attributes `wanted` into `customer.attributes`. Entries of the attributes the
    /// previous customer had are updated in place rather than rebuilt.
    pub fn parse_attributes(&mut self, wanted: Attributes) {
        let out = &mut self.customer.attributes;
        // Attributes this customer lacks are left null, then removed: a null reads as no value
        // anyway (stored attributes have none: imports merge them as removals).
        out.values_mut().for_each(|value| *value = Json::Null);
        // Stored attributes were checked on import; text that is not an object reads as none.
        let _ = serde_json::Deserializer::from_str(&self.attributes).deserialize_map(Wanted {
            wanted,
            out: &mut *out,
        });
        out.retain(|_, value| !value.is_null());
    }
}

/// Customers as evaluation reads them, refilled in place.
#[derive(Default)]
pub(super) struct Evaluated {
    pub(super) scanned: Scanned,
    /// How many of `customer.events` hold the current customer's events (the slots after them
    /// still hold an earlier customer's, until `done`).
    filled: usize,
    /// Event slots not in use, kept for their strings.
    spare: Vec<eval::Event>,
    /// Event names by id, copied from the transaction's as they are met.
    names: Vec<Option<eval::Name>>,
    /// How many of the current customer's events are tag events kept with its tags: filled
    /// first, before its history, and put in time order with it by `done`.
    tag_events: usize,
    /// The properties text of the tag whose events are being filled.
    tag_properties: Vec<u8>,
    /// The names of the events filled in (`None`: all of them; see [`Events`]).
    only: Option<HashSet<String>>,
    /// Whether events of a name are filled in, by name id, as met.
    kept: Vec<Option<bool>>,
}

impl Evaluated {
    /// The next event slot of the current customer, holding an earlier event's values.
    fn next_slot(&mut self) -> &mut eval::Event {
        let events = &mut self.scanned.customer.events;
        if self.filled == events.len() {
            events.push(self.spare.pop().unwrap_or_else(|| eval::Event {
                id: 0,
                name: eval::Name::default(),
                at: 0,
                properties: eval::Properties::default(),
            }));
        }
        self.filled += 1;
        &mut events[self.filled - 1]
    }

    /// Whether events named `name` are filled in.
    fn keeps(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(name))
    }

    /// Whether events of name id `id`, named `name`, are filled in (remembered by id).
    fn keeps_id(&mut self, id: u32, name: &str) -> bool {
        if self.only.is_none() {
            return true;
        }
        let index = id as usize;
        if let Some(Some(kept)) = self.kept.get(index) {
            return *kept;
        }
        let kept = self.keeps(name);
        if self.kept.len() <= index {
            self.kept.resize(index + 1, None);
        }
        self.kept[index] = Some(kept);
        kept
    }
}

impl Fill for Evaluated {
    fn customer(&mut self, id: &str, attributes: &str) -> Result<(), StoreError> {
        let scanned = &mut self.scanned;
        scanned.customer.id.clear();
        scanned.customer.id.push_str(id);
        scanned.customer.tags.clear();
        scanned.attributes.clear();
        scanned.attributes.push_str(attributes);
        self.filled = 0;
        Ok(())
    }

    fn tag(&mut self, tag: StoredTag) -> Result<(), StoreError> {
        if tag.held {
            self.scanned.customer.tags.insert(tag.tag.to_owned());
        }
        if tag.events.is_empty() {
            return Ok(());
        }
        let mut properties = std::mem::take(&mut self.tag_properties);
        tag_log::properties_into(tag.tag, &mut properties);
        for stored in tag_log::decode(tag.events) {
            let stored = stored?;
            let name = stored.eval_name();
            if !self.keeps(&name) {
                continue;
            }
            let event = self.next_slot();
            event.id = stored.id;
            event.at = stored.at;
            event.name = name;
            event.properties.set_raw(&properties);
        }
        self.tag_properties = properties;
        self.tag_events = self.filled;
        Ok(())
    }

    fn history(&mut self, tx: &Tx, bytes: &[u8]) -> Result<(), StoreError> {
        // After the tag events, if any: `done` puts them all in time order.
        for packed in Decoder::new(bytes) {
            let packed = packed?;
            let name = name(&mut self.names, tx, packed.name)?;
            if !self.keeps_id(packed.name, &name) {
                continue;
            }
            let event = self.next_slot();
            event.id = packed.id;
            event.at = packed.at;
            event.name = name;
            event.properties.set_raw(packed.properties);
        }
        Ok(())
    }

    fn done(&mut self) {
        let events = &mut self.scanned.customer.events;
        in_time_order(
            &mut events[..self.filled],
            std::mem::take(&mut self.tag_events),
        );
        self.spare
            .extend(events.drain(self.filled.min(events.len())..));
        // Events added to a customer after it was filled (a run's tag events) come back here
        // as slots too: without a bound, a run over a million customers kept one per tag
        // change (measured: 76 → 262 MB).
        self.spare.truncate(SPARE_EVENTS);
    }
}

/// Puts a customer's events in (time, id) order: its first `tags` are tag events (in any
/// order), the rest its history (in order). Each tag event is moved to its place in what
/// follows it, last first: a customer has few tag events, and its events are large to swap, so
/// this moves far less than sorting them all.
fn in_time_order(events: &mut [eval::Event], tags: usize) {
    let by_time = |event: &eval::Event| (event.at, event.id);
    if tags > MERGED_TAG_EVENTS {
        events.sort_unstable_by_key(by_time);
        return;
    }
    for tag in (0..tags).rev() {
        let key = by_time(&events[tag]);
        let place = events[tag + 1..].partition_point(|event| by_time(event) < key);
        events[tag..=tag + place].rotate_left(1);
    }
}

/// Beyond how many tag events a customer's events are sorted rather than merged.
const MERGED_TAG_EVENTS: usize = 8;

/// At most how many unused event slots a pass keeps (more than any customer is likely to need
/// at once; a customer with more simply allocates the rest).
const SPARE_EVENTS: usize = 4096;

/// The name of an event, from `names` or, for a name not met yet, from the transaction (whose
/// cache is shared with writers, so it is borrowed only on a miss).
fn name(names: &mut Vec<Option<eval::Name>>, tx: &Tx, id: u32) -> Result<eval::Name, StoreError> {
    let index = id as usize;
    if let Some(Some(name)) = names.get(index) {
        return Ok(*name);
    }
    let name = history::with_name(&tx.names, &tx.tx, id, eval::Name::new)?;
    if names.len() <= index {
        names.resize(index + 1, None);
    }
    names[index] = Some(name);
    Ok(name)
}

/// Reads the wanted members of a JSON object into a map, skipping the others unparsed.
struct Wanted<'a, 'm> {
    wanted: Attributes<'a>,
    out: &'m mut Map<String, Json>,
}

impl<'de> Visitor<'de> for Wanted<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A key the map holds already (the previous customer's, in a pass that refills one
        // customer) was wanted then: parsing more than is wanted is harmless, and most
        // customers have the keys of the one before.
        while let Some(JsonKey(key)) = map.next_key()? {
            if let Some(value) = self.out.get_mut(key.as_ref()) {
                *value = map.next_value()?;
            } else if self.wanted.wants(&key) {
                self.out.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A query ordered by customer id (its first column), read in step with the customers.
struct Follower<'s> {
    rows: Rows<'s>,
    started: bool,
}

impl<'s> Follower<'s> {
    fn new(rows: Rows<'s>) -> Self {
        Follower {
            rows,
            started: false,
        }
    }

    /// Calls `each` with the rows of `customer`, skipping rows of smaller ids (not customers).
    /// The first row of a later customer stays current for the next call.
    fn for_customer(
        &mut self,
        customer: &str,
        mut each: impl FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if !self.started {
            self.rows.advance()?;
            self.started = true;
        }
        while let Some(row) = self.rows.get() {
            // Bytes compare as the texts do, without checking the UTF-8 of every row's id.
            match row.get_ref(0)?.as_bytes()?.cmp(customer.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => each(row)?,
                std::cmp::Ordering::Greater => break,
            }
            self.rows.advance()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEvent, Store};

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_772_352_000 + minute * 60, 0).unwrap()
    }

    /// Customers a..e with 3, 0, 5, 1, 2 events (e is not imported), tags on a and c.
    fn store() -> Store {
        filled(Store::open_in_memory().unwrap())
    }

    fn filled(mut store: Store) -> Store {
        store
            .transaction(|tx| {
                let attributes = serde_json::json!({"city": "上海", "age": 30});
                for id in ["a", "b", "c", "d"] {
                    tx.upsert_customer(id, attributes.as_object().unwrap())?;
                }
                for (customer, count) in [("a", 3), ("c", 5), ("d", 1), ("e", 2)] {
                    for minute in 0..count {
                        let properties = format!(r#"{{"n":{minute}}}"#);
                        tx.add_event(&NewEvent {
                            customer,
                            name: ["view", "buy"][minute as usize % 2],
                            at: at(10 * minute),
                            properties: &properties,
                        })?;
                    }
                }
                tx.add_tag("a", "VIP", at(100))?;
                tx.add_tag("c", "新客", at(-1))?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        store
    }

    /// The same customers in a store in memory and in one in a file under `dir` (where reads by
    /// id happen on a second thread).
    fn in_memory_and_in_a_file(dir: &std::path::Path) -> [Store; 2] {
        let file = Store::open(dir.join("store.db")).unwrap();
        [store(), filled(file)]
    }

    /// Every customer as a whole-audience pass hands it out, attributes parsed.
    fn evaluated(store: &mut Store) -> Vec<eval::Customer> {
        let mut evaluated = Vec::new();
        store
            .scratch(|tx| {
                tx.for_each_evaluated(Events::All, |scanned| {
                    scanned.parse_attributes(Attributes::All);
                    evaluated.push(scanned.customer.clone());
                    Ok::<_, StoreError>(())
                })
            })
            .unwrap();
        evaluated
    }

    /// Every customer as one read of its own gives it (`None` for ids never imported).
    fn one_by_one(store: &mut Store, ids: &[String]) -> Vec<eval::Customer> {
        store
            .scratch(|tx| {
                let mut customers = Vec::new();
                for id in ids {
                    if let Some(stored) = tx.customer(id)? {
                        let events = tx.events_for_customer(id, ..)?;
                        customers.push(crate::run::to_customer(&stored, events));
                    }
                }
                Ok::<_, StoreError>(customers)
            })
            .unwrap()
    }

    /// What `for_customers` hands out for `ids`, attributes parsed.
    fn by_id(store: &mut Store, ids: &[String]) -> Vec<eval::Customer> {
        let mut customers = Vec::new();
        store
            .scratch(|tx| {
                tx.for_customers(ids, |scanned| {
                    scanned.parse_attributes(Attributes::All);
                    customers.push(scanned.customer.clone());
                    Ok::<_, StoreError>(())
                })
            })
            .unwrap();
        customers
    }

    #[test]
    fn evaluation_passes_refill_customers_as_single_reads_read_them() {
        let mut store = store();
        let evaluated = evaluated(&mut store);
        let counts: Vec<_> = evaluated.iter().map(|c| c.events.len()).collect();
        assert_eq!(counts, [4, 0, 6, 1], "a and c also have their tag events");
        let ids: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(evaluated, one_by_one(&mut store, &ids));
        assert_eq!(evaluated[2].events[4].properties.map()["n"], 3);
    }

    #[test]
    fn customers_read_by_id_are_those_single_reads_give_in_memory_and_from_a_file() {
        // Out of order, repeated, never imported ("e" has events only, "z" nothing): in a file
        // the rows are read on a second thread, in memory on the caller's.
        let ids: Vec<String> = ["d", "e", "a", "z", "c", "b", "a"].map(String::from).into();
        let mut memory = store();
        let expected = one_by_one(&mut memory, &ids);
        assert_eq!(expected.len(), 5);
        assert_eq!(by_id(&mut memory, &ids), expected);
        let dir = tempfile::tempdir().unwrap();
        let mut file = filled(Store::open(dir.path().join("store.db")).unwrap());
        assert_eq!(by_id(&mut file, &ids), expected);
    }

    #[test]
    fn customers_read_as_changed_include_the_transactions_own_changes() {
        // From a file, where `for_customers` reads on a second thread: the store as the
        // transaction found it. Read as changed, the tag this transaction added is there.
        let dir = tempfile::tempdir().unwrap();
        let mut store = filled(Store::open(dir.path().join("store.db")).unwrap());
        let ids: Vec<String> = ["d", "a", "z"].map(String::from).into();
        let (snapshot, changed, single) = store
            .scratch(|tx| {
                tx.add_tag("d", "新客", at(200))?;
                let read = |as_changed: bool| -> Result<Vec<eval::Customer>, StoreError> {
                    let mut customers = Vec::new();
                    let each = |scanned: &mut Scanned| {
                        scanned.parse_attributes(Attributes::All);
                        customers.push(scanned.customer.clone());
                        Ok::<_, StoreError>(())
                    };
                    match as_changed {
                        true => tx.for_customers_as_changed(&ids, each)?,
                        false => tx.for_customers(&ids, each)?,
                    }
                    Ok(customers)
                };
                let mut single = Vec::new();
                for id in &ids {
                    if let Some(stored) = tx.customer(id)? {
                        let events = tx.events_for_customer(id, ..)?;
                        single.push(crate::run::to_customer(&stored, events));
                    }
                }
                Ok::<_, StoreError>((read(false)?, read(true)?, single))
            })
            .unwrap();
        assert!(
            !snapshot[0].tags.contains("新客"),
            "the reading thread's snapshot"
        );
        assert!(changed[0].tags.contains("新客"));
        assert_eq!(
            changed, single,
            "as single reads in the transaction give them"
        );
    }

    #[test]
    fn reads_by_id_span_batches_and_keep_each_customers_tags_with_it() {
        // More ids than one batch of the reading statements takes, with a customer of two tags
        // on either side of each batch boundary.
        let batch = crate::store::read_ahead::BATCH;
        let mut ids: Vec<String> = ["a", "b", "c", "d", "e", "z", "a"]
            .iter()
            .cycle()
            .take(2 * batch + 3)
            .map(|id| id.to_string())
            .collect();
        for boundary in [batch, 2 * batch] {
            ids[boundary - 1] = "a".into();
            ids[boundary] = "a".into();
        }
        let second_tag = |mut store: Store| {
            store
                .transaction(|tx| tx.add_tag("a", "老客", at(5)).map(drop))
                .unwrap();
            store
        };
        let mut memory = second_tag(store());
        let expected = one_by_one(&mut memory, &ids);
        assert_eq!(expected[0].tags.len(), 2);
        assert_eq!(by_id(&mut memory, &ids), expected);
        let dir = tempfile::tempdir().unwrap();
        let mut file = second_tag(filled(Store::open(dir.path().join("store.db")).unwrap()));
        assert_eq!(by_id(&mut file, &ids), expected);
    }

    #[test]
    fn a_customer_s_check_reads_as_last_set() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .transaction(|tx| {
                tx.set_check("c", Some(at(90)))?;
                tx.set_check("d", Some(at(90)))?;
                tx.set_check("d", None)?;
                let checks = ["a", "c", "d"].map(|id| tx.check(id));
                assert_eq!(
                    checks.into_iter().collect::<Result<Vec<_>, _>>()?,
                    [None, Some(at(90).timestamp_millis()), None]
                );
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_tag_lost_and_taken_again_keeps_its_events_in_time_order_for_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        for mut store in in_memory_and_in_a_file(dir.path()) {
            // a: views at 0, 20, buy at 10, VIP added at 100 (see `filled`); then lost, taken
            // again, and another tag added and lost between, with an event between those.
            store
                .transaction(|tx| {
                    assert!(tx.remove_tag("a", "VIP", at(110))?.is_some());
                    assert!(
                        tx.remove_tag("a", "VIP", at(111))?.is_none(),
                        "already lost"
                    );
                    tx.add_tag("a", "老客", at(112))?;
                    tx.add_event(&NewEvent {
                        customer: "a",
                        name: "view",
                        at: at(115),
                        properties: "{}",
                    })?;
                    assert!(tx.add_tag("a", "VIP", at(120))?.is_some());
                    assert!(tx.add_tag("a", "VIP", at(121))?.is_none(), "already held");
                    tx.remove_tag("a", "老客", at(130)).map(drop)
                })
                .unwrap();
            let ids: Vec<String> = ["a".to_string()].into();
            let a = &one_by_one(&mut store, &ids)[0];
            let timeline: Vec<(i64, &str)> = a.events.iter().map(|e| (e.at, &*e.name)).collect();
            let minute = |m: i64| at(m).timestamp_millis();
            assert_eq!(
                timeline,
                [
                    (minute(0), "view"),
                    (minute(10), "buy"),
                    (minute(20), "view"),
                    (minute(100), "tag_added"),
                    (minute(110), "tag_removed"),
                    (minute(112), "tag_added"),
                    (minute(115), "view"),
                    (minute(120), "tag_added"),
                    (minute(130), "tag_removed"),
                ]
            );
            assert_eq!(a.events[5].properties.map()["tag"], "老客");
            assert_eq!(a.tags, ["VIP".to_string()].into_iter().collect());
            assert_eq!(&by_id(&mut store, &ids)[0], a);
            assert_eq!(&evaluated(&mut store)[0], a);
            let found = store
                .scratch(|tx| tx.customers_with_events_between(at(125), at(130)))
                .unwrap();
            assert_eq!(
                found,
                ["a"],
                "a tag event kept with its tag is found by time"
            );
        }
    }

    #[test]
    fn tag_events_filled_first_are_put_in_time_order_with_the_history() {
        let event = |at: i64, id: i64| eval::Event {
            id,
            name: eval::Name::default(),
            at,
            properties: eval::Properties::default(),
        };
        let order = |events: &[eval::Event]| events.iter().map(|e| e.id).collect::<Vec<_>>();
        // (tag events as filled: tag after tag; then the history), each case a layout.
        let many: Vec<(i64, i64)> = (0..10).map(|i| (20 - 2 * i, 100 + i)).collect();
        type Times<'a> = &'a [(i64, i64)];
        let cases: [(Times, Times); 7] = [
            (&[], &[(1, 1), (2, 2)]),
            (&[(9, 9)], &[(1, 1), (2, 2)]),
            (&[(0, 3)], &[(1, 1), (2, 2)]),
            (&[(1, 5), (3, 6)], &[(1, 1), (2, 2), (4, 4)]),
            (&[(5, 8), (7, 9), (2, 7)], &[(1, 1), (3, 2)]),
            (&[(4, 2), (8, 3)], &[]),
            (&many, &[(1, 1), (11, 2), (30, 3)]),
        ];
        for (tags, history) in cases {
            let mut events: Vec<eval::Event> = tags
                .iter()
                .chain(history)
                .map(|&(at, id)| event(at, id))
                .collect();
            let mut expected = order(&events);
            expected.sort_by_key(|id| {
                let e = events.iter().find(|e| e.id == *id).unwrap();
                (e.at, e.id)
            });
            in_time_order(&mut events, tags.len());
            assert_eq!(order(&events), expected, "{tags:?} then {history:?}");
        }
    }

    #[test]
    fn spare_event_slots_stay_bounded_when_customers_gain_events_after_their_fill() {
        let mut fill = Evaluated::default();
        for round in 0..5 {
            fill.customer("a", "{}").unwrap();
            fill.done();
            // As a run's tag rules do: events added to the filled customer.
            let event = eval::Event {
                id: round,
                name: "tag_added".into(),
                at: 0,
                properties: eval::Properties::default(),
            };
            fill.scanned.customer.events.extend(vec![event; 3000]);
        }
        assert_eq!(fill.spare.len(), SPARE_EVENTS);
    }

    #[test]
    fn evaluation_passes_fill_in_only_the_events_asked_for() {
        let mut store = store();
        let all = evaluated(&mut store);
        let named = HashSet::from(["buy".to_string(), "tag_added".to_string()]);
        let mut only = Vec::new();
        store
            .scratch(|tx| {
                tx.for_each_evaluated(Events::Named(&named), |scanned| {
                    only.push(scanned.customer.events.clone());
                    Ok::<_, StoreError>(())
                })
            })
            .unwrap();
        let expected: Vec<Vec<eval::Event>> = all
            .into_iter()
            .map(|customer| {
                (customer.events.into_iter())
                    .filter(|event| named.contains(&*event.name))
                    .collect()
            })
            .collect();
        let counts: Vec<usize> = expected.iter().map(Vec::len).collect();
        assert_eq!(counts, [2, 0, 3, 0], "a's and c's buys and tag events");
        assert_eq!(only, expected);
    }

    #[test]
    fn evaluation_passes_parse_only_the_attributes_asked_for() {
        let mut store = store();
        let only = ["age".to_string(), "vip".to_string()];
        let mut attributes = Vec::new();
        store
            .scratch(|tx| {
                tx.for_each_evaluated(Events::All, |scanned| {
                    scanned.parse_attributes(Attributes::Only(&only));
                    attributes.push(serde_json::Value::Object(
                        scanned.customer.attributes.clone(),
                    ));
                    Ok::<_, StoreError>(())
                })
            })
            .unwrap();
        assert_eq!(attributes, vec![serde_json::json!({"age": 30}); 4]);
    }

    #[test]
    fn parsed_attributes_replace_the_previous_customers() {
        let mut scanned = Scanned::default();
        let mut parse = |json: &str| {
            scanned.attributes = json.to_owned();
            scanned.parse_attributes(Attributes::All);
            serde_json::Value::Object(scanned.customer.attributes.clone())
        };
        assert_eq!(
            parse(r#"{"a":1,"b":"x"}"#),
            serde_json::json!({"a": 1, "b": "x"})
        );
        assert_eq!(
            parse(r#"{"b":"y","c":true}"#),
            serde_json::json!({"b": "y", "c": true})
        );
        assert_eq!(parse("not an object"), serde_json::json!({}));
    }

    #[test]
    fn customers_with_events_in_a_range_are_found_in_id_order() {
        let ids = |after, until| {
            store()
                .scratch(|tx| tx.customers_with_events_between(at(after), at(until)))
                .unwrap()
        };
        // (5, 20]: a (10, 20), c (10, 20), e (events, not a customer), not d (0 only).
        assert_eq!(ids(5, 20), ["a", "c", "e"]);
        assert_eq!(
            ids(20, 30),
            ["c"],
            "a's history spans (20, 30] without an event in it"
        );
        assert_eq!(ids(40, 99), Vec::<String>::new());
        assert_eq!(ids(99, 100), ["a"], "the tag event");
    }
}
