"""SIGTERM stops a run as Ctrl-C does.

systemd, Docker and Kubernetes stop a service with SIGTERM. Python's default
is to die at once: no last snapshot, sinks not flushed, and the embedded
PostgreSQL server (stopped by an `atexit` hook) left running. While a flow
runs, SIGTERM is turned into the KeyboardInterrupt of SIGINT, which Bytewax
turns into an orderly stop: inputs closed, sinks flushed and closed, the
process exits through its `atexit` hooks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["sigterm_as_interrupt"]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread (elsewhere: a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_by_signal(error: BaseException) -> bool:
    """Did this error of a run come from SIGINT or SIGTERM?

    Bytewax reports a signal as "interrupt signal received"; a signal that lands
    while it builds a sink partition (they are built at their first item) comes
    back as that build's error, with the KeyboardInterrupt as its cause.

    >>> from bytewax.errors import BytewaxRuntimeError
    >>> e = BytewaxRuntimeError("error init StatefulSink")
    >>> e.__cause__ = KeyboardInterrupt()
    >>> stopped_by_signal(e), stopped_by_signal(BytewaxRuntimeError("error init StatefulSink"))
    (True, False)
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt) or "signal received" in str(e):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
