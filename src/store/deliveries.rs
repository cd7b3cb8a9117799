//! Delivery outcomes: recording them exactly once, releasing queued ones when they come due,
//! and reading them back.

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Row, ToSql};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{conversion_error, millis, time, RunId, StoreError, Tx};

/// What became of one trigger occurrence for one customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Expired,
    Capped,
    Unreachable,
    Control,
    /// Decided, but not yet due.
    Queued,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Sent,
        Outcome::Expired,
        Outcome::Capped,
        Outcome::Unreachable,
        Outcome::Control,
        Outcome::Queued,
    ];

    /// The name stored in `deliveries.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Expired => "expired",
            Outcome::Capped => "capped",
            Outcome::Unreachable => "unreachable",
            Outcome::Control => "control",
            Outcome::Queued => "queued",
        }
    }
}

/// One delivery outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub campaign: String,
    pub customer: String,
    /// Identifies the trigger occurrence (e.g. the event id, or the scheduled instant): one
    /// occurrence for one customer is recorded at most once.
    pub occurrence: String,
    pub outcome: Outcome,
    pub channel: Option<String>,
    /// The address used; for `moments` and `task`, the employee's id.
    pub address: Option<String>,
    pub variant: Option<String>,
    pub fired_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub content: Option<serde_json::Value>,
    /// Why it was not sent, or anything `explain` should tell.
    pub reason: Option<String>,
}

/// Queued deliveries a transaction has recorded but not yet written to `deliveries`: those due
/// by the release horizon of a run (its `now`), which its release pass decides. Held until
/// then, each is written once, with its outcome, instead of inserted as queued and then
/// updated (half the B-tree changes, and the queue's index is never touched). The queries of
/// this module see held deliveries as if they were written; anything else that reads
/// `deliveries` in the transaction has them written first, as the commit does (a delivery the
/// release pass leaves queued, for a paused campaign say), and so does holding more than
/// [`HELD_DELIVERIES`] (a mass send keeps memory flat).
#[derive(Default)]
pub(super) struct Held {
    /// The id of the next delivery recorded: every row gets its id when recorded, so that
    /// held deliveries keep their place in the queue's (due, campaign, customer, id) order.
    next_id: Option<i64>,
    /// Queued deliveries due at or before this instant (milliseconds) are held.
    horizon: Option<i64>,
    /// How many deliveries were ever held (written ones included).
    ever: u64,
    queue: BTreeMap<QueueKey, (RunId, Delivery)>,
    /// Where each held occurrence is in `queue`, by customer: a customer has few, and looking
    /// one up by the customer's id alone needs no key built (each lookup in a map ordered by
    /// whole occurrence keys compared the campaign's name first, then the customer's id).
    by_customer: HashMap<String, Vec<HeldOccurrence>, foldhash::fast::RandomState>,
}

/// A held delivery's occurrence, under its customer in [`Held::by_customer`].
struct HeldOccurrence {
    campaign: String,
    occurrence: String,
    queued: QueueKey,
}

impl Held {
    fn contains(&self, delivery: &Delivery) -> bool {
        self.by_customer
            .get(&delivery.customer)
            .is_some_and(|held| held.iter().any(|h| h.is(delivery)))
    }

    fn insert(&mut self, delivery: &Delivery, queued: QueueKey) {
        let occurrence = HeldOccurrence {
            campaign: delivery.campaign.clone(),
            occurrence: delivery.occurrence.clone(),
            queued,
        };
        match self.by_customer.get_mut(&delivery.customer) {
            Some(held) => held.push(occurrence),
            None => {
                self.by_customer
                    .insert(delivery.customer.clone(), vec![occurrence]);
            }
        }
    }

    /// Takes the delivery's occurrence out, with where it is in `queue`.
    fn remove(&mut self, delivery: &Delivery) -> Option<QueueKey> {
        let held = self.by_customer.get_mut(&delivery.customer)?;
        let index = held.iter().position(|h| h.is(delivery))?;
        let removed = held.swap_remove(index);
        if held.is_empty() {
            self.by_customer.remove(&delivery.customer);
        }
        Some(removed.queued)
    }
}

impl HeldOccurrence {
    fn is(&self, delivery: &Delivery) -> bool {
        self.occurrence == delivery.occurrence && self.campaign == delivery.campaign
    }
}

/// The `counters` row of the next delivery's id (see [`Held::next_id`]).
const NEXT_DELIVERY_ID: &str = "next_delivery_id";

