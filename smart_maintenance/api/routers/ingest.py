"""Ingest: readings and frames in batches (a JSON array or NDJSON), durable before the 202.

Each element is a reading `{"asset_id", "sensor", "ts", "value"}` or a frame `{"asset_id", "ts",
"values": {...}}` (DESIGN.md's wire format). Elements that cannot become readings come back in the
response with their dead-letter reason (and are stored in `dead_letters`); the rest are committed to
`ingest_readings` before the answer, where the flow's `api` source reads them in order.
A batch may carry an `Idempotency-Key` header: the same key again is answered 200 with nothing stored.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from smart_maintenance.api.auth import Context, ctx, require
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
    items = split_body(body, request.headers.get("content-type", ""))
    if not items:
        raise HTTPException(400, "an empty batch")
    batch_id = request.headers.get("idempotency-key") or stable_id("ingest", p.name, time.time_ns(), body)
    origins = tuple(f"api:{batch_id}:{i}" for i in range(len(items)))
    readings, rows, rejects = parse_indexed(RawMessages(tuple(items), (None,) * len(items), origins))
    now_ms = int(time.time() * 1000)
    checked = check_readings(Parsed(readings, tuple(r for _, r in rejects)), now_ms=now_ms,
                             max_skew_ms=int(c.config.max_skew_s * 1000))
    visible = c.visible(p)
    if visible is not None:  # a key limited to sites may only send for its assets
        ok = [a in visible for a in checked.readings.asset_id]
        if not all(ok):
            raise HTTPException(403, f"key {p.name!r} may not send readings for assets outside its sites")
    found = rejects_of(checked.rejects, readings, rows)
    new = await run_in_threadpool(
        c.store.ingest, batch_id, p.name, checked.readings,
        [Invalid(r.reason, r.detail, r.raw, f"api:{batch_id}:{r.origin.rsplit(':', 1)[-1]}") for r in found])
    bad = [{"index": _index(r.origin), "reason": r.reason, "detail": r.detail} for r in found]
    out = {"batch_id": batch_id, "accepted": len(checked.readings), "rejected": bad, "stored": new}
    if new:
        await run_in_threadpool(c.store.audit, p.name, "ingest", batch_id,
                                   {"accepted": len(checked.readings), "rejected": len(bad)})
    return JSONResponse(out, status_code=202 if new else 200)


def rejects_of(rejects: tuple[Invalid, ...], readings: Readings, rows: np.ndarray) -> list[Invalid]:
    """The rejects with the batch index of their element: the checks after parsing name only the
    reading, so it is found again by (asset, sensor, ts) among the parsed readings."""
    out, used = [], set()
    for r in rejects:
        if r.origin != "check":
            out.append(r)
            continue
        d = orjson.loads(r.raw)
        hits = [i for i in np.flatnonzero((readings.asset_id == d["asset_id"]) & (readings.sensor == d["sensor"])
                                          & (readings.ts == d["ts"])) if i not in used]
        index = int(rows[hits[0]]) if hits else None
        used.update(hits[:1])
        out.append(Invalid(r.reason, r.detail, r.raw, f"api:{index}" if index is not None else r.origin))
    return out


def _index(origin: str) -> int | None:
    tail = origin.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None
