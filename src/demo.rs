//! A sample shop: customers with Chinese names, cities and phones, the employees who added them
//! on WeCom, and 60 days of behaviour shaped like a real shop (views, carts, purchases, messages,
//! coupons). Deterministic for a given seed, so the demo prints the same story every time.
//!
//! The same generator builds the large stores of the benchmarks.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::store::{NewEvent, StoreError, Tx};

pub struct ShopOptions {
    pub customers: usize,
    /// The average number of events per customer.
    pub events_per_customer: usize,
    pub seed: u64,
    /// Behaviour runs from 60 days before this instant to 3 days after it.
    pub around: DateTime<Utc>,
}

/// What was generated.
#[derive(Debug, Default, PartialEq)]
pub struct ShopSize {
    pub customers: usize,
    pub employees: usize,
    pub events: usize,
}

const SURNAMES: &[&str] = &[
    "李", "王", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "罗",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "霞", "平", "刚", "桂英", "思远", "雨桐",
];
const CITIES: &[&str] = &[
    "上海", "北京", "深圳", "广州", "杭州", "成都", "武汉", "南京",
];
pub const EMPLOYEES: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "manager_li",
    "manager_wang",
    "xiao_zhang",
    "xiao_li",
    "xiao_wang",
];
const PAGES: &[&str] = &[
    "/home",
    "/pricing",
    "/new-arrivals/spring",
    "/p/1024",
    "/cart",
    "/pricing/vip",
];
const SKUS: &[&str] = &["TV-55", "PHONE-X", "GIFT", "TEA-01", "COAT-M", "SHOE-42"];
const MESSAGES: &[&str] = &[
    "你好，请发一下报价单",
    "有产品手册吗？",
    "什么时候发货？",
    "谢谢",
    "可以便宜点吗",
    "在吗",
];
const ITEMS: &[&str] = &["春季外套", "蓝牙耳机", "茶具套装", "跑步鞋"];

/// Event kinds with their weights (out of 1000).
const KINDS: &[(&str, u64)] = &[
    ("page_view", 400),
    ("app_launch", 150),
    ("add_to_cart", 100),
    ("message", 80),
    ("purchase", 60),
    ("collect", 60),
    ("coupon_claimed", 50),
    ("share", 50),
    ("checkin", 30),
    ("not_interested", 15),
    ("complaint", 5),
];

