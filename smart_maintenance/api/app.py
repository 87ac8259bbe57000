"""The FastAPI app: `create_app` wires the store, the limits and the routers.

Guarantees: every route but `/health`, the UI's login page and its static files needs a key with
the route's scope; a body over `max_body_bytes` is refused with 413 before it is read whole; CORS is
off unless origins are configured; user text in pages is escaped (Jinja autoescape).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smart_maintenance.api.auth import Context, RateLimiter, read_key, require, token_of
from smart_maintenance.api.cache import ReadCache
from smart_maintenance.api.config import ApiConfig
from smart_maintenance.api.routers import admin, alarms, assets, cases, events, ingest, ui, work_orders
from smart_maintenance.connectors.postgres.api_store import ApiStore, Principal

ANONYMOUS = frozenset({"/health", "/ui/login", "/ui/session", "/static", "/"})
"""Paths served without a key: the health check, the login page and the login itself (which checks a key),
our own JS/CSS, and `/`, which redirects to the UI. The OpenAPI document needs the `read` scope."""


ROUTERS = (assets, alarms, cases, work_orders, ingest, events, admin, ui)


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every route of the app with its full path (FastAPI keeps included routers apart)."""
    own = [r for r in app.routes if isinstance(r, APIRoute)]
    return own + [r for m in ROUTERS for r in m.router.routes if isinstance(r, APIRoute)]


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413): by Content-Length, and while streaming."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class CachedReads:
    """The fast path of a GET whose answer is ready in the read cache (`ReadCache.ready`), for a key checked less than
    `key_cache_s` ago: answered here, without routing or dependencies. The same rules hold as in the
    routes: the key must be remembered as valid and hold the route's scope (`read`), the answer is the
    one for its sites, and the request takes from the key's rate budget. Anything else (no key, an
    unknown or revoked key, a stale or missing answer, the rate exceeded) goes on to the app."""

    def __init__(self, app: ASGIApp, ctx: Context):
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.ctx.reads.ttl_s > 0:
            body = self._fresh(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _fresh(self, scope: Scope) -> bytes | None:
        token = token_of(Request(scope))
        p = self.ctx.remembered(token) if token else None
        if p is None or not p.may("read"):
            return None
        body = self.ctx.reads.ready(read_key(scope, p))
        if body is None or self.ctx.limiter.take(p.name) > 0:  # over the rate: the app answers 429
            return None
        return body


class WritesInvalidate:
    """Any write (not GET/HEAD/OPTIONS, not ingest) empties the read cache before its answer leaves, so its
    caller's next read sees it. Ingest writes only `ingest_readings`, which no cached read shows."""

    def __init__(self, app: ASGIApp, cache: ReadCache):
        self.app, self.cache = app, cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS")
                or scope["path"].startswith("/api/ingest/")):
            await self.app(scope, receive, send)
            return

        async def invalidating(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                self.cache.invalidate()
            await send(msg)

        await self.app(scope, receive, invalidating)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail":"request body over %d bytes"}' % limit
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(config: ApiConfig, store: ApiStore, known: dict[str, dict[str, str]],
               loop_store: Callable[[], Any]) -> FastAPI:
    """The app over an opened `store`; `known` maps the registry's asset ids to their site and type;
    `loop_store()` opens a `LoopStore` on the same schema (decisions and maintenance go through it)."""
    app = FastAPI(title="smart-maintenance", version="1", description="Predictive maintenance: reads, decisions, "
                  "work, ingest and a live stream. Every route but /health needs an API key "
                  "(Authorization: Bearer <token>).", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = Context(store=store, known=known, limiter=RateLimiter(config.rate_per_s, config.burst),
                            config=config, loop_store=loop_store, reads=ReadCache(config.read_cache_s))

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        """Anonymous: is the server up and its database reachable."""
        try:
            store.rows("SELECT 1 AS ok")
            return {"status": "ok", "database": "ok"}
        except Exception as e:  # noqa: BLE001 - a health check reports, never raises
            return {"status": "degraded", "database": type(e).__name__}

    @app.get("/openapi.json", tags=["health"])
    def openapi(p: Annotated[Principal, Depends(require("read"))]) -> dict[str, Any]:
        """The OpenAPI document of this API (every route, its scope in its description)."""
        return app.openapi()

    for r in ROUTERS:
        app.include_router(r.router)
    ui.mount_static(app)
    # middleware added last runs first: BodyLimit, WritesInvalidate, CORS (its headers on cached answers too),
    # then CachedReads in front of the routes
    app.add_middleware(CachedReads, ctx=app.state.ctx)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "PATCH"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"])
    app.add_middleware(WritesInvalidate, cache=app.state.ctx.reads)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app
