"""Who may call what: API keys (header or the UI's cookie), scopes, sites and a per-key rate limit.

A request carries its key as `Authorization: Bearer <token>`, `X-API-Key: <token>`, or (the web UI)
the `sm_key` cookie (HttpOnly, SameSite=Strict). `require(scope)` is the dependency of every route but
`/health`: 401 without a valid key, 403 when the key lacks the scope (`admin` holds every scope), 429
over the key's rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from smart_maintenance.api.cache import ReadCache
from smart_maintenance.connectors.postgres.api_store import ApiStore, Principal, hash_token

COOKIE = "sm_key"


class RateLimiter:
    """A token bucket per key: `rate_per_s` sustained, `burst` at once (thread-safe)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0.0 when allowed, else the seconds to wait."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


@dataclass
class Context:
    """What the routes share: the store, the known assets (id -> site, type), the limits."""

    store: ApiStore
    known: dict[str, dict[str, str]]
    limiter: RateLimiter
    config: Any
    loop_store: Callable[[], Any]  # a fresh LoopStore (decisions, maintenance), closed by the caller
    reads: ReadCache = field(default_factory=lambda: ReadCache(0.0))  # GET answers shared a moment (cache.py)
    _keys: dict[str, tuple[float, Principal]] = field(default_factory=dict)  # sha256(token) -> (until, key)
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    def remembered(self, token: str) -> Principal | None:
        """The token's key if it was checked less than `config.key_cache_s` ago."""
        with self._keys_lock:
            hit = self._keys.get(hash_token(token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def principal(self, token: str) -> Principal | None:
        """The token's live key; a valid one is remembered `config.key_cache_s` (a revocation takes that long)."""
        p = self.remembered(token)
        if p is not None:
            return p
        digest, now = hash_token(token), time.monotonic()
        p = self.store.principal(token)
        if p is not None and self.config.key_cache_s > 0:
            with self._keys_lock:
                if len(self._keys) > 10_000:
                    self._keys.clear()
                self._keys[digest] = (now + self.config.key_cache_s, p)
        return p

    def visible(self, p: Principal) -> list[str] | None:
        """The asset ids a key may see (None: all). An asset the registry does not know is at site `default`."""
        if not p.sites:
            return None
        seen = {r["asset_id"] for r in self.store.rows("SELECT DISTINCT asset_id FROM {s}.alarms UNION "
                                                        "SELECT DISTINCT asset_id FROM {s}.work_orders UNION "
                                                        "SELECT DISTINCT asset_id FROM {s}.reviews")}
        ids = set(self.known) | seen
        return sorted(a for a in ids if self.known.get(a, {}).get("site", "default") in p.sites)


async def ctx(request: Request) -> Context:  # async: no thread hop for what costs nothing
    c: Context = request.app.state.ctx
    return c


def token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or request.cookies.get(COOKIE) or None


async def principal(request: Request) -> Principal:
    """The caller's key (401 without a valid one); also takes from its rate budget (429).

    A remembered key costs no thread hop; only a lookup in the database runs in the thread pool.
    """
    token = token_of(request)
    c: Context = request.app.state.ctx
    p = None
    if token:
        p = c.remembered(token) or await run_in_threadpool(c.principal, token)
    if p is None:  # failed attempts share a budget per client address, so keys cannot be guessed fast
        host = request.client.host if request.client else "?"
        if c.limiter.take(f"unauthenticated:{host}") > 0:
            raise HTTPException(429, "too many requests without a valid key")
        raise HTTPException(401, "a valid API key is needed", headers={"WWW-Authenticate": "Bearer"})
    wait = c.limiter.take(p.name)
    if wait > 0:
        raise HTTPException(429, f"rate limit for key {p.name!r}", headers={"Retry-After": str(max(1, round(wait)))})
    return p


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def check(p: Principal = Depends(principal)) -> Principal:  # noqa: B008 - FastAPI's way
        if not p.may(scope):
            raise HTTPException(403, f"key {p.name!r} lacks the {scope!r} scope")
        return p

    check.scope = scope  # type: ignore[attr-defined]  # read by the tests and the docs
    return check


def read_key(scope: Any, p: Principal, needs: str = "read") -> tuple[str, str, bytes, frozenset[str]]:
    """What a cached GET answer depends on: the route's scope, path, raw query and the key's sites."""
    return needs, scope["path"], scope.get("query_string", b""), p.sites


async def cached(request: Request, c: Context, p: Principal, load: Callable[[], Any]) -> Response:
    """A `read` GET route's JSON answer through the read cache: the same path, query and sites share it."""
    return await c.reads.json(read_key(request.scope, p), load)


def may_see(c: Context, p: Principal, asset_id: str) -> bool:
    visible = c.visible(p)
    return visible is None or asset_id in visible
