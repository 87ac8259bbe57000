"""The stream catalogue: every stream that leaves the flow, its record type and the key that orders it.

Sinks are attached per stream from this list (PostgreSQL, JSONL files, Kafka
topics), so a new stream is one entry here plus the step that makes it.

>>> [s.name for s in CATALOGUE][:3]
['readings', 'features', 'anomalies']
>>> STREAM_KEYS["dead_letters"]
'origin'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    name: str
    record: str  # the record type its items are (operators/...)
    key: str  # the field that keys it downstream (Kafka message key, ordering)


CATALOGUE: tuple[Stream, ...] = (
    Stream("readings", "records.Readings (columnar batch)", "asset_id"),
    Stream("features", "records.FeatureBatch", "asset_id"),
    Stream("anomalies", "records.Anomaly", "asset_id"),
    Stream("alarms", "records.Alarm", "asset_id"),
    Stream("predictions", "predict.requests.Prediction", "asset_id"),
    Stream("work_orders", "plan.work_orders.WorkOrder", "asset_id"),
    Stream("assignments", "plan.dispatch.Planned", "plan_id"),
    Stream("notifications", "notify.Notification", "asset_id"),
    Stream("reviews", "records.Anomaly (needs_review)", "asset_id"),
    Stream("maintenance_log", "controls.MaintenanceRecord", "asset_id"),
    Stream("threshold_changes", "dict (judge.feedback)", "asset_id"),
    Stream("dead_letters", "records.Invalid", "origin"),
)
STREAMS: tuple[str, ...] = tuple(s.name for s in CATALOGUE)
STREAM_KEYS: dict[str, str] = {s.name: s.key for s in CATALOGUE}
