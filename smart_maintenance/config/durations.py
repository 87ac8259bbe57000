"""Settings that mean time, written as durations: "1d", "90min", "30s", "2h", "1.5h", "1w".

Detection and validation settings that used to count windows (warm-up,
baseline, refit period, start-up grace, persistence) are durations, turned
into windows per asset from that asset's own window length: their meaning no
longer changes with the sampling rate. The window-count keys
(`warmup_windows`, ...) still work when set explicitly, with a deprecation
warning, and then win over the duration.

The one parser of durations: settings (`parse_duration`, a unit is required so that
a count of windows is never taken for seconds) and command-line options
(`duration_seconds`, where a bare number means seconds).

>>> parse_duration("1d"), parse_duration("90min"), parse_duration("1.5h"), parse_duration("30s")
(86400000, 5400000, 5400000, 30000)
>>> duration_seconds("2d"), duration_seconds("90", bare_seconds=True), duration_seconds("250ms")
(172800.0, 90.0, 0.25)
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated

from pydantic import AfterValidator, BaseModel

_UNITS_MS = {
    "ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "hr": 3_600_000,
    "d": 86_400_000, "day": 86_400_000, "days": 86_400_000, "w": 604_800_000,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_duration(text: str) -> int:
    """A duration as whole milliseconds; ValueError on anything else (no unit, negative, unknown unit)."""
    m = _PATTERN.match(text.lower()) if isinstance(text, str) and len(text) <= 64 else None
    if m is None or m.group(2) not in _UNITS_MS:
        shown = text[:64] if isinstance(text, str) else type(text).__name__
        raise ValueError(f"a duration is a number and a unit ({', '.join(_UNITS_MS)}), such as '1d' or '30min', "
                         f"got {shown!r}")
    return round(float(m.group(1)) * _UNITS_MS[m.group(2)])


def duration_seconds(text: str, *, bare_seconds: bool = False) -> float:
    """A duration in seconds; with `bare_seconds` (command-line options) a number alone is seconds."""
    if bare_seconds and _BARE.fullmatch(text):
        return float(text)
    return parse_duration(text) / 1000


_BARE = re.compile(r"\s*\d+(?:\.\d+)?\s*")


def _check(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_check)]
"""A settings field holding a duration, checked when the settings are built."""


def duration_ms(section: BaseModel, name: str, *legacy: str) -> int | None:
    """The duration `name` of a settings section in ms, or None when a deprecated `legacy` key was set.

    None tells the operator to use the window count, as before.
    """
    used = [k for k in legacy if k in section.model_fields_set]
    if used:
        values = ", ".join(f"{k}={getattr(section, k)}" for k in used)
        warnings.warn(f"{', '.join(used)} count windows and are deprecated: set {name} as a duration (such as "
                      f"'1d') instead; {values} is used", FutureWarning, stacklevel=2)
        return None
    return parse_duration(getattr(section, name))
