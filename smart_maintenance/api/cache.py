"""Read results shared by concurrent callers for a short time, and answered as JSON bytes.

Many screens of a control room ask the same questions (the fleet, the open cases, a chart) many
times a second. `ReadCache.json` answers a GET from the bytes of an identical request (same path,
query string and site limits) made less than `ttl_s` ago; identical requests that arrive while the
first is still running wait for its answer instead of running the query again (single flight).

Guarantees:
- An answer is at most 2 x `ttl_s` older than the database: fresh for `ttl_s`, then served for at
  most another `ttl_s` while one refresh runs in the background (so nobody waits for a refresh);
  `ttl_s <= 0` turns the cache and the sharing off (every request runs its own query).
- A write through this app calls `invalidate()`: later reads in this process see the write (a query
  that began before it is not stored).
- Errors (HTTPException, database errors) are never stored; every waiter gets the same error.
- At most `max_entries` answers are kept (the oldest go first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from decimal import Decimal
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

__all__ = ["JSON", "ReadCache", "dumps", "json_response"]

JSON = "application/json"


def _default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """JSON bytes (orjson): datetimes as RFC 3339, numpy scalars and arrays, Decimal as float.

    >>> from datetime import datetime, timezone
    >>> dumps({"t": datetime(2026, 1, 5, tzinfo=timezone.utc), "n": Decimal("1.5")})
    b'{"t":"2026-01-05T00:00:00+00:00","n":1.5}'
    """
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type=JSON)


class ReadCache:
    """Answers of GET routes by request, `ttl_s` long (see the module docstring)."""

    def __init__(self, ttl_s: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._done: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()  # key -> (made at, answer)
        self._running: dict[Hashable, asyncio.Future[bytes]] = {}
        self.generation = 0
        self.hits = self.misses = self.shared = self.stale = 0

    def invalidate(self) -> None:
        """Forget every answer; queries running now are not stored (a write happened meanwhile)."""
        self.generation += 1
        self._done.clear()

    def ready(self, key: Hashable) -> bytes | None:
        """The answer `answer()` would give for `key` without starting anything: a fresh one, or a stale
        one while its refresh runs. None when `answer()` would start a query or wait."""
        hit = self._done.get(key)
        if hit is None:
            return None
        age = self.clock() - hit[0]
        if age < self.ttl_s:
            self.hits += 1
            return hit[1]
        if age < 2 * self.ttl_s and key in self._running:
            self.stale += 1
            return hit[1]
        return None

    async def json(self, key: Hashable, load: Callable[[], Any]) -> Response:
        """The JSON answer for `key`: remembered, shared with a running twin, or `load()` in the thread pool."""
        return json_response(await self.answer(key, load))

    async def answer(self, key: Hashable, load: Callable[[], Any]) -> bytes:
        """Fresh (younger than `ttl_s`): answered at once. Stale (younger than 2 x `ttl_s`): answered at
        once while one refresh runs in the background. Older or missing: the caller waits for one query
        shared by every identical request meanwhile."""
        if self.ttl_s <= 0:
            self.misses += 1
            return await run_in_threadpool(lambda: dumps(load()))
        hit = self._done.get(key)
        age = self.clock() - hit[0] if hit is not None else float("inf")
        if hit is not None and age < self.ttl_s:
            self.hits += 1
            return hit[1]
        running = self._running.get(key)
        if hit is not None and age < 2 * self.ttl_s:
            self.stale += 1
            if running is None:
                self._start(key, load)
            return hit[1]
        if running is not None:
            self.shared += 1
            return await asyncio.shield(running)
        self.misses += 1
        return await asyncio.shield(self._start(key, load))

    def _start(self, key: Hashable, load: Callable[[], Any]) -> asyncio.Future[bytes]:
        task = asyncio.ensure_future(self._load(key, load, self.generation))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failed refresh nobody awaited
        self._running[key] = task
        return task

    async def _load(self, key: Hashable, load: Callable[[], Any], generation: int) -> bytes:
        made = self.clock()
        try:
            body = await run_in_threadpool(lambda: dumps(load()))
        finally:
            del self._running[key]
        if generation == self.generation:
            self._done[key] = (made, body)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        return body
