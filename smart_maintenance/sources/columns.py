"""Arrow columns of a replay file to numpy: names, numbers and epoch-millisecond times, with masks.

No Bytewax and no files here: `formats.py` plans and decodes a file and calls
these on one column of a batch at a time. Each conversion casts the whole
column when it can and looks at cells one by one only when a cast fails, so
bad cells cost time only where they are. Text that is not UTF-8 (or holds
U+FFFD, `REPLACEMENT`, which is what a CSV's bad bytes were read as) is
flagged, not raised: the caller turns it into a reject of its row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from smart_maintenance.operators.ingest.parse import parse_timestamp

REPLACEMENT = "\ufffd"  # what a byte that is not UTF-8 becomes in CSV text
_DAY_MS = 86_400_000
_NAIVE = 2  # the text cast of times with no offset, in _TEXT_CASTS
_TEXT = pa.string()


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t))


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t))


def to_names(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text (or dictionary, or integer) column to an object array of str, with masks: a non-empty
    name, and the cell is UTF-8 text. Only the distinct words are decoded, so checking is cheap."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr if _is_text(arr.type) else arr.cast(_TEXT))
    words, text_ok = _words(arr.dictionary)
    words = np.append(words, "")
    idx = pc.fill_null(arr.indices, len(words) - 1).to_numpy(zero_copy_only=False)
    out = words[idx]
    ok = np.array([bool(w) for w in words], dtype=bool)
    if text_ok is None:
        return out, ok[idx], np.ones(len(arr), dtype=bool)
    text_ok = np.append(text_ok, True)[idx]
    return out, ok[idx] & text_ok, text_ok


def _words(d: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A dictionary's words, and which are UTF-8 (None: all of them, the usual case)."""
    if not _is_text(d.type):
        d = d.cast(_TEXT)
    try:
        d = d.cast(_TEXT) if pa.types.is_binary(d.type) or pa.types.is_large_binary(d.type) else d
        d.validate(full=True)  # Parquet does not check UTF-8
    except pa.ArrowInvalid:
        cells = _raw_bytes(d)
        ok = np.array([_is_utf8(b) and REPLACEMENT.encode() not in b for b in cells], dtype=bool)
        return np.array([b.decode("utf-8", "backslashreplace") for b in cells], dtype=object), ok
    words = d.to_numpy(zero_copy_only=False).astype(object)
    marked = pc.fill_null(pc.match_substring(d, REPLACEMENT), False).to_numpy(zero_copy_only=False)
    return words, (~marked if marked.any() else None)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raw_bytes(arr: pa.Array) -> list[bytes]:
    """A text column's cells as bytes (null as b""), whatever their encoding."""
    t = arr.type
    if pa.types.is_string(t):
        arr = arr.view(pa.binary())
    elif pa.types.is_large_string(t):
        arr = arr.view(pa.large_binary())
    return [b"" if b is None else b for b in arr.to_pylist()]


def text_cells(arr: pa.Array) -> list[str | None]:
    """A column's cells as Python text; bytes that are not UTF-8 are shown escaped (`\\xff`)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not _is_text(arr.type):
        try:
            return [None if v is None else str(v) for v in arr.to_pylist()]
        except (OverflowError, ValueError):  # a time or date past Python's datetime: show its number
            ints = arr.view(pa.int32() if arr.type.bit_width == 32 else pa.int64())
            return [None if v is None else str(v) for v in ints.to_pylist()]
    valid = _valid(arr)
    return [b.decode("utf-8", "backslashreplace") if ok else None for b, ok in zip(_raw_bytes(arr), valid)]


def cell_text(arr: pa.Array, i: int) -> str:
    """One cell as text for a reject's raw field ("" when empty)."""
    v = text_cells(arr.slice(i, 1))[0]
    return "" if v is None else v


