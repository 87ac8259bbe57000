"""Prometheus metrics of a running flow (prometheus-client's default registry, which Bytewax shares).

Served on `--metrics-port` by `serve_metrics`. Names (all prefixed `sm_`):

| metric | type | labels | meaning |
|---|---|---|---|
| `sm_readings_in_total` | counter | source | readings accepted by the parse/check steps |
| `sm_source_lag_seconds` | gauge | source | wall clock minus the newest event time of the last batch |
| `sm_last_batch_timestamp_seconds` | gauge | source | wall time of the last batch with readings |
| `sm_windows_closed_total` | counter | | windows closed and scored |
| `sm_anomalies_total` | counter | status | anomalies by validation status |
| `sm_alarms_open` | gauge | kind | alarm episodes open now |
| `sm_alarm_changes_total` | counter | kind, status | alarm states emitted (open, cleared) |
| `sm_dead_letters_total` | counter | reason | rejected input by reason |
| `sm_sink_write_seconds` | histogram | sink | time of one sink write (a batch) |
| `sm_sink_errors_total` | counter | sink | failed sink writes (retried or raised) |
| `sm_sink_backlog_batches` | gauge | sink | batches queued for a background writer |
| `sm_stage_seconds` | histogram | stage | live stage latencies (`smart_maintenance/latency.py`) |
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

READINGS_IN = Counter("sm_readings_in", "Readings accepted by the parse/check steps", ["source"])
SOURCE_LAG = Gauge("sm_source_lag_seconds", "Wall clock minus the newest event time of the last batch", ["source"])
LAST_BATCH = Gauge("sm_last_batch_timestamp_seconds", "Wall time of the last batch with readings", ["source"])
WINDOWS_CLOSED = Counter("sm_windows_closed", "Windows closed and scored")
ANOMALIES = Counter("sm_anomalies", "Anomalies by validation status", ["status"])
ALARMS_OPEN = Gauge("sm_alarms_open", "Alarm episodes open now", ["kind"])
ALARM_CHANGES = Counter("sm_alarm_changes", "Alarm states emitted", ["kind", "status"])
ALARMS_OPENED = Counter("sm_alarms_opened", "Alarm episodes opened", ["kind"])
DEAD_LETTERS = Counter("sm_dead_letters", "Rejected input by reason", ["reason"])
SINK_WRITE = Histogram(
    "sm_sink_write_seconds", "Time of one sink write (a batch)", ["sink"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
PREDICTION_SECONDS = Histogram(
    "sm_prediction_seconds", "Time-to-failure predictions computed inline (offloaded ones run in a pool process)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
PREDICTIONS = Counter("sm_predictions", "Time-to-failure predictions emitted, by method", ["method"])
SCHEDULE_SECONDS = Histogram(
    "sm_schedule_seconds", "Duration of one re-plan (CP-SAT solve included)",
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60),
)
WORK_ORDERS = Counter("sm_work_order_changes", "Work-order states emitted, by status", ["status"])
SINK_ERRORS = Counter("sm_sink_errors", "Failed sink writes", ["sink"])
SINK_BACKLOG = Gauge("sm_sink_backlog_batches", "Batches queued for a background writer", ["sink"])

_served: set[int] = set()
_lock = threading.Lock()


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Start the /metrics endpoint once per process (several workers may ask)."""
    with _lock:
        if port in _served:
            return
        start_http_server(port, addr=addr)
        _served.add(port)


def count_alarm(kind: str, status: str, opened: bool) -> None:
    ALARM_CHANGES.labels(kind, status).inc()
    if status == "open" and opened:
        ALARMS_OPEN.labels(kind).inc()
        ALARMS_OPENED.labels(kind).inc()
    elif status == "cleared":
        ALARMS_OPEN.labels(kind).dec()


# what a run did, for the CLI's closing summary: (label, counter, label name or None)
_RUN_COUNTERS = (
    ("readings", READINGS_IN, None),
    ("windows scored", WINDOWS_CLOSED, None),
    ("anomalies", ANOMALIES, "status"),
    ("alarms opened", ALARMS_OPENED, "kind"),
    ("dead letters", DEAD_LETTERS, "reason"),
    ("predictions", PREDICTIONS, "method"),
    ("work-order changes", WORK_ORDERS, "status"),
)


def run_counts() -> dict[str, float]:
    """This process's counts so far, by what and label: take one before a run and one after, and subtract."""
    counts: dict[str, float] = {}
    for what, counter, label in _RUN_COUNTERS:
        for metric in counter.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = what if label is None else f"{what} ({sample.labels.get(label, '')})"
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts
