"""Durations as people write them: `250ms`, `90s`, `15m` / `15min`, `6h`, `2d`, `1w`, or a number of seconds.

The one parser behind every duration in the settings and on the command line.

>>> parse_duration("2d"), parse_duration("90"), parse_duration("30min"), parse_duration("250ms")
(172800.0, 90.0, 1800.0, 0.25)
>>> parse_duration("soon")
Traceback (most recent call last):
...
ValueError: 'soon' is not a duration such as 250ms, 90s, 15m, 6h, 2d or 1w
"""

from __future__ import annotations

import re

_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(ms|sec|s|min|m|h|d|w)?\s*")


def parse_duration(text: str) -> float:
    """Seconds in `text`; a ValueError that says what is accepted otherwise."""
    m = _PATTERN.fullmatch(text.lower()) if len(text) <= 64 else None
    if m is None:
        raise ValueError(f"{text[:64]!r} is not a duration such as 250ms, 90s, 15m, 6h, 2d or 1w")
    return float(m.group(1)) * _SECONDS[m.group(2) or "s"]
