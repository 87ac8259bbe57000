"""The live stream: server-sent events of alarm, case and work-order changes.

Each event is `event: alarm|case|work_order`, `id: <seq>`, `data: {"subject_id", "asset_id", "status", "at"}`.
A client that reconnects with `Last-Event-ID` gets what it missed (the change log keeps it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from smart_maintenance.api.auth import Context, ctx, require
from smart_maintenance.connectors.postgres.api_store import Principal

router = APIRouter(prefix="/api", tags=["events"])


@router.get("/events")
async def events(request: Request, p: Annotated[Principal, Depends(require("read"))],
                 c: Annotated[Context, Depends(ctx)], since: int | None = None) -> StreamingResponse:
    """Changes from now on (or after `since` / `Last-Event-ID`)."""
    last = request.headers.get("last-event-id")
    seq = since if since is not None else int(last) if last and last.isdigit() else None
    if seq is None:
        seq = await run_in_threadpool(c.store.last_change)
    visible = await run_in_threadpool(c.visible, p)

    async def stream(seq: int) -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        idle = 0.0
        while not await request.is_disconnected():
            rows = await run_in_threadpool(c.store.changes_since, seq)
            for r in rows:
                seq = r["seq"]
                if visible is not None and r["asset_id"] not in visible:
                    continue
                data = orjson.dumps({k: r[k] for k in ("subject_id", "asset_id", "status", "at")})
                yield b"event: %s\nid: %d\ndata: %s\n\n" % (r["kind"].encode(), seq, data)
            if rows:
                idle = 0.0
                continue
            await asyncio.sleep(c.config.events_poll_s)
            idle += c.config.events_poll_s
            if idle >= 15:  # a comment keeps proxies from closing a quiet stream
                idle = 0.0
                yield b": keep-alive\n\n"

    return StreamingResponse(stream(seq), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
