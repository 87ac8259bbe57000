"""Ingest: readings and frames in batches (a JSON array or NDJSON), durable before the 202.

Each element is a reading `{"asset_id", "sensor", "ts", "value"}` or a frame `{"asset_id", "ts",
"values": {...}}` (DESIGN.md's wire format). Elements that cannot become readings come back in the
response with their dead-letter reason (and are stored in `dead_letters`); the rest are committed to
`ingest_readings` before the answer, where the flow's `api` source reads them in order.
A batch may carry an `Idempotency-Key` header: the same key again is answered 200 with nothing stored.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from smart_maintenance.api.auth import Context, ctx, require
from smart_maintenance.api.cache import dumps, json_response
from smart_maintenance.connectors.postgres.api_store import Principal
from smart_maintenance.operators.ingest.parse import check_readings, parse_indexed
from smart_maintenance.operators.records import Invalid, Parsed, RawMessages, Readings, stable_id

router = APIRouter(prefix="/api/ingest", tags=["ingest"])


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """The batch's elements as raw JSON: a JSON array, or one JSON value per line (NDJSON).

    >>> split_body(b'[{"a":1},{"b":2}]', "application/json")
    [b'{"a":1}', b'{"b":2}']
    >>> split_body(b'{"a":1}\\n\\n{"b":2}\\n', "application/x-ndjson")
    [b'{"a":1}', b'{"b":2}']
    """
    if "ndjson" in content_type or "jsonl" in content_type or not body.lstrip().startswith(b"["):
        return [line.strip() for line in body.splitlines() if line.strip()]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise HTTPException(400, f"the body is not a JSON array: {e}") from None
    return [orjson.dumps(x) for x in doc]


@router.post("/readings", status_code=202)
async def ingest_readings(request: Request, p: Annotated[Principal, Depends(require("ingest"))],
                          c: Annotated[Context, Depends(ctx)]) -> Any:
    """Store a batch of readings or frames; bad elements come back with their reasons."""
    body = await request.body()
    batch_id = request.headers.get("idempotency-key") or stable_id("ingest", p.name, time.time_ns(), body)
    # parsing, checking and storing run in the thread pool: the event loop keeps answering reads meanwhile
    out, new = await run_in_threadpool(_ingest, c, p, batch_id, body, request.headers.get("content-type", ""))
    return json_response(dumps(out), status_code=202 if new else 200)


def _ingest(c: Context, p: Principal, batch_id: str, body: bytes, content_type: str) -> tuple[dict[str, Any], bool]:
    items = split_body(body, content_type)
    if not items:
        raise HTTPException(400, "an empty batch")
    origins = tuple(f"api:{batch_id}:{i}" for i in range(len(items)))
    readings, rows, rejects = parse_indexed(RawMessages(tuple(items), (None,) * len(items), origins))
    now_ms = int(time.time() * 1000)
    checked = check_readings(Parsed(readings, tuple(r for _, r in rejects)), now_ms=now_ms,
                             max_skew_ms=int(c.config.max_skew_s * 1000))
    visible = c.visible(p)
    if visible is not None:  # a key limited to sites may only send for its assets
        mine = set(visible)
        if not all(a in mine for a in checked.readings.asset_id):
            raise HTTPException(403, f"key {p.name!r} may not send readings for assets outside its sites")
    found = rejects_of(checked.rejects, readings, rows)
    bad = [{"index": _index(r.origin), "reason": r.reason, "detail": r.detail} for r in found]
    new = c.store.ingest(
        batch_id, p.name, checked.readings,
        [Invalid(r.reason, r.detail, r.raw, f"api:{batch_id}:{r.origin.rsplit(':', 1)[-1]}") for r in found],
        audit={"accepted": len(checked.readings), "rejected": len(bad)})
    return {"batch_id": batch_id, "accepted": len(checked.readings), "rejected": bad, "stored": new}, new


def rejects_of(rejects: tuple[Invalid, ...], readings: Readings, rows: np.ndarray) -> list[Invalid]:
    """The rejects with the batch index of their element: the checks after parsing name only the
    reading, so it is found again by (asset, sensor, ts) among the parsed readings (the first one not
    already claimed). Linear in the batch: one pass builds the positions, each reject takes one.

    >>> rd = Readings.of([("p", "t", 5, 1.0), ("p", "t", 5, 2.0)])
    >>> bad = Invalid("absurd_value", "", '{"asset_id": "p", "sensor": "t", "ts": 5}', "check")
    >>> [r.origin for r in rejects_of((bad, bad), rd, np.array([3, 7]))]
    ['api:3', 'api:7']
    """
    out: list[Invalid] = []
    where: dict[tuple[str, str, int], deque[int]] | None = None
    for r in rejects:
        if r.origin != "check":
            out.append(r)
            continue
        if where is None:
            where = {}
            for i, key in enumerate(zip(readings.asset_id.tolist(), readings.sensor.tolist(),
                                        readings.ts.tolist(), strict=True)):
                where.setdefault(key, deque()).append(i)
        d = orjson.loads(r.raw)
        hits = where.get((d.get("asset_id"), d.get("sensor"), d.get("ts")))
        index = int(rows[hits.popleft()]) if hits else None
        out.append(Invalid(r.reason, r.detail, r.raw, f"api:{index}" if index is not None else r.origin))
    return out


def _index(origin: str) -> int | None:
    tail = origin.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None
