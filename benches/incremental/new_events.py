#!/usr/bin/env python3
"""Writes N new events (JSON Lines) for customers of a `nudge demo` store, at instants in
(AFTER, AFTER + 50 min], in time order: the input of the incremental-run benchmark.

usage: new_events.py N CUSTOMERS AFTER(RFC 3339, UTC) > events.jsonl
"""
import json
import random
import sys
from datetime import datetime, timedelta

n, customers, after = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = datetime.fromisoformat(after.replace("Z", "+00:00"))
rng = random.Random(7)
kinds = [
    ("page_view", lambda: {"page": rng.choice(["/pricing", "/home", "/new-arrivals"])}),
    ("add_to_cart", lambda: {"sku": "SKU-%d" % rng.randrange(50), "price": rng.randrange(20, 900)}),
    ("purchase", lambda: {"amount": rng.randrange(20, 1200), "sku": "SKU-%d" % rng.randrange(50)}),
    ("message", lambda: {"text": rng.choice(["你好", "请发我报价单", "有优惠吗"])}),
    ("collect", lambda: {"item": "ITEM-%d" % rng.randrange(30)}),
    ("app_launch", lambda: {}),
]
for i in range(n):
    at = start + timedelta(milliseconds=1 + i * 3000 * 1000 // n)
    name, properties = rng.choice(kinds)
    print(json.dumps({
        "customer": "c%07d" % rng.randrange(customers),
        "event": name,
        "at": at.isoformat().replace("+00:00", "Z"),
        "properties": properties(),
    }, ensure_ascii=False))
