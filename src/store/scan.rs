//! Streaming every customer with its tags and events, for whole-audience evaluation.

use rusqlite::{Row, Rows};

use super::{event, Customer, Event, StoreError, Tx};

impl Tx<'_> {
    /// Calls `f` once per customer, in id order, with its tags and its events in time order.
    /// `f` may take the events out of the buffer (it is refilled for the next customer).
    ///
    /// One pass: three queries in customer order (customers, tags, events), merged here, so
    /// memory holds one customer's history at a time however large the store. Tags and events
    /// of ids that were never imported as customers are skipped.
    pub fn for_each_customer<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&Customer, &mut Vec<Event>) -> Result<(), E>,
    ) -> Result<(), E> {
        let sql = |text| self.tx.prepare(text).map_err(StoreError::from);
        let mut customers = sql("SELECT id, attributes FROM customers ORDER BY id")?;
        let mut tags = sql("SELECT customer, tag FROM tags ORDER BY customer, tag")?;
        let mut events =
            sql("SELECT customer, id, name, at, properties FROM events ORDER BY customer, at, id")?;
        let mut scan = Scan {
            customers: customers.query([]).map_err(StoreError::from)?,
            tags: Follower::new(tags.query([]).map_err(StoreError::from)?, |row| row.get(1)),
            events: Follower::new(events.query([]).map_err(StoreError::from)?, |row| {
                event(row, 1)
            }),
        };
        let mut customer = Customer::default();
        let mut history = Vec::new();
        while scan.next(&mut customer, &mut history)? {
            f(&customer, &mut history)?;
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// The customers (imported ones only) with an event at an instant in `(after, until]`, in id
    /// order.
    pub fn customers_with_events_between(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let ids = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT e.customer FROM events e JOIN customers c ON c.id = e.customer
                 WHERE e.at > ?1 AND e.at <= ?2 ORDER BY e.customer",
            )?
            .query_map(
                [after.timestamp_millis(), until.timestamp_millis()],
                |row| row.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }
}

struct Scan<'s> {
    customers: Rows<'s>,
    tags: Follower<'s, String>,
    events: Follower<'s, Event>,
}

impl Scan<'_> {
    /// Reads the next customer into `customer` and `events`; false after the last.
    fn next(
        &mut self,
        customer: &mut Customer,
        events: &mut Vec<Event>,
    ) -> Result<bool, StoreError> {
        let Some(row) = self.customers.next()? else {
            return Ok(false);
        };
        customer.id = row.get(0)?;
        customer.attributes = row.get(1)?;
        customer.tags.clear();
        self.tags.take_for(&customer.id, &mut customer.tags)?;
        events.clear();
        self.events.take_for(&customer.id, events)?;
        Ok(true)
    }
}

/// A query ordered by customer id (its first column), read in step with the customers.
struct Follower<'s, T> {
    rows: Rows<'s>,
    decode: fn(&Row) -> rusqlite::Result<T>,
    /// The first row of a later customer, read while looking for the end of the current one.
    pending: Option<(String, T)>,
}

impl<'s, T> Follower<'s, T> {
    fn new(rows: Rows<'s>, decode: fn(&Row) -> rusqlite::Result<T>) -> Self {
        Follower {
            rows,
            decode,
            pending: None,
        }
    }

    /// Appends the rows of `customer` to `out`, dropping rows of smaller ids (not customers).
    fn take_for(&mut self, customer: &str, out: &mut Vec<T>) -> rusqlite::Result<()> {
        if let Some((id, item)) = self.pending.take() {
            match id.as_str().cmp(customer) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => out.push(item),
                std::cmp::Ordering::Greater => {
                    self.pending = Some((id, item));
                    return Ok(());
                }
            }
        }
        while let Some(row) = self.rows.next()? {
            let id = row.get_ref(0)?.as_str()?;
            match id.cmp(customer) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => out.push((self.decode)(row)?),
                std::cmp::Ordering::Greater => {
                    self.pending = Some((id.to_owned(), (self.decode)(row)?));
                    break;
                }
            }
        }
        Ok(())
    }
}
