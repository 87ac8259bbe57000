"""Alarms: list, acknowledge, comment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from smart_maintenance.api.auth import Context, cached, ctx, may_see, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal

router = APIRouter(prefix="/api/alarms", tags=["alarms"])
Ctx = Annotated[Context, Depends(ctx)]


class Note(BaseModel):
    note: str = Field(default="", max_length=4000)


@router.get("")
async def list_alarms(request: Request, p: Annotated[Principal, Depends(require("read"))], c: Ctx,
                      status: str = "active", asset: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> Response:
    """Alarms, newest first: `active` (open or acknowledged), `all`, `open`, `acknowledged`, `cleared`."""
    return await cached(request, c, p, lambda: api_reads.alarms(c.store, c.visible(p), status, asset, limit))


def _note(c: Context, p: Principal, alarm_id: str, kind: str, note: str) -> dict[str, Any]:
    rows = c.store.rows("SELECT asset_id FROM {s}.alarms WHERE alarm_id = %s", [alarm_id])
    if not rows or not may_see(c, p, rows[0]["asset_id"]) or not c.store.note_alarm(alarm_id, kind, note, p.name):
        raise HTTPException(404, f"no alarm {alarm_id!r}")
    c.store.audit(p.name, f"alarm_{kind}", alarm_id, {"note": note})
    return {"alarm_id": alarm_id, kind: True, "by": p.name}


@router.post("/{alarm_id}/ack")
def ack_alarm(alarm_id: str, body: Note, p: Annotated[Principal, Depends(require("maintain"))],
              c: Ctx) -> dict[str, Any]:
    """Acknowledge an alarm (someone is on it)."""
    return _note(c, p, alarm_id, "ack", body.note)


@router.post("/{alarm_id}/comments")
def comment_alarm(alarm_id: str, body: Note, p: Annotated[Principal, Depends(require("maintain"))],
                  c: Ctx) -> dict[str, Any]:
    """Add a comment to an alarm."""
    if not body.note.strip():
        raise HTTPException(422, "a comment needs text")
    return _note(c, p, alarm_id, "comment", body.note)