def to_float(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A column as float64, with masks: cell present (not empty/null), and a number."""
    present = _valid(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not _is_text(arr.type):
        try:
            return pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False), present, present
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.zeros(len(arr)), present, np.zeros(len(arr), dtype=bool)
    try:
        return pc.fill_null(pc.cast(arr, pa.float64()), 0.0).to_numpy(zero_copy_only=False), present, present
    except pa.ArrowInvalid:
        pass
    values, ok = np.zeros(len(arr)), present.copy()
    for i, text in enumerate(text_cells(arr)):  # slow path: only chunks that hold a bad cell
        if text is None:
            continue
        try:
            values[i] = float(text)
        except ValueError:
            ok[i] = False
    return values, present, ok


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    valid: np.ndarray = arr.is_valid().to_numpy(zero_copy_only=False)
    return valid


_TEXT_CASTS: tuple[tuple[Callable[[pa.Array], pa.Array], int], ...] = (  # (cast, units per ms)
    (lambda a: pc.cast(a, pa.int64()), 1),  # epoch ms
    (lambda a: pc.cast(pc.cast(a, pa.timestamp("us", "UTC")), pa.int64()), 1000),  # RFC 3339 with offset
    (lambda a: pc.cast(pc.cast(a, pa.timestamp("us")), pa.int64()), 1000),  # no offset: UTC (or a LocalClock)
    (lambda a: pc.cast(pc.round(pc.cast(a, pa.float64())), pa.int64()), 1),  # fractional epoch ms
)


class LocalClock:
    """Plant-local wall-clock times of one file (no offset written) to UTC, in the file's order.

    A local time the clocks skipped (spring forward) is no time: `to_utc` flags it and `skipped` says which,
    for the reject's reason. A local time the clocks went through twice (fall back) is resolved by the file's
    order: inside such an hour a step back in local time by more than half the shift starts the other pass,
    so a file sorted by time (any number of assets interleaved) and a file sorted by asset, then time, both
    read right when the samples are closer than half the shift (30 minutes for a one-hour change); the state
    is kept across the file's batches. A replay resumed inside the repeated hour starts again from its first
    pass.

    >>> clock = LocalClock("Europe/Berlin")
    >>> wall = 1_792_893_600_000 + np.array([-30, 10, 50, 10, 50, 90]) * 60_000  # 2026-10-25, 02:00 +- minutes
    >>> utc, ok = clock.to_utc(wall, np.ones(6, bool))  # 01:30 02:10 02:50 02:10 02:50 03:30 on the wall
    >>> [int(x - utc[0]) // 60_000 for x in utc]  # the second 02:10 is an hour after the first
    [0, 40, 80, 100, 140, 180]
    """

    def __init__(self, zone: str) -> None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {zone!r}: give an IANA name such as 'Europe/Berlin'") from e
        self.zone = zone
        self._folds: dict[int, tuple[bool, int]] = {}  # local day -> (in the second pass, latest local ms there)
        self.skipped = np.zeros(0, dtype=bool)  # the last call's cells that no clock showed

    def to_utc(self, local_ms: np.ndarray, naive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`local_ms` (the wall clock read as if it were UTC) -> UTC ms where `naive`; a mask of real times."""
        out = local_ms.astype(np.int64, copy=True)
        self.skipped = np.zeros(len(out), dtype=bool)
        idx = np.flatnonzero(naive)
        if not idx.size:
            return out, ~self.skipped
        wall = pa.array(local_ms[idx], pa.timestamp("ms"))
        first, second = (pc.assume_timezone(wall, self.zone, ambiguous=w, nonexistent=w)
                         for w in ("earliest", "latest"))
        back = pc.cast(pc.local_timestamp(first), pa.int64()).to_numpy(zero_copy_only=False)
        e = pc.cast(first, pa.int64()).to_numpy(zero_copy_only=False).copy()  # Arrow memory is read-only
        late = pc.cast(second, pa.int64()).to_numpy(zero_copy_only=False)
        skipped = back != local_ms[idx]  # the earliest instant of a skipped time is before the gap
        for k in np.flatnonzero((e != late) & ~skipped):  # the repeated hour: rare, one by one in file order
            t, half = int(local_ms[idx[k]]), int(late[k] - e[k]) // 2
            day = t // _DAY_MS
            again, top = self._folds.get(day, (False, t))
            if t < top - half:  # stepped back: the other pass begins
                again, top = not again, t
            self._folds[day] = (again, max(top, t))
            if again:
                e[k] = late[k]
        out[idx] = e
        self.skipped[idx] = skipped
        return out, ~self.skipped


def to_ms(arr: pa.Array, hint: list[int] | None = None,
          clock: LocalClock | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A time column as int64 epoch ms, and a mask of the cells that are times.

    Text tries whole-column casts (the one that worked last time first, kept in
    `hint`), and parses value by value only when none fits every cell. Times with
    no offset (text, or Parquet timestamps without a zone) are UTC, or the wall
    clock of `clock`'s zone when one is given; epoch numbers are always UTC.
    """
    ms, ok, naive = _to_ms(arr, hint, local=clock is not None)
    if clock is None:
        return ms, ok
    utc, real = clock.to_utc(ms, naive & ok)
    return utc, ok & real


def _to_ms(arr: pa.Array, hint: list[int] | None, local: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`to_ms` with times of no offset read as UTC, and a mask of those cells (only looked for when `local`)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    none = np.zeros(len(arr), dtype=bool)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        arr = pc.cast(arr, pa.timestamp("ms", t.tz) if pa.types.is_timestamp(t) else pa.timestamp("ms"), safe=False)
        out = pc.cast(arr, pa.int64())
        naive = ~none if not (pa.types.is_timestamp(t) and t.tz) else none
        return pc.fill_null(out, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), _valid(out), naive
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):  # past 2^63 is no time: a reject, not a failed cast
            ok = _valid(arr) & pc.fill_null(pc.less_equal(arr, pa.scalar(2**63 - 1, t)), False).to_numpy(
                zero_copy_only=False)
            vals = pc.fill_null(pc.cast(arr, pa.int64(), safe=False), 0).to_numpy(zero_copy_only=False)
            return np.where(ok, vals, 0).astype(np.int64), ok, none
        out = pc.cast(arr, pa.int64())
        return pc.fill_null(out, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), _valid(out), none
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        arr = arr.cast(pa.float64()) if pa.types.is_decimal(t) else arr
        ok = _valid(arr) & np.isfinite(pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False))
        vals = np.where(ok, pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False), 0.0)
        ok &= np.abs(vals) < 2.0**62  # past int64 is no time
        return np.round(np.where(ok, vals, 0.0)).astype(np.int64), ok, none
    try:
        text = arr if pa.types.is_string(t) else arr.cast(_TEXT)
    except pa.ArrowInvalid:  # bytes that are not UTF-8
        text = None
    h = hint if hint is not None else [0]
    found = None if text is None else _cast_text(text, h)
    if found is None:  # mixed forms or bad cells: value by value
        cells = text_cells(arr)
        ms = [None if x is None else parse_timestamp(x) for x in cells]
        ok = np.array([m is not None for m in ms], dtype=bool)
        naive = np.array([m is not None and _naive_text(x) for x, m in zip(cells, ms)], dtype=bool) if local \
            else none
        return np.array([m if m is not None else 0 for m in ms], dtype=np.int64), ok, naive
    out, per_ms = found
    naive = ~none if h[0] == _NAIVE else none
    return pc.fill_null(out, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False) // per_ms, \
        _valid(out), naive


def _naive_text(x: str | None) -> bool:
    """A time written as text with no offset (`2026-10-25 02:30`), not an epoch number nor `...Z` / `+01:00`."""
    s = (x or "").strip()
    try:
        float(s)
        return False
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00")).tzinfo is None
    except ValueError:
        return False


def _cast_text(arr: pa.Array, hint: list[int]) -> tuple[pa.Array, int] | None:
    order = [hint[0]] + [k for k in range(len(_TEXT_CASTS)) if k != hint[0]]
    for k in order:
        cast, per_ms = _TEXT_CASTS[k]
        try:
            out = cast(arr)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        hint[0] = k
        return out, per_ms
    return None
