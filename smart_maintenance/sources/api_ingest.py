"""The API's ingest as a flow source: readings POSTed to `/api/ingest/readings`, in the order stored.

The API commits each batch to PostgreSQL's `ingest_readings` before it answers 202; this source reads
that table by `seq` from one partition, `"api_ingest"`, whose snapshot is the last seq emitted. A resumed
flow reads on after it: what was emitted after the snapshot comes again (at-least-once, as every source;
the sinks are idempotent). Items are `Parsed` batches, as the replay source's: the flow's `check` step
judges them like any other readings.

Live, it polls every `poll_s` seconds (Bytewax sleeps until `next_awake`); `live=False` reads what is
stored and ends (a backfill of what the API took in).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from smart_maintenance.connectors.postgres.api_store import ApiStore
from smart_maintenance.operators.records import Parsed

__all__ = ["INGEST_PART", "ApiIngestSource"]

INGEST_PART = "api_ingest"


class ApiIngestSource(FixedPartitionedSource[Parsed, int]):
    """Readings the HTTP API stored, from the start (or after `resume`) in `seq` order."""

    def __init__(self, dsn: str, schema: str, *, live: bool = True, poll_s: float = 0.5, batch_rows: int = 50_000):
        if poll_s <= 0 or batch_rows < 1:
            raise ValueError("need poll_s > 0 and batch_rows >= 1")
        self.dsn, self.schema, self.live, self.poll_s, self.batch_rows = dsn, schema, live, poll_s, batch_rows

    def list_parts(self) -> list[str]:
        return [INGEST_PART]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _IngestPartition:
        store = ApiStore(self.dsn, self.schema, pool_size=1).open()
        return _IngestPartition(store, int(resume_state or 0), self.live, self.poll_s, self.batch_rows)


class _IngestPartition(StatefulSourcePartition[Parsed, int]):
    def __init__(self, store: ApiStore, seq: int, live: bool, poll_s: float, batch_rows: int):
        self._store, self._seq, self._live, self._poll = store, seq, live, timedelta(seconds=poll_s)
        self._rows = batch_rows
        self._awake: datetime | None = None

    def next_batch(self) -> list[Parsed]:
        seq, readings = self._store.ingested_since(self._seq, self._rows)
        if not len(readings):
            if not self._live:
                raise StopIteration
            self._awake = datetime.now(timezone.utc) + self._poll
            return []
        self._seq, self._awake = seq, None
        return [Parsed(readings)]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._seq

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"_IngestPartition(seq={self._seq})"
