//! Delivery outcomes: recording them exactly once, releasing queued ones when they come due,
//! and reading them back.

use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{params_from_iter, Row, ToSql};
use std::collections::HashMap;

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

impl Tx<'_> {
    /// Records a delivery outcome. Returns false, and records nothing, when this occurrence was
    /// already recorded for this customer and campaign.
    pub fn record_delivery(&self, run: RunId, delivery: &Delivery) -> Result<bool, StoreError> {
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO deliveries (run, campaign, customer, occurrence, outcome, channel,
                     address, variant, fired_at, due_at, content, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (campaign, customer, occurrence) DO NOTHING",
            )?
            .execute(params_from_iter(delivery_params(run, delivery)))?;
        Ok(inserted == 1)
    }

    /// Decides a queued delivery: its outcome, channel, address, content… replace the queued
    /// row's, and `run` becomes the run that decided it. Returns false, and changes nothing,
    /// unless the occurrence is recorded and still queued, so nothing is decided twice.
    pub fn settle_delivery(&self, run: RunId, delivery: &Delivery) -> Result<bool, StoreError> {
        let settled = self
            .tx
            .prepare_cached(
                "UPDATE deliveries SET run = ?1, outcome = ?5, channel = ?6, address = ?7,
                     variant = ?8, fired_at = ?9, due_at = ?10, content = ?11, reason = ?12
                 WHERE campaign = ?2 AND customer = ?3 AND occurrence = ?4
                     AND outcome = 'queued'",
            )?
            .execute(params_from_iter(delivery_params(run, delivery)))?;
        Ok(settled == 1)
    }

    /// Every delivery outcome recorded for the customer, by due time, then campaign.
    pub fn deliveries_for_customer(&self, customer: &str) -> Result<Vec<Delivery>, StoreError> {
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
            .collect::<Result<_, _>>()?;
        Ok(page)
    }

    /// How many deliveries were sent with due times in `[from, to)`: what `rate` and `cap`
    /// count.
    pub fn sent_between(
        &self,
        whose: Whose<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        // Each shape gets its own statement, so SQLite picks the index that fits it.
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
                 AND outcome = 'sent' AND due_at >= ?3 AND due_at < ?4",
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
        let rows = self
            .tx
            .prepare_cached(
                "SELECT due_at, count(*) FROM deliveries
                 WHERE customer = ?1 AND due_at >= ?2 AND campaign = ?3
                   AND outcome NOT IN ('expired', 'control')
                 GROUP BY due_at ORDER BY due_at",
            )?
            .query_map(rusqlite::params![customer, millis(from), campaign], |row| {
                Ok((time(row, 0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// How many deliveries of `campaign` were sent to each address (for tasks: to each
    /// employee), read once per run so that `assign … evenly` can balance across runs.
    pub fn sent_per_address(&self, campaign: &str) -> Result<HashMap<String, i64>, StoreError> {
        let counts = self
            .tx
            .prepare_cached(
                "SELECT address, count(*) FROM deliveries
                 WHERE campaign = ?1 AND outcome = 'sent' AND address IS NOT NULL
                 GROUP BY address",
            )?
            .query_map([campaign], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(counts)
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

/// The columns `delivery` reads, in its order.
const DELIVERY_COLUMNS: &str = "campaign, customer, occurrence, outcome, channel, address,
    variant, fired_at, due_at, content, reason";

/// The parameters of a `deliveries` row, numbered as in `record_delivery` and
/// `settle_delivery`.
fn delivery_params<'d>(run: RunId, delivery: &'d Delivery) -> [Box<dyn ToSql + 'd>; 12] {
    [
        Box::new(run.0),
        Box::new(&delivery.campaign),
        Box::new(&delivery.customer),
        Box::new(&delivery.occurrence),
        Box::new(delivery.outcome.as_str()),
        Box::new(&delivery.channel),
        Box::new(&delivery.address),
        Box::new(&delivery.variant),
        Box::new(millis(delivery.fired_at)),
        Box::new(millis(delivery.due_at)),
        Box::new(delivery.content.as_ref().map(|c| c.to_string())),
        Box::new(&delivery.reason),
    ]
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
