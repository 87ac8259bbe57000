"""The read cache's rules (api/cache.py): fresh, stale while one refresh runs, shared misses, writes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from smart_maintenance.api.cache import ReadCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts its calls; each returns the call number, optionally after `gate` opens."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.calls, self.gate, self.fail = 0, gate, fail

    def __call__(self) -> Any:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("database down")
        return {"n": n}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_fresh_answers_are_reused_and_stale_ones_refresh_once_in_the_background() -> None:
    clock, load = Clock(), Loader()
    cache = ReadCache(1.0, clock=clock)

    async def go() -> list[bytes]:
        out = [await cache.answer("k", load)]
        clock.now = 0.5
        out.append(await cache.answer("k", load))  # fresh
        clock.now = 1.5
        out.append(await cache.answer("k", load))  # stale: old answer, one refresh starts
        out.append(await cache.answer("k", load))  # stale, refresh running: no second one
        await asyncio.sleep(0.2)
        out.append(await cache.answer("k", load))  # the refreshed answer (made at 1.5)
        return out

    assert run(go()) == [b'{"n":1}', b'{"n":1}', b'{"n":1}', b'{"n":1}', b'{"n":2}']
    assert load.calls == 2


def test_an_answer_older_than_twice_the_ttl_is_never_served() -> None:
    clock, load = Clock(), Loader()
    cache = ReadCache(1.0, clock=clock)

    async def go() -> list[bytes]:
        first = await cache.answer("k", load)
        clock.now = 2.0
        return [first, await cache.answer("k", load)]

    assert run(go()) == [b'{"n":1}', b'{"n":2}']


def test_identical_misses_share_one_query_and_a_write_meanwhile_is_not_hidden() -> None:
    gate, clock = threading.Event(), Clock()
    load = Loader(gate)
    cache = ReadCache(1.0, clock=clock)

    async def go() -> list[bytes]:
        waiting = [asyncio.ensure_future(cache.answer("k", load)) for _ in range(5)]
        await asyncio.sleep(0.05)
        cache.invalidate()  # a write committed while the query ran
        gate.set()
        got = await asyncio.gather(*waiting)
        return [*got, await cache.answer("k", load)]

    got = run(go())
    assert got[:5] == [b'{"n":1}'] * 5 and got[5] == b'{"n":2}'  # shared, but not kept past the write
    assert load.calls == 2


def test_errors_reach_every_waiter_and_are_not_kept() -> None:
    cache, load = ReadCache(1.0, clock=Clock()), Loader(fail=True)

    async def go() -> list[Any]:
        return await asyncio.gather(*(cache.answer("k", load) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(e, RuntimeError) for e in run(go())) and load.calls == 1
    load.fail = False
    assert run(cache.answer("k", load)) == b'{"n":2}'


def test_ready_answers_only_without_a_query_and_ttl_zero_turns_everything_off() -> None:
    clock, load = Clock(), Loader()
    cache = ReadCache(1.0, clock=clock)
    assert cache.ready("k") is None
    run(cache.answer("k", load))
    assert cache.ready("k") == b'{"n":1}'
    clock.now = 1.5
    assert cache.ready("k") is None  # stale and no refresh running: the app must start one
    off = ReadCache(0.0, clock=clock)
    run(off.answer("k", load))
    run(off.answer("k", load))
    assert load.calls == 3 and off.ready("k") is None


@pytest.mark.parametrize("entries", [1, 3])
def test_the_oldest_answers_go_first(entries: int) -> None:
    cache, load = ReadCache(10.0, max_entries=entries, clock=Clock()), Loader()
    for k in range(5):
        run(cache.answer(k, load))
    assert [k for k in range(5) if cache.ready(k) is not None] == list(range(5 - entries, 5))
