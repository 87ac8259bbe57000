"""Source partition pieces that connectors share."""

from __future__ import annotations

from typing import Any

from bytewax.inputs import StatelessSourcePartition


class IdlePartition(StatelessSourcePartition[Any]):
    """The partition of a worker that reads nothing (a source that one worker alone reads): ends at once."""

    def next_batch(self) -> list[Any]:
        raise StopIteration
