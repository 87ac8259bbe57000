"""The garbage collector's thresholds for a flow process, whose heap is mostly long-lived per-asset state.

CPython's full collection walks every tracked object; a flow's heap is its assets' states (detectors,
sensor health, alarm episodes: a few hundred objects each), which live as long as the job and are freed by
reference counting when replaced, so full collections find almost nothing. With the default thresholds
(700, 10, 10) the 20,000-asset run of `bench/assets_scale.py` spent about a fifth of its CPU in them
(2026-12-06: 4.2 s of 5.3 s of collection in a 14 s run; with collection off, 11.9 CPU-s against 14.5): the
cost of many assets grew with the heap, not with the readings.

`tune_gc` makes young collections rarer (every 50,000 net allocations instead of 700) and full ones much
rarer (after 100 middle collections instead of 10; CPython still waits until the old generation grew by a
quarter). Cycles are still collected, later: garbage cycles wait longer, so memory between collections is
a little higher. Chosen on `bench/assets_scale.py` at 20,000 assets; checked at 100 and on
`bench/throughput.py` (20 assets).

`freeze_at_exit` spares a flow process the collections of its interpreter's shutdown: after the atexit
handlers, CPython clears every module and runs full collections over a heap that is about to be freed whole
(0.33 CPU-s after the flow's imports alone, 0.21-0.24 in a flow process; 2026-12-07, docs/performance.md),
a fixed cost every process of a cluster pays once more. With the heap frozen the shutdown still frees every object that
reference counts free, in the same order; what it no longer does is look for cycles among the objects that
existed when the handlers ran, which CPython's shutdown does not promise to finalize anyway.
"""

from __future__ import annotations

import atexit
import gc

FLOW_THRESHOLDS = (50_000, 20, 100)


def tune_gc(thresholds: tuple[int, int, int] = FLOW_THRESHOLDS) -> None:
    """Set the collector's thresholds for a flow process; never lowers one that is already higher.

    >>> before = gc.get_threshold(); tune_gc((1_000, 10, 10)); gc.get_threshold()[0] >= 1_000
    True
    >>> gc.set_threshold(*before)
    """
    gc.set_threshold(*(max(a, b) for a, b in zip(gc.get_threshold(), thresholds, strict=True)))


def freeze_at_exit() -> None:
    """Freeze the heap (`gc.freeze`) when the atexit handlers run, so that the shutdown's collections skip it.

    Registered once, by the first import of `smart_maintenance.dataflows`: registered early, it runs after the
    handlers registered later (the writers', the process pools'), once their clean-up is done.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
