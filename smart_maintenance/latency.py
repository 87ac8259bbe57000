"""Where live time goes: stage latencies of a running flow, as one Prometheus histogram.

`sm_stage_seconds{stage=...}` (served with the other metrics on `--metrics-port`):

| stage | one observation per | measured as |
|---|---|---|
| `broker_to_source` | message | wall time the source emitted it - its Kafka timestamp (the producer's send time) |
| `source_poll_gap` | message | the same emit time - the later of its Kafka timestamp and its partition's last poll |
| `due_to_close` | window | close time - (window end + allowed lateness): since its closing reading was due |
| `close_to_detect` | window | detection's output - the window's close |
| `detect_to_stored` | anomaly | its PostgreSQL commit - detection's output |
| `due_to_stored` | anomaly | its PostgreSQL commit - (window end + allowed lateness): what an operator waits |
| `epoch_interval` | snapshot | time between two snapshots of a bulk sink (Bytewax's epoch) |
| `snapshot_wait` | snapshot | how long the snapshot waited for the background writer |

`source_poll_gap` splits `broker_to_source`: a message that was not in a poll's batch reached the consumer after
that poll, so what came before the partition's previous poll was the producer's, the broker's or the fetch's, and
what came after is at most the wait for the flow's thread to poll again (at most: the message may have reached the
consumer's queue later than that poll). While a burst of windows closes, the thread runs no source (Bytewax polls
between steps), and this stage shows it.

Windows are matched between stages by (asset_id, window end) within one process (the window, detect and
store steps of an asset run on the same worker); only the latest `_KEEP` windows are remembered, so a
window whose anomaly is never stored costs nothing after a while. Observations are vectorised per batch
(`observe_many`): no Python call per reading.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from prometheus_client import Histogram

BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
             3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
STAGES = ("broker_to_source", "source_poll_gap", "due_to_close", "close_to_detect", "detect_to_stored", "due_to_stored",
          "epoch_interval", "snapshot_wait")
STAGE_SECONDS = Histogram("sm_stage_seconds", "Live stage latencies (see smart_maintenance/latency.py)", ["stage"],
                          buckets=BUCKETS_S)
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). Live, the writer
# threads (anomalies, alarms, readings, features: `connectors/postgres/bulk.py`) take and drop the GIL several
# times per commit (build the statement, send, wait, read the answer); each time they wait for the flow's
# thread, which is busy with a burst of windows (all assets close on the same boundaries), up to the interval.
LIVE_SWITCH_INTERVAL_S = 0.001
_KEEP = 50_000  # windows remembered between stages
_windows: dict[tuple[str, int], list[float]] = {}  # (asset_id, window end ms) -> [due, closed, detected] (wall s)
_lock = threading.Lock()


def observe_many(stage: str, seconds: np.ndarray | Iterable[float]) -> None:
    """Observe many values at once: one bucket count per call instead of one `observe()` per value."""
    if isinstance(seconds, list) and len(seconds) <= 1:  # one window of one asset, the many-assets case: no numpy
        if seconds and math.isfinite(seconds[0]):
            _child(stage).observe(seconds[0])  # the same bucket as below: the first bound >= the value
        return
    values = np.asarray(seconds, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    child = _child(stage)
    bounds = np.asarray(child._upper_bounds)  # noqa: SLF001 - no public bulk observe in prometheus-client
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, n in zip(child._buckets, counts.tolist()):  # noqa: SLF001
        if n:
            bucket.inc(n)
    child._sum.inc(float(values.sum()))  # noqa: SLF001


@functools.cache
def _child(stage: str) -> Any:
    """The histogram of one stage (`labels()` looks it up under a lock on every call)."""
    return STAGE_SECONDS.labels(stage)


def received(kafka_ts_ms: Iterable[int], now: float | None = None, polled: float | None = None) -> None:
    """Messages a source emits now; `kafka_ts_ms` are their Kafka timestamps, `polled` the wall time (s) its
    partition's previous poll ended (`source_poll_gap`: not observed without it)."""
    now = time.time() if now is None else now
    sent = np.asarray(kafka_ts_ms, np.float64) / 1000
    observe_many("broker_to_source", now - sent)
    if polled is not None:
        observe_many("source_poll_gap", now - np.maximum(sent, polled))


def closed(asset_id: str, window_end_ms: Iterable[int], lateness_ms: int, now: float | None = None) -> None:
    """Windows of one asset that closed now."""
    now = time.time() if now is None else now
    ends = np.asarray(window_end_ms, np.int64).tolist()
    due = [(end + lateness_ms) / 1000 for end in ends]
    observe_many("due_to_close", [now - d for d in due])
    with _lock:
        for end, d in zip(ends, due):
            _windows[(asset_id, end)] = [d, now, now]
        while len(_windows) > _KEEP:
            del _windows[next(iter(_windows))]


def detected(asset_id: str, window_end_ms: Iterable[int], now: float | None = None) -> None:
    """Windows of one asset whose detection output leaves now."""
    now = time.time() if now is None else now
    waits = []
    for end in np.asarray(window_end_ms, np.int64).tolist():
        w = _windows.get((asset_id, end))
        if w is not None:
            w[2] = now
            waits.append(now - w[1])
    observe_many("close_to_detect", waits)


def stored(windows: Iterable[tuple[str, int]], now: float | None = None) -> None:
    """(asset_id, window end ms) of anomalies committed to the database now."""
    now = time.time() if now is None else now
    since_detect, since_due = [], []
    with _lock:
        for key in windows:
            w = _windows.pop(key, None)
            if w is not None:
                since_due.append(now - w[0])
                since_detect.append(now - w[2])
    observe_many("detect_to_stored", since_detect)
    observe_many("due_to_stored", since_due)


class EpochClock:
    """The cadence of a sink's snapshots (Bytewax calls `snapshot()` once per epoch)."""

    def __init__(self) -> None:
        self._last: float | None = None

    def snapshot_started(self) -> float:
        now = time.monotonic()
        if self._last is not None:
            observe_many("epoch_interval", [now - self._last])
        self._last = now
        return now

    @staticmethod
    def snapshot_done(started: float) -> None:
        observe_many("snapshot_wait", [time.monotonic() - started])


def live_switch_interval(seconds: float = LIVE_SWITCH_INTERVAL_S) -> None:
    """A live flow hands the GIL over sooner (see `LIVE_SWITCH_INTERVAL_S`); never raises a lower setting.

    >>> before = sys.getswitchinterval(); live_switch_interval(0.002); sys.getswitchinterval() <= 0.002
    True
    >>> sys.setswitchinterval(before)
    """
    sys.setswitchinterval(min(sys.getswitchinterval(), seconds))


def observed(stage: str) -> int:
    """How many observations a stage has had in this process (tests, the CLI)."""
    return int(sum(b.get() for b in STAGE_SECONDS.labels(stage)._buckets))  # noqa: SLF001


def forget() -> None:
    """Drop remembered windows (tests)."""
    with _lock:
        _windows.clear()