/// How many queued deliveries a transaction holds before writing them all. About 1.1 KB each
/// (measured: 22 MB more at the peak of a run that held 29,669 instead of 8,192), so at most
/// ~36 MB; past it a mass send's deliveries are written as queued, read back and updated,
/// which took 13% of the instructions of a 100,000-customer run whose schedules fired.
const HELD_DELIVERIES: usize = 32768;

impl Tx<'_> {
    /// Queued deliveries due at or before `horizon` that this transaction records are decided
    /// in it too (a run's release pass): they are held rather than written (see [`Held`]).
    pub fn hold_deliveries_due_by(&self, horizon: DateTime<Utc>) {
        self.held.borrow_mut().horizon = Some(millis(horizon));
    }

    /// How many deliveries this transaction has held so far (see [`Held`]): a run keeps the
    /// customers whose processing held one, for its release pass.
    pub fn deliveries_held(&self) -> u64 {
        self.held.borrow().ever
    }

    /// Records a delivery outcome. Returns false, and records nothing, when this occurrence was
    /// already recorded for this customer and campaign.
    pub fn record_delivery(&self, run: RunId, delivery: Delivery) -> Result<bool, StoreError> {
        if self.held.borrow().contains(&delivery) || self.is_recorded(&delivery)? {
            return Ok(false);
        }
        let id = self.next_delivery_id()?;
        let due_at = millis(delivery.due_at);
        let held = self.held.borrow().horizon.is_some_and(|by| due_at <= by);
        if delivery.outcome != Outcome::Queued || !held {
            self.insert_delivery(id, run, &delivery)?;
            return Ok(true);
        }
        let queue_key = QueueKey {
            due_at,
            campaign: delivery.campaign.clone(),
            customer: delivery.customer.clone(),
            id,
        };
        let mut held = self.held.borrow_mut();
        held.ever += 1;
        held.insert(&delivery, queue_key.clone());
        held.queue.insert(queue_key, (run, delivery));
        let full = held.queue.len() >= HELD_DELIVERIES;
        drop(held);
        if full {
            self.write_held_deliveries()?;
        }
        Ok(true)
    }

    /// Decides a queued delivery: its outcome, channel, address, content… replace the queued
    /// row's, and `run` becomes the run that decided it. Returns false, and changes nothing,
    /// unless the occurrence is recorded and still queued, so nothing is decided twice.
    pub fn settle_delivery(&self, run: RunId, delivery: &Delivery) -> Result<bool, StoreError> {
        let held = {
            let mut held = self.held.borrow_mut();
            let queue_key = held.remove(delivery);
            queue_key.inspect(|key| {
                held.queue.remove(key);
            })
        };
        if let Some(queue_key) = held {
            self.insert_delivery(queue_key.id, run, delivery)?;
            return Ok(true);
        }
        let settled = self
            .tx
            .prepare_cached(
                "UPDATE deliveries SET run = ?1, outcome = ?5, channel = ?6, address = ?7,
                     variant = ?8, fired_at = ?9, due_at = ?10, content = ?11, reason = ?12
                 WHERE campaign = ?2 AND customer = ?3 AND occurrence = ?4
                     AND outcome = 'queued'",
            )?
            // Without the last parameter, the row's id (which stays).
            .execute(&RowValues::of(0, run, delivery).params(delivery)[..12])?;
        Ok(settled == 1)
    }

    /// The id the next delivery recorded would have, if this transaction recorded any: what
    /// `counters` must hold at the commit.
    pub(super) fn next_delivery_id_taken(&self) -> Option<(&'static str, i64)> {
        self.held
            .borrow()
            .next_id
            .map(|next| (NEXT_DELIVERY_ID, next))
    }

    /// Writes the held queued deliveries to `deliveries`.
    pub(super) fn write_held_deliveries(&self) -> Result<(), StoreError> {
        let queue = std::mem::take(&mut self.held.borrow_mut().queue);
        self.held.borrow_mut().by_customer.clear();
        for (key, (run, delivery)) in &queue {
            self.insert_delivery(key.id, *run, delivery)?;
        }
        Ok(())
    }

    fn is_recorded(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        let recorded = self
            .tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries
                     WHERE campaign = ?1 AND customer = ?2 AND occurrence = ?3)",
            )?
            .query_row(
                rusqlite::params![delivery.campaign, delivery.customer, delivery.occurrence],
                |row| row.get(0),
            )?;
        Ok(recorded)
    }

    fn next_delivery_id(&self) -> Result<i64, StoreError> {
        let next = match self.held.borrow().next_id {
            Some(next) => next,
            None => self.counter(NEXT_DELIVERY_ID)?,
        };
        self.held.borrow_mut().next_id = Some(next + 1);
        Ok(next)
    }

    fn insert_delivery(&self, id: i64, run: RunId, delivery: &Delivery) -> Result<(), StoreError> {
        let values = RowValues::of(id, run, delivery);
        self.tx
            .prepare_cached(
                "INSERT INTO deliveries (run, campaign, customer, occurrence, outcome, channel,
                     address, variant, fired_at, due_at, content, reason, id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(&values.params(delivery)[..])?;
        Ok(())
    }

    /// Every delivery outcome recorded for the customer, by due time, then campaign.
    pub fn deliveries_for_customer(&self, customer: &str) -> Result<Vec<Delivery>, StoreError> {
        self.write_held_deliveries()?;
        self.deliveries(
            "WHERE customer = ?1 ORDER BY due_at, campaign, id",
            customer,
        )
    }

    /// The next `limit` queued deliveries due at or before `until` that come after `after` in
    /// (due time, campaign, customer, row) order. Paging by key, not by offset, lets the caller
    /// settle or re-queue rows between pages: a delivery moved later comes round again.
    pub fn queued_page(
        &self,
        until: DateTime<Utc>,
        after: &QueueKey,
        limit: usize,
    ) -> Result<Vec<(QueueKey, Delivery)>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, id FROM deliveries
             WHERE outcome = 'queued' AND due_at <= ?1
               AND (due_at, campaign, customer, id) > (?2, ?3, ?4, ?5)
             ORDER BY due_at, campaign, customer, id LIMIT ?6"
        );
        let page = self
            .tx
            .prepare_cached(&sql)?
            .query_map(
                rusqlite::params![
                    millis(until),
                    after.due_at,
                    after.campaign,
                    after.customer,
                    after.id,
                    limit as i64
                ],
                |row| {
                    let delivery = delivery(row)?;
                    let key = QueueKey {
                        due_at: millis(delivery.due_at),
                        campaign: delivery.campaign.clone(),
                        customer: delivery.customer.clone(),
                        id: row.get(11)?,
                    };
                    Ok((key, delivery))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let held = self.held.borrow();
        let held = held
            .queue
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take_while(|(key, _)| key.due_at <= millis(until))
            .take(limit)
            .map(|(key, (_, delivery))| (key.clone(), delivery.clone()));
        Ok(merge_pages(page, held, limit))
    }

    /// How many deliveries were sent with due times in `[from, to)`: what `rate` and `cap`
    /// count.
    pub fn sent_between(
        &self,
        whose: Whose<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Each shape gets its own statement, so SQLite picks the index that fits it. One
        // customer's deliveries in one campaign are a range of the primary key: the `+` keeps
        // SQLite from scanning the campaign's sends by due time instead, as it would without
        // statistics (every send of a mass campaign in the window).
        let (sql, campaign, customer) = match whose {
            Whose::Campaign(campaign) => (
                "SELECT count(*) FROM deliveries WHERE campaign = ?1
                 AND outcome = 'sent' AND due_at >= ?3 AND due_at < ?4",
                Some(campaign),
                None,
            ),
            Whose::Customer(customer) => (
                "SELECT count(*) FROM deliveries WHERE customer = ?2
                 AND outcome = 'sent' AND due_at >= ?3 AND due_at < ?4",
                None,
                Some(customer),
            ),
            Whose::CustomerIn(customer, campaign) => (
                "SELECT count(*) FROM deliveries WHERE customer = ?2 AND campaign = ?1
                 AND outcome = 'sent' AND +due_at >= ?3 AND +due_at < ?4",
                Some(campaign),
                Some(customer),
            ),
        };
        let count: i64 = self.tx.prepare_cached(sql)?.query_row(
            rusqlite::params![campaign, customer, millis(from), millis(to)],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    fn deliveries(
        &self,
        clauses: &str,
        parameter: impl ToSql,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries {clauses}");
        let deliveries = self
            .tx
            .prepare_cached(&sql)?
            .query_map([parameter], delivery)?
            .collect::<Result<_, _>>()?;
        Ok(deliveries)
    }

    /// How many deliveries of `campaign` for `customer` were placed in a pace slot at each
    /// instant from `from` on: every delivery but those expired or held out as control counts,
    /// whatever became of it later, so that a slot once taken stays taken.
    pub fn pace_slots_held(
        &self,
        campaign: &str,
        customer: &str,
        from: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError> {
        // Counted here rather than by a GROUP BY, which SQLite would sort in a temporary B-tree
        // (16 KB pages of fresh memory) at every delivery: a customer has few in a campaign.
        let mut due_times = self
            .tx
            .prepare_cached(
                "SELECT due_at FROM deliveries
                 WHERE customer = ?1 AND campaign = ?3 AND due_at >= ?2
                   AND outcome NOT IN ('expired', 'control')",
            )?
            .query_map(rusqlite::params![customer, millis(from), campaign], |row| {
                row.get::<_, i64>(0)
            })?
            .collect::<Result<Vec<i64>, _>>()?;
        due_times.extend(self.held_due_times(campaign, customer, millis(from)));
        due_times.sort_unstable();
        let mut slots: Vec<(DateTime<Utc>, i64)> = Vec::new();
        for at in due_times {
            match slots.last_mut() {
                Some((last, n)) if millis(*last) == at => *n += 1,
                _ => slots.push((super::instant(at)?, 1)),
            }
        }
        Ok(slots)
    }

    /// The due times, from `from` on, of the held deliveries of `campaign` for `customer`.
    fn held_due_times(&self, campaign: &str, customer: &str, from: i64) -> Vec<i64> {
        let held = self.held.borrow();
        let Some(held) = held.by_customer.get(customer) else {
            return Vec::new();
        };
        held.iter()
            .filter(|h| h.campaign == campaign && h.queued.due_at >= from)
            .map(|h| h.queued.due_at)
            .collect()
    }

    /// How many deliveries of `campaign` each employee was given (moments, tasks), read once
    /// per run so that `assign … evenly` can balance across runs.
    pub fn employee_loads(&self, campaign: &str) -> Result<HashMap<String, i64>, StoreError> {
        let counts = self
            .tx
            .prepare_cached("SELECT employee, sent FROM employee_loads WHERE campaign = ?1")?
            .query_map([campaign], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(counts)
    }

    /// Counts one more delivery of `campaign` sent through `employee`.
    pub fn count_employee_send(&self, campaign: &str, employee: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO employee_loads (campaign, employee, sent) VALUES (?1, ?2, 1)
                 ON CONFLICT (campaign, employee) DO UPDATE SET sent = sent + 1",
            )?
            .execute([campaign, employee])?;
        Ok(())
    }
}

/// Whose sent deliveries `sent_between` counts.
#[derive(Clone, Copy, Debug)]
pub enum Whose<'a> {
    /// A whole campaign's (`rate`).
    Campaign(&'a str),
    /// One customer's, across campaigns (the policy's `cap`).
    Customer(&'a str),
    /// One customer's in one campaign (the campaign's `cap`).
    CustomerIn(&'a str, &'a str),
}

/// Where a page of the queue ends: the (due time, campaign, customer, row) of its last delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueKey {
    due_at: i64,
    campaign: String,
    customer: String,
    id: i64,
}

impl QueueKey {
    /// Before every queued delivery.
    pub fn start() -> QueueKey {
        QueueKey {
            due_at: i64::MIN,
            ..QueueKey::default()
        }
    }

    /// The key of the same delivery once moved to `due_at`.
    pub fn moved_to(&self, due_at: DateTime<Utc>) -> QueueKey {
        QueueKey {
            due_at: millis(due_at),
            ..self.clone()
        }
    }
}

/// The first `limit` of two pages in queue order.
fn merge_pages(
    stored: Vec<(QueueKey, Delivery)>,
    held: impl Iterator<Item = (QueueKey, Delivery)>,
    limit: usize,
) -> Vec<(QueueKey, Delivery)> {
    let mut page = stored;
    page.extend(held);
    page.sort_by(|a, b| a.0.cmp(&b.0));
    page.truncate(limit);
    page
}

/// The columns `delivery` reads, in its order.
const DELIVERY_COLUMNS: &str = "campaign, customer, occurrence, outcome, channel, address,
    variant, fired_at, due_at, content, reason";

/// The values of a `deliveries` row that are not the delivery's own fields as they are.
struct RowValues {
    id: i64,
    run: i64,
    fired_at: i64,
    due_at: i64,
    content: Option<String>,
}

impl RowValues {
    fn of(id: i64, run: RunId, delivery: &Delivery) -> RowValues {
        RowValues {
            id,
            run: run.0,
            fired_at: millis(delivery.fired_at),
            due_at: millis(delivery.due_at),
            content: delivery.content.as_ref().map(|c| c.to_string()),
        }
    }

    /// The parameters of the row, numbered as in `insert_delivery` and `settle_delivery`
    /// (which leaves out the last, the row's id). References, not boxes: this is called for
    /// every delivery a run records.
    fn params<'a>(&'a self, delivery: &'a Delivery) -> [&'a dyn ToSql; 13] {
        [
            &self.run,
            &delivery.campaign,
            &delivery.customer,
            &delivery.occurrence,
            &delivery.outcome,
            &delivery.channel,
            &delivery.address,
            &delivery.variant,
            &self.fired_at,
            &self.due_at,
            &self.content,
            &delivery.reason,
            &self.id,
        ]
    }
}

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.as_str().to_sql()
    }
}

