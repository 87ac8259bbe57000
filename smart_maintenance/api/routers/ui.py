"""The web UI: server-rendered pages (Jinja, autoescaped) with a little local JavaScript.

Pages: fleet overview, asset page, review queue, work orders with the schedule, maintenance log.
The browser holds its key in an HttpOnly, SameSite=Strict cookie set by the login page; the pages'
forms POST JSON to the API's routes, which check the key's scopes as for any client.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from smart_maintenance.api import charts
from smart_maintenance.api.auth import COOKIE, Context, ctx, may_see, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal

HERE = Path(__file__).resolve().parent.parent
router = APIRouter(tags=["web UI"], include_in_schema=False)
env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
Reader = Annotated[Principal, Depends(require("read"))]
Ctx = Annotated[Context, Depends(ctx)]


def _t(v: Any) -> str:
    return "" if v is None else v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


env.filters["t"] = _t
env.filters["spark"] = charts.spark


def page(name: str, p: Principal | None, code: int = 200, **values: Any) -> HTMLResponse:
    html = env.get_template(name).render(who=p, **values)
    return HTMLResponse(html, status_code=code, headers={
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                   "script-src 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def _ui_errors(request: Request, exc: StarletteHTTPException) -> Response:
        """A page without a valid key answers its status with the login form; the API answers JSON."""
        if request.method == "GET" and request.url.path.startswith("/ui/") and exc.status_code in (401, 403):
            return page("login.html", None, exc.status_code, message=exc.detail, next=request.url.path)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/login")
def login_page(next: str = "/ui/") -> HTMLResponse:  # noqa: A002 - the query parameter's name
    return page("login.html", None, next=next if next.startswith("/ui/") else "/ui/")


class Login(BaseModel):
    key: str


@router.post("/ui/session")
def login(body: Login, request: Request, c: Ctx) -> JSONResponse:
    """Check a key and hand it to the browser as an HttpOnly cookie."""
    p = c.store.principal(body.key.strip())
    if p is None:
        host = request.client.host if request.client else "?"
        c.limiter.take(f"unauthenticated:{host}")
        raise HTTPException(401, "that key is not valid")
    out = JSONResponse({"name": p.name, "scopes": sorted(p.scopes)})
    out.set_cookie(COOKIE, body.key.strip(), httponly=True, samesite="strict", secure=c.config.secure_cookie,
                   max_age=12 * 3600, path="/")
    return out


@router.post("/ui/logout")
def logout(p: Reader) -> JSONResponse:
    out = JSONResponse({"signed_out": p.name})
    out.delete_cookie(COOKIE, path="/")
    return out


@router.get("/ui/")
def fleet(p: Reader, c: Ctx) -> HTMLResponse:
    visible = c.visible(p)
    return page("fleet.html", p, assets=api_reads.assets(c.store, c.known, visible),
                alarms=api_reads.alarms(c.store, visible, "active", limit=50),
                cases=api_reads.cases(c.store, visible, "open", limit=50))


@router.get("/ui/assets/{asset_id}")
def asset_page(asset_id: str, p: Reader, c: Ctx, days: float = 2.0) -> HTMLResponse:
    if not may_see(c, p, asset_id):
        raise HTTPException(404, f"no asset {asset_id!r}")
    mine = [a for a in api_reads.assets(c.store, c.known, [asset_id]) if a["asset_id"] == asset_id]
    if not mine:
        raise HTTPException(404, f"no asset {asset_id!r}")
    last = c.store.rows("SELECT max(ts) AS t FROM {s}.readings WHERE asset_id = %s", [asset_id])[0]["t"]
    end = (last or datetime.now(timezone.utc)) + timedelta(milliseconds=1)
    start = end - timedelta(days=min(max(days, 0.1), 60))
    series = api_reads.readings(c.store, asset_id, start, end, 240)
    all_alarms = api_reads.alarms(c.store, None, "all", asset_id, limit=100)
    anomalies = c.store.rows("SELECT window_start, window_end, status FROM {s}.anomalies WHERE asset_id = %s "
                             "AND window_end >= %s AND status IN ('confirmed', 'needs_review') ORDER BY window_start",
                             [asset_id, start])
    spans = [(a["window_start"], a["window_end"], "anomaly") for a in anomalies]
    spans += [(a["opened_at"], a["cleared_at"] or end, "alarm") for a in all_alarms if a["kind"] == "machine"]
    orders = api_reads.work_orders(c.store, None, "all", asset_id, limit=50)
    logged = {m["work_order_id"]: m for m in api_reads.maintenance(c.store, None, asset_id, limit=200)}
    return page("asset.html", p, asset=mine[0], charts=[charts.trend(s, pts, spans, start, end)
                                                         for s, pts in sorted(series.items())],
                alarms=all_alarms, cases=api_reads.cases(c.store, None, "all", asset_id, limit=50),
                work_orders=orders, logged=logged, predictions=api_reads.predictions(c.store, None, asset_id, 10),
                maintenance=api_reads.maintenance(c.store, None, asset_id, limit=50),
                incidents=[i for w in orders for i in (w["similar_incidents"] or [])][:10], start=start, end=end)


@router.get("/ui/reviews")
def reviews_page(p: Reader, c: Ctx, status: str = "open") -> HTMLResponse:
    if status not in api_reads.CASE_STATUSES:
        status = "open"
    return page("reviews.html", p, status=status, cases=api_reads.cases(c.store, c.visible(p), status, limit=200))


@router.get("/ui/work-orders")
def work_orders_page(p: Reader, c: Ctx) -> HTMLResponse:
    visible = c.visible(p)
    orders = api_reads.work_orders(c.store, visible, "open", limit=200)
    logged = {m["work_order_id"] for m in api_reads.maintenance(c.store, visible, limit=1000) if m["work_order_id"]}
    plan = api_reads.schedule(c.store, visible)
    return page("work_orders.html", p, work_orders=orders, logged=logged, gantt=charts.gantt(plan), plan=plan)


@router.get("/ui/maintenance")
def maintenance_page(p: Reader, c: Ctx, asset: str = "", work_order: str = "") -> HTMLResponse:
    visible = c.visible(p)
    return page("maintenance.html", p, asset=asset, work_order=work_order,
                assets=[a["asset_id"] for a in api_reads.assets(c.store, c.known, visible)],
                history=api_reads.maintenance(c.store, visible, limit=50))
