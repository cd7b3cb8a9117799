#!/usr/bin/env bash
# The incremental-run benchmark (issue 3): on a store made by `nudge demo` (e.g. 1,000,000
# customers, 20 events each), begin the campaigns of campaigns.nudge with one run at the demo's
# last `now`, import 10,000 new events in the next 50 minutes, and time the run that handles them.
#
# usage: benches/incremental/run.sh STORE CUSTOMERS   (from the repository root, after
#        `cargo build --release`)
set -euo pipefail
store=$1
customers=$2
nudge=target/release/nudge
rules=(rules/schema.nudge rules/policy.nudge benches/incremental/campaigns.nudge)
last=2026-11-19T00:00:00Z            # the demo's last run
events=$(mktemp --suffix .jsonl)
python3 benches/incremental/new_events.py 10000 "$customers" "$last" > "$events"
echo "baseline run (begins the campaigns; tag rules read every customer once):"
/usr/bin/time -f "  %e s, %M KB peak" "$nudge" run "${rules[@]}" --store "$store" --now "$last" > /dev/null
echo "import 10,000 new events:"
/usr/bin/time -f "  %e s, %M KB peak" "$nudge" import events "$events" --store "$store"
echo "incremental run:"
/usr/bin/time -f "  %e s, %M KB peak" "$nudge" run "${rules[@]}" --store "$store" --now 2026-11-19T01:00:00Z | tail -1
rm -f "$events"