fn delivery(row: &Row) -> rusqlite::Result<Delivery> {
    let outcome: String = row.get(3)?;
    let content: Option<String> = row.get(9)?;
    Ok(Delivery {
        campaign: row.get(0)?,
        customer: row.get(1)?,
        occurrence: row.get(2)?,
        outcome: Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == outcome)
            .ok_or_else(|| {
                conversion_error(3, Type::Text, format!("unknown outcome `{outcome}`"))
            })?,
        channel: row.get(4)?,
        address: row.get(5)?,
        variant: row.get(6)?,
        fired_at: time(row, 7)?,
        due_at: time(row, 8)?,
        content: content
            .map(|c| serde_json::from_str(&c))
            .transpose()
            .map_err(|e| conversion_error(9, Type::Text, e.to_string()))?,
        reason: row.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_772_352_000 + minute * 60, 0).unwrap()
    }

    /// More deliveries due within a run than it holds: the held ones are written as queued when
    /// the limit is reached, and the queue, paged and settled, is the same either way.
    #[test]
    fn deliveries_past_the_held_limit_are_written_and_still_released_in_order() {
        let mut store = Store::open_in_memory().unwrap();
        let count = HELD_DELIVERIES + 3;
        store
            .transaction(|tx| {
                let run = tx.begin_run(at(10_000))?;
                tx.hold_deliveries_due_by(at(10_000));
                // Recorded out of queue order (due times repeat every 9,000 minutes), customers
                // in turn.
                for i in (0..count).rev() {
                    let delivery = Delivery {
                        campaign: "c".into(),
                        customer: format!("k{}", i % 7),
                        occurrence: format!("event:{i}"),
                        outcome: Outcome::Queued,
                        channel: None,
                        address: None,
                        variant: None,
                        fired_at: at(0),
                        due_at: at(i as i64 % 9_000),
                        content: None,
                        reason: None,
                    };
                    assert!(tx.record_delivery(run, delivery)?);
                }
                assert_eq!(tx.deliveries_held(), count as u64);
                assert_eq!(
                    tx.held.borrow().queue.len(),
                    3,
                    "the first HELD_DELIVERIES were written when the limit was reached"
                );
                let mut after = QueueKey::start();
                let mut released = 0;
                loop {
                    let page = tx.queued_page(at(10_000), &after, 1024)?;
                    let Some((last, _)) = page.last() else { break };
                    let previous = std::mem::replace(&mut after, last.clone());
                    let mut keys = std::iter::once(&previous).chain(page.iter().map(|(k, _)| k));
                    let mut before = keys.next().expect("the page's start");
                    for key in keys {
                        assert!(key > before, "in queue order, across pages too");
                        before = key;
                    }
                    for (_, mut delivery) in page {
                        delivery.outcome = Outcome::Sent;
                        assert!(tx.settle_delivery(run, &delivery)?, "settled once");
                        released += 1;
                    }
                }
                assert_eq!(released, count);
                assert!(tx
                    .queued_page(at(10_000), &QueueKey::start(), 10)?
                    .is_empty());
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let sent: i64 = store
            .scratch(|tx| {
                Ok::<_, StoreError>(tx.connection()?.query_row(
                    "SELECT count(*) FROM deliveries WHERE outcome = 'sent'",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(sent, count as i64);
    }
}
