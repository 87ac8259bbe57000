"""An asset's event time on our wall clock, estimated from when its readings arrive (live runs only).

A live window closes in event time once a reading at or past its end + allowed lateness arrives; that
reading is sent up to a plant tick after the window is due and then crosses the broker. `ArrivalClock`
lets the flow close the window when it is due on the wall clock instead, without trusting the plant's
clock:

- `offset_ms`: how far the asset's newest readings run behind our clock at their fastest: the least
  `arrival - latest reading time` over its batches (negative for a gateway clock that runs ahead). It
  creeps up by 1 ms per `CREEP_EVERY_MS` since it was measured and any faster batch lowers it again, so
  a drifting clock is followed in either direction; the estimated event time is `now - offset`.
- `spread_ms`: how much later than that fastest lag its readings arrive (`arrival - earliest reading time
  of a batch - offset`), the worst of recent batches, halved every `SPREAD_HALF_LIFE` batches (not
  seconds: a store-and-forward gateway sends nothing between its batches, so its spread never fades
  between them). A window closes on the clock only while `steady`: the spread is at most `SPREAD_SHARE`
  of the allowed lateness, so a reading would have to come twice as late as the worst recent one to miss
  its window.

Guarantees: every value is an integer computed from the batches' times and arrival times only, so the
estimate is the same for the same arrivals; nothing here closes a window (see `windows.close_due`).
"""

from __future__ import annotations

from typing import NamedTuple

CREEP_EVERY_MS = 1_000  # the offset creeps up 1 ms per this many (1,000 ppm): above quartz drift (<= 100 ppm)
# and NTP's slew (500 ppm), so a clock falling behind ours is followed
SPREAD_HALF_LIFE = 32  # batches: a one-off hiccup k times the limit is forgotten after 32 * log2(k) batches
SPREAD_SHARE = 0.5  # of the allowed lateness: the margin left for a reading later than any recent one
_DECAY = 0.5 ** (1 / SPREAD_HALF_LIFE)


class ArrivalClock(NamedTuple):
    """Immutable (a tuple: folded once per batch of every asset, cheaper to build than a frozen dataclass)."""

    offset_ms: int  # arrival wall time - the asset's latest reading time, at its fastest (creeping up since)
    at_ms: int  # the wall time of the latest batch
    spread_ms: float  # recent worst arrival later than the fastest (ms)

    def offset_at(self, now_ms: int) -> int:
        """The offset at `now_ms`, crept up by 1 ms per `CREEP_EVERY_MS` since the latest batch."""
        return self.offset_ms + max(now_ms - self.at_ms, 0) // CREEP_EVERY_MS

    def event_time(self, now_ms: int) -> int:
        """The asset's estimated event time at wall time `now_ms`.

        >>> ArrivalClock(offset_ms=-5_000, at_ms=0, spread_ms=0.0).event_time(10_000)  # a gateway 5 s fast
        14990
        """
        return now_ms - self.offset_at(now_ms)

    def wall_time(self, event_ms: int) -> int:
        """The first wall time (ms) at which `event_time` reaches `event_ms`.

        >>> c = ArrivalClock(offset_ms=200, at_ms=1_000_000, spread_ms=0.0)
        >>> t = c.wall_time(2_000_000); t, c.event_time(t), c.event_time(t - 1)
        (2001201, 2000000, 1999999)
        """
        c = event_ms + self.offset_ms - self.at_ms  # the wait after the latest batch without the creep
        if c <= 0:  # due by the latest batch: no creep (and the caller's now is later)
            return self.at_ms + c
        # the least u with u - u // K >= c (`event_time` at at_ms + u), K = CREEP_EVERY_MS: u - u // K rises by
        # 0 or 1 per ms, so it takes every value; it stays put once per K ms, (c - 1) // (K - 1) times before c
        return self.at_ms + c + (c - 1) // (CREEP_EVERY_MS - 1)

    def current(self, now_ms: int, lateness_ms: int) -> bool:
        """Whether the latest batch came recently enough for a window due now to close on the clock.

        A window is due on the clock (`event_time` past its end + lateness) at most `lateness_ms` (and the
        creep) after the batch that brought the asset's stream to its end arrived (that batch's lag was at
        least the offset); a notification runs somewhat later when the flow is busy, so `SPREAD_SHARE` more is
        allowed. Later than that, the process stood still (a pause, a stop) and the readings sent meanwhile
        are still on their way.
        """
        return now_ms - self.at_ms <= lateness_ms * (1 + SPREAD_SHARE) + self.offset_at(now_ms) - self.offset_ms

    def steady(self, lateness_ms: int) -> bool:
        """Whether the asset's readings arrive close enough together for its windows to close on the clock."""
        return self.spread_ms <= SPREAD_SHARE * lateness_ms


def observe(clock: ArrivalClock | None, now_ms: int, earliest_ms: int, latest_ms: int) -> ArrivalClock:
    """Fold in one batch that arrived at `now_ms`: its earliest reading time and the asset's latest accepted one.

    >>> c = observe(None, 10_000, 9_000, 9_950)  # first batch: 50 ms behind, a second of readings in it
    >>> c.offset_ms, c.spread_ms
    (50, 950.0)
    >>> c = observe(c, 11_000, 10_000, 10_990); c.offset_ms  # faster: the offset follows down at once
    10
    """
    lag = now_ms - latest_ms
    if clock is None:
        offset, spread = lag, 0.0
    else:
        offset, spread = min(clock.offset_at(now_ms), lag), clock.spread_ms * _DECAY
    return ArrivalClock(offset, now_ms, max(spread, float(now_ms - earliest_ms - offset)))
