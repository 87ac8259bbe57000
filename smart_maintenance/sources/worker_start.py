"""A source that emits nothing, built on each worker's thread: where a flow runs code on its workers at start.

Bytewax builds a flow's steps on every worker's thread, in the order the flow added them, before any runs; a
`DynamicSource` is built once per worker (`build`), so `WorkerStart(on_start)`, added first, calls
`on_start()` on each worker's thread before the other steps' sources and sinks are built, then ends at once.
The flow uses it to set a worker thread's timer slack back (`smart_maintenance/slack.py`).

    >>> from bytewax.dataflow import Dataflow
    >>> import bytewax.operators as op
    >>> from bytewax.testing import TestingSink, run_main
    >>> seen, out = [], []
    >>> flow = Dataflow("example")
    >>> op.output("out", op.input("start", flow, WorkerStart(lambda: seen.append("started"))), TestingSink(out))
    >>> run_main(flow); seen, out
    (['started'], [])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.inputs import DynamicSource, StatelessSourcePartition


class WorkerStart(DynamicSource[Any]):
    """Calls `on_start()` when a worker builds it (on that worker's thread); emits nothing."""

    def __init__(self, on_start: Callable[[], None]) -> None:
        self._on_start = on_start

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Ended:
        self._on_start()
        return _Ended()


class _Ended(StatelessSourcePartition[Any]):
    def next_batch(self) -> list[Any]:
        raise StopIteration
