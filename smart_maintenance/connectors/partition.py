"""Source partition pieces that connectors share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bytewax.inputs import StatelessSourcePartition


def check_stop_limits(stop_after: int | None, idle_stop_s: float | None, unit: str = "message") -> None:
    """The end conditions a live source takes for tests and bounded runs: ValueError when one makes no sense.

    >>> check_stop_limits(None, 2.0)
    >>> check_stop_limits(0, None, unit="value")
    Traceback (most recent call last):
    ValueError: stop_after must be at least 1 value, got 0
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be at least 1 {unit}, got {stop_after}")
    if idle_stop_s is not None and idle_stop_s <= 0:
        raise ValueError(f"idle_stop_s must be positive, got {idle_stop_s}")


class ThreadErrorMixin:
    """A partition whose client thread (paho's network loop, an asyncio loop) stores its error in `_error`:
    the next call on the flow's thread closes the partition and raises it."""

    _error: BaseException | None

    if TYPE_CHECKING:  # the partition's own close, which this mixin must not shadow

        def close(self) -> None: ...

    def _raise_error(self) -> None:
        err = self._error
        if err is not None:
            self.close()
            raise err from err.__cause__


class IdlePartition(StatelessSourcePartition[Any]):
    """The partition of a worker that reads nothing (a source that one worker alone reads): ends at once."""

    def next_batch(self) -> list[Any]:
        raise StopIteration