/// splitmix64: small, fast, and the same everywhere (the demo must not depend on a platform).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One generated customer with everything about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopCustomer {
    pub id: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Tags, all added at `tagged_at`.
    pub tags: Vec<&'static str>,
    pub tagged_at: DateTime<Utc>,
    /// Employees who added the customer on WeCom, and when.
    pub employees: Vec<(&'static str, DateTime<Utc>)>,
    /// Events in time order: name, properties (JSON text), instant.
    pub events: Vec<(&'static str, String, DateTime<Utc>)>,
}

/// The sample shop's customers, generated one at a time (memory holds one customer, however
/// many are asked for).
pub struct Shop {
    random: Random,
    index: usize,
    customers: usize,
    events_per_customer: usize,
    around: DateTime<Utc>,
}

impl Shop {
    pub fn new(options: &ShopOptions) -> Shop {
        Shop {
            random: Random(options.seed),
            index: 0,
            customers: options.customers,
            events_per_customer: options.events_per_customer,
            around: options.around,
        }
    }
}

impl Iterator for Shop {
    type Item = ShopCustomer;

    fn next(&mut self) -> Option<ShopCustomer> {
        if self.index == self.customers {
            return None;
        }
        let id = format!("c{:07}", self.index);
        self.index += 1;
        let random = &mut self.random;
        let mut customer = customer(random, id, self.around);
        if customer.attributes.contains_key("wecom_id") {
            customer.employees = employees(random, self.around);
        }
        customer.events = events(random, self.events_per_customer, self.around);
        Some(customer)
    }
}

/// Fills the store with a sample shop (in the caller's transaction), one customer at a time.
pub fn generate(tx: &Tx, options: &ShopOptions) -> Result<ShopSize, StoreError> {
    let mut size = ShopSize {
        employees: EMPLOYEES.len(),
        ..ShopSize::default()
    };
    for customer in Shop::new(options) {
        write(tx, &customer)?;
        size.customers += 1;
        size.events += customer.events.len();
    }
    Ok(size)
}

fn write(tx: &Tx, customer: &ShopCustomer) -> Result<(), StoreError> {
    let id = &customer.id;
    tx.upsert_customer(id, &customer.attributes)?;
    for tag in &customer.tags {
        tx.add_tag(id, tag, customer.tagged_at)?;
    }
    for (employee, added) in &customer.employees {
        tx.add_employee(id, employee, *added)?;
    }
    let events: Vec<NewEvent<'_>> = customer
        .events
        .iter()
        .map(|(name, properties, at)| NewEvent {
            customer: id,
            name,
            at: *at,
            properties,
        })
        .collect();
    if !events.is_empty() {
        tx.add_events(&events)?;
    }
    Ok(())
}

/// One customer's attributes and tags.
fn customer(random: &mut Random, id: String, around: DateTime<Utc>) -> ShopCustomer {
    let name = format!("{}{}", random.pick(SURNAMES), random.pick(GIVEN));
    let registered = around - Duration::minutes(random.below(90 * 1440) as i64 - 2 * 1440);
    let mut attributes = json!({
        "name": name,
        "age": 18 + random.below(48),
        "city": random.pick(CITIES),
        "registered_at": registered.to_rfc3339(),
        "vip": random.chance(150),
    });
    if random.chance(850) {
        attributes["phone"] = format!("13{:09}", random.below(1_000_000_000)).into();
    }
    if random.chance(400) {
        attributes["email"] = format!("{id}@example.com").into();
    }
    if random.chance(300) {
        attributes["push_token"] = format!("push-{id}").into();
    }
    if random.chance(600) {
        attributes["wecom_id"] = format!("wx_{id}").into();
        let followed = registered + Duration::hours(random.below(72) as i64);
        attributes["followed_at"] = followed.to_rfc3339().into();
    }
    let mut tags = Vec::new();
    if attributes["vip"] == json!(true) {
        tags.push("VIP");
    }
    if random.chance(20) {
        tags.push("投诉客户");
    }
    let serde_json::Value::Object(attributes) = attributes else {
        unreachable!("built as an object")
    };
    ShopCustomer {
        id,
        attributes,
        tags,
        tagged_at: registered.min(around - Duration::days(1)),
        employees: Vec::new(),
        events: Vec::new(),
    }
}

/// One or two employees added the customer on WeCom.
fn employees(random: &mut Random, around: DateTime<Utc>) -> Vec<(&'static str, DateTime<Utc>)> {
    (0..1 + random.below(2))
        .map(|_| {
            let added = around - Duration::minutes(random.below(120 * 1440) as i64);
            (random.pick(EMPLOYEES), added)
        })
        .collect()
}

/// A customer's behaviour from 60 days before `around` to 3 days after, in time order.
fn events(
    random: &mut Random,
    per_customer: usize,
    around: DateTime<Utc>,
) -> Vec<(&'static str, String, DateTime<Utc>)> {
    let first = around - Duration::days(60);
    let span_ms = Duration::days(63).num_milliseconds() as u64;
    let count = random.below(2 * per_customer as u64 + 1) as usize;
    let mut times: Vec<i64> = (0..count)
        .map(|_| first.timestamp_millis() + random.below(span_ms) as i64)
        .collect();
    times.sort_unstable();
    times
        .into_iter()
        .map(|ms| {
            let (name, properties) = event(random);
            let at = DateTime::from_timestamp_millis(ms).unwrap_or(first);
            (name, properties, at)
        })
        .collect()
}

/// A random event name and its properties (JSON text).
fn event(random: &mut Random) -> (&'static str, String) {
    let mut roll = random.below(1000);
    let name = KINDS
        .iter()
        .find(|(_, weight)| {
            let hit = roll < *weight;
            roll = roll.saturating_sub(*weight);
            hit
        })
        .map_or("page_view", |(name, _)| name);
    let properties = match name {
        "page_view" => json!({ "page": random.pick(PAGES) }),
        "add_to_cart" => json!({ "sku": random.pick(SKUS), "price": 50 + random.below(1000) }),
        "purchase" => json!({ "sku": random.pick(SKUS), "amount": 20 + random.below(600) }),
        "message" => json!({ "text": random.pick(MESSAGES) }),
        "collect" => json!({ "item": random.pick(ITEMS) }),
        "coupon_claimed" => json!({ "coupon": format!("COUPON-{}", random.below(5)) }),
        _ => json!({}),
    };
    (name, properties.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn the_same_seed_makes_the_same_shop() {
        let make = || {
            let mut store = Store::open_in_memory().unwrap();
            let options = ShopOptions {
                customers: 50,
                events_per_customer: 10,
                seed: 7,
                around: "2026-11-16T00:00:00Z".parse().unwrap(),
            };
            let size = store.transaction(|tx| generate(tx, &options)).unwrap();
            let customer = store
                .scratch(|tx| tx.customer("c0000017"))
                .unwrap()
                .unwrap();
            (size, customer)
        };
        let (size, customer) = make();
        assert_eq!(size.customers, 50);
        assert!(size.events > 200 && size.events < 800, "{size:?}");
        assert_eq!(make(), (size, customer));
    }
}
