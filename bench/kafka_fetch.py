"""What a live Kafka source gets per poll on Tansu: messages per batch and broker -> consumer delay, by fetch wait.

    python bench/kafka_fetch.py [--rate 40000] [--seconds 8] [--fetch-wait 50,10] [--poll-ms 10] [--repeat 2]

A Tansu broker (in memory), `bench/live.py`'s paced producer (200 assets x 5 sensors re-timed to `--rate`,
10 ms slices, nice 10) on a 4-partition topic, and 4 consumers configured as the live source's partitions
(`assign` one partition each, `fetch.queue.backoff.ms` 50, `fetch.wait.max.ms` as given), each polled every
`--poll-ms` with `consume(10000, 0)` as `_KafkaReadingsPartition.next_batch` does. No flow: what the broker
and librdkafka deliver, not what the flow does with it. Per run: non-empty batches, mean messages per batch
(against the messages one poll interval of data holds per partition), and the delay from each message's
Kafka timestamp to its consume (after the first quarter of the run), p50/p90/p99.
Last line: `msgs_per_batch_<wait>=<x> delay_p99_ms_<wait>=<x>` per fetch wait (median over repeats).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import multiprocessing as mp
import os
import secrets
import statistics
import time

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.live import PARTITIONS, SIM_START_TICK, produce_live
from smart_maintenance.config.settings import KafkaSettings
from smart_maintenance.connectors.kafka.config import kafka_config
from tests.integration.kafka_broker import create_topics, tansu_broker


def run(bootstrap: str, rate: float, seconds: float, fetch_wait: int, poll_ms: float) -> tuple[float, float]:
    topic = f"fetch-{secrets.token_hex(3)}"
    create_topics(bootstrap, {topic: PARTITIONS})
    kafka = KafkaSettings(brokers=(bootstrap,), readings_topic=topic)
    consumers = []
    for p in range(PARTITIONS):
        c = Consumer({**kafka_config(kafka), "group.id": "BYTEWAX_IGNORED", "enable.auto.commit": "false",
                      "enable.partition.eof": "false", "fetch.queue.backoff.ms": 50,
                      "fetch.wait.max.ms": fetch_wait})
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
        consumers.append(c)
    ctx = mp.get_context("spawn")
    progress, out = ctx.Value("q", 0), ctx.Queue()
    producer = ctx.Process(target=produce_live, args=(kafka, 200, 7, "rfc3339", rate, seconds, SIM_START_TICK,
                                                      progress, out), daemon=True)
    producer.start()
    t0 = out.get(timeout=300)
    sizes: list[int] = []
    delays: list[float] = []
    end, due = t0 + seconds + 1.0, time.time()
    while time.time() < end:
        for c in consumers:
            msgs = c.consume(10_000, 0)
            now = time.time() * 1000
            if msgs:
                sizes.append(len(msgs))
                delays.extend(now - m.timestamp()[1] for m in msgs)
        due += poll_ms / 1000
        time.sleep(max(0.0, due - time.time()))
    out.get(timeout=120)
    producer.join(10)
    for c in consumers:
        c.close()
    d = np.array(delays[len(delays) // 4:])
    per_batch = float(np.mean(sizes)) if sizes else 0.0
    p50, p90, p99 = (float(np.percentile(d, q)) for q in (50, 90, 99))
    print(f"fetch wait {fetch_wait} ms, poll {poll_ms:g} ms, {rate:,.0f}/s: {len(sizes)} batches, {per_batch:.0f} "
          f"messages each (one poll of data per partition: {rate / PARTITIONS * poll_ms / 1000:.0f}); delay "
          f"p50/p90/p99 {p50:.0f}/{p90:.0f}/{p99:.0f} ms (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    return per_batch, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=40_000.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fetch-wait", default="50,10")
    ap.add_argument("--poll-ms", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    waits = [int(w) for w in args.fetch_wait.split(",")]
    got: dict[int, list[tuple[float, float]]] = {w: [] for w in waits}
    with tansu_broker() as broker:
        for _ in range(args.repeat):
            for w in waits:  # alternating: a drift in the machine's load hits every setting alike
                got[w].append(run(broker.bootstrap, args.rate, args.seconds, w, args.poll_ms))
    print(" ".join(f"msgs_per_batch_{w}={statistics.median(x[0] for x in got[w]):.0f} "
                   f"delay_p99_ms_{w}={statistics.median(x[1] for x in got[w]):.0f}" for w in waits))


if __name__ == "__main__":
    main()
