"""Work orders: list, update (technician, times, priority, status, comments), complete (the same record
and event-time semantics as `log-maintenance`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from smart_maintenance.api.auth import Context, cached, ctx, may_see, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal, WorkOrderClosedError
from smart_maintenance.operators.controls import ControlError, MaintenanceRecord

router = APIRouter(prefix="/api", tags=["work orders"])
Ctx = Annotated[Context, Depends(ctx)]


class Completion(BaseModel):
    completed_at: str | None = Field(default=None, description="RFC 3339 with a zone; default now")
    outcome: str = "repaired"
    action: str = Field(default="", max_length=2000)
    notes: str = Field(default="", max_length=8000)
    parts: list[str] = Field(default_factory=list, max_length=100)
    technician_id: str = ""


class WorkOrderUpdate(BaseModel):
    """A planner's change; every field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")
    technician_id: str | None = Field(default=None, min_length=1, max_length=200)
    scheduled_start: datetime | None = Field(default=None, description="RFC 3339 with a zone")
    due_at: datetime | None = Field(default=None, description="RFC 3339 with a zone")
    priority: int | None = Field(default=None, ge=1, le=5)
    status: Literal["open", "scheduled", "in_progress", "cancelled"] | None = Field(
        default=None, description="`cancelled` closes the work order as a cancellation logged like a completion")
    comment: str = Field(default="", max_length=4000)
    effective_at: datetime | None = Field(default=None, description="event time of the change; default now")


class MaintenanceIn(Completion):
    asset_id: str
    work_order_id: str = ""


@router.get("/work-orders")
async def list_work_orders(request: Request, p: Annotated[Principal, Depends(require("read"))], c: Ctx,
                           status: str = "open", asset: str | None = None,
                           limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> Response:
    """Work orders by due time: `open` (not done or cancelled), `all`, or one status."""
    return await cached(request, c, p, lambda: api_reads.work_orders(c.store, c.visible(p), status, asset, limit))


def _log(c: Context, p: Principal, fields: dict[str, Any]) -> dict[str, Any]:
    fields = {**fields, "completed_at": fields.get("completed_at") or datetime.now(timezone.utc).isoformat()}
    try:
        record = MaintenanceRecord.from_dict(fields, source="api")
    except ControlError as e:
        raise HTTPException(422, str(e)) from None
    with c.loop_store() as loop:
        new = loop.log_maintenance(record)
    c.store.audit(p.name, "maintenance_logged", record.maintenance_id, record.to_dict())
    return {"maintenance_id": record.maintenance_id, "new": new, "record": record.to_dict()}


def _aware(name: str, t: datetime | None) -> datetime | None:
    if t is not None and t.tzinfo is None:
        raise HTTPException(422, f"{name} needs a time zone (e.g. 2026-01-06T12:00:00Z)")
    return t


@router.patch("/work-orders/{work_order_id}")
def update_work_order(work_order_id: str, body: WorkOrderUpdate,
                      p: Annotated[Principal, Depends(require("maintain"))], c: Ctx) -> dict[str, Any]:
    """Reassign, reschedule, re-prioritise, change the status of or comment a work order, at `effective_at`.

    Per field the change with the latest `effective_at` wins, whatever order changes arrive in. A work
    order that is done or cancelled, or whose completion was logged, answers 409. `status: cancelled`
    is logged as a cancellation (outcome `cancelled`) that reaches the running flow like a completion.
    """
    now = datetime.now(timezone.utc)
    at = _aware("effective_at", body.effective_at) or now
    if at > now + timedelta(seconds=c.config.max_skew_s):
        raise HTTPException(422, "effective_at is too far in the future")
    fields = {k: v for k, v in body.model_dump(exclude={"comment", "effective_at"}).items() if v is not None}
    for name in ("scheduled_start", "due_at"):
        if name in fields:
            fields[name] = _aware(name, fields[name]).isoformat()  # type: ignore[union-attr]  # not None here
    if not fields and not body.comment.strip():
        raise HTTPException(422, "nothing to change: give a field or a comment")
    found = c.store.work_order_standing(work_order_id)
    if found is None or not may_see(c, p, found["asset_id"]):
        raise HTTPException(404, f"no work order {work_order_id!r}")
    if found["status"] in ("done", "cancelled") or found["logged"]:
        raise HTTPException(409, str(WorkOrderClosedError(work_order_id, found["status"], found["logged"])))
    if fields.get("status") == "cancelled":
        if len(fields) > 1:
            raise HTTPException(422, "a cancellation takes no other field (a comment becomes its notes)")
        logged = _log(c, p, {"asset_id": found["asset_id"], "work_order_id": work_order_id, "outcome": "cancelled",
                             "completed_at": at.isoformat(), "notes": body.comment.strip()})
        return {"work_order_id": work_order_id, "cancelled": True, "maintenance_id": logged["maintenance_id"]}
    try:
        seq = c.store.update_work_order(work_order_id, found["asset_id"], at, fields, body.comment.strip(), p.name)
    except WorkOrderClosedError as e:  # closed between the check and the write
        raise HTTPException(409, str(e)) from None
    (now_row,) = api_reads.work_orders(c.store, None, "all", work_order_id=work_order_id, limit=1)
    return {"work_order_id": work_order_id, "update": seq, "by": p.name, "effective_at": at,
            "work_order": now_row}


@router.post("/work-orders/{work_order_id}/complete", status_code=201)
def complete_work_order(work_order_id: str, body: Completion, p: Annotated[Principal, Depends(require("maintain"))],
                        c: Ctx) -> dict[str, Any]:
    """Log the work order's completion: the running flow closes it and its alarm at `completed_at`."""
    found = c.store.work_order_standing(work_order_id)
    if found is None or not may_see(c, p, found["asset_id"]):
        raise HTTPException(404, f"no work order {work_order_id!r}")
    if found["status"] in ("done", "cancelled"):  # a logged completion may be retried: the same record is kept once
        raise HTTPException(409, str(WorkOrderClosedError(work_order_id, found["status"], False)))
    return _log(c, p, {**body.model_dump(), "asset_id": found["asset_id"], "work_order_id": work_order_id})


@router.post("/maintenance", status_code=201)
def log_maintenance(body: MaintenanceIn, p: Annotated[Principal, Depends(require("maintain"))],
                    c: Ctx) -> dict[str, Any]:
    """Log completed maintenance on an asset (all its open work orders unless one is named)."""
    if not may_see(c, p, body.asset_id):
        raise HTTPException(403, f"key {p.name!r} may not act on asset {body.asset_id!r}")
    return _log(c, p, body.model_dump())
