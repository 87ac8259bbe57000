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
