"""Two partitioned sources read by one Bytewax input: the readings and the controls cross epochs together.

Bytewax closes epochs per source partition, on a timer (10 s by default) that each partition checks only
when its input operator runs, and it holds every partition that starts a new epoch until the whole
dataflow has finished the previous one. With the readings and the controls in two inputs, the readings
partitions (polled every 10 ms) start each epoch first and then wait for the control input, which runs
only at its own poll (every second), and the wait grows epoch after epoch because each partition's
epoch starts when it was last advanced: a live flow stopped reading for 1.3-2.1 s every 10 s
(`bench/live.py`, 2026-12-06, docs/performance.md). Partitions of one input are all checked at every run
of the operator, so they cross each boundary in the same run and the readings never wait for the controls.

`JointSource(main, extra)` lists `main`'s partitions under their own names (a readings source's snapshots
keep their keys) and `extra`'s with `EXTRA_PREFIX` in front, and builds each from its own source. Items
keep their types; `extra`'s are `(asset_id, control)` tuples and `main`'s never are, which is what
`is_extra_item` tells apart for the flow's branch.

    >>> from bytewax.testing import TestingSource
    >>> joint = JointSource(TestingSource(["a"]), TestingSource([("pump-1", "control")]))
    >>> joint.list_parts()
    ['iterable', 'extra:iterable']
    >>> is_extra_item(("pump-1", "control")), is_extra_item("a")
    (True, False)
"""

from __future__ import annotations

from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

EXTRA_PREFIX = "extra:"


class JointSource(FixedPartitionedSource[Any, Any]):
    """`main`'s partitions and `extra`'s as one source (see the module docstring)."""

    def __init__(self, main: FixedPartitionedSource[Any, Any], extra: FixedPartitionedSource[Any, Any]) -> None:
        self.main = main
        self.extra = extra
        self.live = bool(getattr(main, "live", False))  # what `build_flow` asks of a source it was given

    def list_parts(self) -> list[str]:
        main_parts = self.main.list_parts()
        clash = [p for p in main_parts if p.startswith(EXTRA_PREFIX)]
        if clash:
            raise ValueError(f"partition names {clash} of the main source start with {EXTRA_PREFIX!r}")
        return main_parts + [EXTRA_PREFIX + p for p in self.extra.list_parts()]

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> StatefulSourcePartition[Any, Any]:
        if for_part.startswith(EXTRA_PREFIX):
            return self.extra.build_part(step_id, for_part[len(EXTRA_PREFIX):], resume_state)
        return self.main.build_part(step_id, for_part, resume_state)


def is_extra_item(item: Any) -> bool:
    """An item of the extra (control) source: `(asset_id, control)`; the main source emits batches."""
    return isinstance(item, tuple)
