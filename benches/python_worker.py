#!/usr/bin/env python3
"""The baseline of issue 14: a hand-written Python churn worker.

confluent-kafka, a dict of customers, threshold alerts, no durable state.
It reads the input topic in a fresh consumer group from the earliest offset,
keeps per customer a decayed activity score and the time of the last event,
and publishes an alert (JSON, keyed by customer) when the score crosses a
threshold; offsets are committed by librdkafka in the background. It stops
after `--events` messages and prints one JSON line:

    {"events": N, "seconds": S, "rate": N/S, "alerts": A, "customers": C}

where S runs from the first message received to the N-th (the same window
`churn-scorer bench` uses for the bare consumer and the worker).

    python3 benches/python_worker.py --bootstrap 127.0.0.1:PORT --events 1000000
"""

import argparse
import json
import math
import sys
import time
from datetime import datetime

from confluent_kafka import Consumer, Producer

NEGATIVE = {"support_ticket", "payment_failed", "cart_abandoned", "downgrade"}
HALF_LIFE_MS = 14 * 86_400_000
AT_RISK = 60.0
RECOVERED = 40.0


def parse_ms(ts):
    # RFC 3339 with a trailing Z, e.g. 2025-01-01T06:55:44.325Z
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="customer-events")
    ap.add_argument("--alerts-topic", default="churn-alerts")
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--group", default=f"python-worker-{int(time.time() * 1000)}")
    args = ap.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            # The same mock-broker allowance the Rust consumers get in the bench.
            "fetch.wait.max.ms": 5,
            "fetch.queue.backoff.ms": 20,
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    consumer.subscribe([args.topic])

    customers = {}  # id -> [score, last_ms, alert_open]
    alerts = 0
    count = 0
    first = None
    idle_since = time.monotonic()
    while count < args.events:
        batch = consumer.consume(num_messages=1000, timeout=0.1)
        if not batch:
            if time.monotonic() - idle_since > 60:
                print("python worker: no messages for 60 s", file=sys.stderr)
                return 1
            continue
        idle_since = time.monotonic()
        if first is None:
            first = time.monotonic()
        for msg in batch:
            if msg.error():
                continue
            count += 1
            try:
                event = json.loads(msg.value())
                cid = event["customer_id"]
                t = parse_ms(event["timestamp"])
                kind = event["event_type"]
            except (ValueError, KeyError, TypeError):
                continue
            state = customers.get(cid)
            if state is None:
                state = customers[cid] = [0.0, t, False]
            score, last, open_ = state
            gap = max(0, t - last)
            score *= math.exp(-gap * math.log(2) / HALF_LIFE_MS)
            if kind in NEGATIVE:
                score += 25.0
            else:
                score = max(0.0, score - 2.0)
            score += min(30.0, gap / 86_400_000)
            state[0], state[1] = score, max(last, t)
            if not open_ and score >= AT_RISK:
                state[2] = True
                kind_out = "at_risk"
            elif open_ and score < RECOVERED:
                state[2] = False
                kind_out = "recovered"
            else:
                continue
            alerts += 1
            producer.produce(
                args.alerts_topic,
                key=cid,
                value=json.dumps(
                    {"customer_id": cid, "kind": kind_out, "score": round(score, 1), "event_time": event["timestamp"]}
                ),
            )
            producer.poll(0)
    end = time.monotonic()
    producer.flush(30)
    consumer.close()
    seconds = end - (first or end)
    print(
        json.dumps(
            {
                "events": count,
                "seconds": seconds,
                "rate": count / max(seconds, 1e-9),
                "alerts": alerts,
                "customers": len(customers),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
