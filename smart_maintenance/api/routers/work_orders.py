"""Work orders: list, complete (the same record and event-time semantics as `log-maintenance`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from smart_maintenance.api.auth import Context, cached, ctx, may_see, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal
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


@router.post("/work-orders/{work_order_id}/complete", status_code=201)
def complete_work_order(work_order_id: str, body: Completion, p: Annotated[Principal, Depends(require("maintain"))],
                        c: Ctx) -> dict[str, Any]:
    """Log the work order's completion: the running flow closes it and its alarm at `completed_at`."""
    rows = c.store.rows("SELECT asset_id FROM {s}.work_orders WHERE work_order_id = %s", [work_order_id])
    if not rows or not may_see(c, p, rows[0]["asset_id"]):
        raise HTTPException(404, f"no work order {work_order_id!r}")
    return _log(c, p, {**body.model_dump(), "asset_id": rows[0]["asset_id"], "work_order_id": work_order_id})


@router.post("/maintenance", status_code=201)
def log_maintenance(body: MaintenanceIn, p: Annotated[Principal, Depends(require("maintain"))],
                    c: Ctx) -> dict[str, Any]:
    """Log completed maintenance on an asset (all its open work orders unless one is named)."""
    if not may_see(c, p, body.asset_id):
        raise HTTPException(403, f"key {p.name!r} may not act on asset {body.asset_id!r}")
    return _log(c, p, body.model_dump())
