"""Read results shared by concurrent callers for a short time, and answered as JSON bytes.

Many screens of a control room ask the same questions (the fleet, the open cases, a chart) many
times a second. `ReadCache.json` answers a GET from the bytes of an identical request (same path,
query string and site limits) made less than `ttl_s` ago; identical requests that arrive while the
first is still running wait for its answer instead of running the query again (single flight).

Guarantees:
- An answer is at most `ttl_s` older than the database, plus the time its query ran; `ttl_s <= 0`
  turns both the cache and the sharing off (every request runs its own query).
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
        self._done: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._running: dict[Hashable, asyncio.Future[bytes]] = {}
        self.generation = 0
        self.hits = self.misses = self.shared = 0

    def invalidate(self) -> None:
        """Forget every answer; queries running now are not stored (a write happened meanwhile)."""
        self.generation += 1
        self._done.clear()

    async def json(self, key: Hashable, load: Callable[[], Any]) -> Response:
        """The JSON answer for `key`: remembered, shared with a running twin, or `load()` in the thread pool."""
        return json_response(await self.bytes(key, load))

    async def bytes(self, key: Hashable, load: Callable[[], Any]) -> bytes:
        if self.ttl_s <= 0:
            self.misses += 1
            return await run_in_threadpool(lambda: dumps(load()))
        now = self.clock()
        hit = self._done.get(key)
        if hit is not None and hit[0] > now:
            self.hits += 1
            return hit[1]
        running = self._running.get(key)
        if running is not None:
            self.shared += 1
            return await asyncio.shield(running)
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        generation = self.generation
        try:
            body = await run_in_threadpool(lambda: dumps(load()))
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._running[key]
        future.set_result(body)
        if generation == self.generation:
            self._done[key] = (self.clock() + self.ttl_s, body)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)
        return body
