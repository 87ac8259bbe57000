"""Assets with their health, readings by range, predictions, maintenance history, the schedule, the
report; admitting an unknown asset out of quarantine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from smart_maintenance.api.auth import Context, cached, ctx, may_see, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal

router = APIRouter(prefix="/api", tags=["assets"])
Reader = Annotated[Principal, Depends(require("read"))]
Ctx = Annotated[Context, Depends(ctx)]


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


@router.get("/assets")
async def list_assets(request: Request, p: Reader, c: Ctx) -> Response:
    """Every asset with its health score (0..100) and what is open on it."""
    return await cached(request, c, p, lambda: api_reads.assets(c.store, c.known, c.visible(p)))


@router.get("/assets/{asset_id}")
async def get_asset(request: Request, asset_id: str, p: Reader, c: Ctx) -> Response:
    """One asset: health, active alarms, open cases, open work orders, latest predictions, history."""
    return await cached(request, c, p, lambda: _asset(c, p, asset_id))


def _asset(c: Context, p: Principal, asset_id: str) -> dict[str, Any]:
    if not may_see(c, p, asset_id):
        raise HTTPException(404, f"no asset {asset_id!r}")
    mine = [a for a in api_reads.assets(c.store, c.known, [asset_id]) if a["asset_id"] == asset_id]
    if not mine:
        raise HTTPException(404, f"no asset {asset_id!r}")
    return {**mine[0],
            "alarms": api_reads.alarms(c.store, None, "active", asset_id),
            "cases": api_reads.cases(c.store, None, "open", asset_id),
            "work_orders": api_reads.work_orders(c.store, None, "open", asset_id),
            "predictions": api_reads.predictions(c.store, None, asset_id, limit=10),
            "maintenance": api_reads.maintenance(c.store, None, asset_id, limit=20)}


@router.get("/assets/{asset_id}/readings")
async def get_readings(request: Request, asset_id: str, p: Reader, c: Ctx, start: datetime | None = None,
                       end: datetime | None = None, sensor: str | None = None,
                       points: Annotated[int, Query(ge=2)] = 500) -> Response:
    """Readings in [start, end) (default: the last day of data), at most `points` per sensor:
    each point is [bucket start, mean, min, max, count], computed in the database."""
    return await cached(request, c, p, lambda: _readings(c, p, asset_id, start, end, sensor, points))


def _readings(c: Context, p: Principal, asset_id: str, start: datetime | None, end: datetime | None,
              sensor: str | None, points: int) -> dict[str, Any]:
    if not may_see(c, p, asset_id):
        raise HTTPException(404, f"no asset {asset_id!r}")
    if points > c.config.max_points:
        raise HTTPException(422, f"points must be at most {c.config.max_points}")
    if end is None:
        last = c.store.rows("SELECT max(ts) AS t FROM {s}.readings WHERE asset_id = %s", [asset_id])[0]["t"]
        end = (last or datetime.now(timezone.utc)) + timedelta(milliseconds=1)
    end = _utc(end)
    start = _utc(start) if start is not None else end - timedelta(days=1)
    if end <= start:
        raise HTTPException(422, "end must be after start")
    return {"asset_id": asset_id, "start": start, "end": end, "points": points,
            "sensors": api_reads.readings(c.store, asset_id, start, end, points, sensor)}


@router.get("/predictions")
async def list_predictions(request: Request, p: Reader, c: Ctx, asset: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """Time-to-failure predictions, newest first."""
    return await cached(request, c, p, lambda: api_reads.predictions(c.store, c.visible(p), asset, limit))


@router.get("/maintenance")
async def list_maintenance(request: Request, p: Reader, c: Ctx, asset: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """The maintenance history, newest first."""
    return await cached(request, c, p, lambda: api_reads.maintenance(c.store, c.visible(p), asset, limit))


@router.get("/schedule")
async def get_schedule(request: Request, p: Reader, c: Ctx) -> Response:
    """The technicians' current plan."""
    return await cached(request, c, p, lambda: api_reads.schedule(c.store, c.visible(p)))


class Admission(BaseModel):
    note: str = Field(default="", max_length=2000)


@router.post("/assets/{asset_id}/admit")
def admit_asset(asset_id: str, body: Admission, p: Annotated[Principal, Depends(require("admin"))],
                c: Ctx) -> dict[str, Any]:
    """Admit an unknown asset out of quarantine (as `smart-maintenance assets admit`): from then on its
    alarms create work orders and notify people. Audited; `admitted_by` is the key's name."""
    from smart_maintenance.connectors.postgres.admission import AdmissionStore

    if not asset_id.strip() or not asset_id.isprintable() or len(asset_id) > 200:
        raise HTTPException(422, "an asset id must be printable, not empty, at most 200 characters")
    with AdmissionStore(c.store.dsn, c.store.schema) as store:
        new = asset_id in store.admit([asset_id], admitted_by=p.name, note=body.note.strip())
    c.store.audit(p.name, "asset_admitted", asset_id, {"note": body.note.strip(), "new": new})
    return {"asset_id": asset_id, "admitted": True, "new": new, "by": p.name}


@router.get("/report", response_class=HTMLResponse)
async def get_report(p: Reader, c: Ctx, since: str | None = None, asset: str | None = None) -> HTMLResponse:
    """The HTML report (`smart-maintenance report`) of `since` (36h, 7d, a date; default all) up to the
    newest data, for one asset or the fleet. A key limited to sites must name one of its assets."""
    from smart_maintenance.report.data import ReportDataError, load_report_data
    from smart_maintenance.report.html import parse_since, render_report

    try:
        period = parse_since(since) if since else None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None

    def render() -> str:
        if c.visible(p) is not None and (asset is None or not may_see(c, p, asset)):
            raise HTTPException(403, f"key {p.name!r} sees some sites only: name one of its assets (?asset=)")
        data = load_report_data(c.store.dsn, c.store.schema, since=period, asset=asset)
        return render_report(data, None, datetime.now(timezone.utc))[0]

    try:
        html = await run_in_threadpool(render)
    except ReportDataError as e:
        raise HTTPException(503, str(e)) from None
    return HTMLResponse(html, headers={  # the report is one self-contained page: inline style, data: images
        "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                   "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"})
