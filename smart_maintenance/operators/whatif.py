"""What-if on a plant's own history: score candidate settings against its review decisions and maintenance log.

Pure: the labels come from rows the caller read (`connectors/postgres/history.py`),
the alarms from replays of the stored readings (`cli/whatif.py`).

What the plant told us, as labels on time spans of one asset:
- a fault (positive): an approved review case (its first to last window), and a
  completed repair (`repaired`, `replaced`, `adjusted`) with the `lookback`
  before it, the time in which an alarm would have warned of it;
- a false alarm (negative): a rejected review case, and a `no_fault_found`
  maintenance: the alarm its work order came from when it is known, else the
  `lookback` before it. `cancelled` maintenance says nothing.

A candidate's machine alarms are then true (overlapping a fault span), false
(overlapping only false-alarm spans) or unlabelled (the plant said nothing
there); precision counts the labelled ones, recall the faults with at least one
alarm. Sensor-fault alarms are counted apart: nothing in the history labels them.
Alarms gained and lost are taken against the replay with the current settings
(the same input, so differences are the settings' alone), matched by asset and
kind when their spans overlap.

>>> labels = [Label("p1", 0, 100, True, "review"), Label("p1", 500, 600, False, "review")]
>>> alarms = [Episode("a", "p1", "machine", 50, 70), Episode("b", "p1", "machine", 550, None),
...           Episode("c", "p2", "machine", 0, 10), Episode("d", "p1", "sensor_fault", 0, 10)]
>>> s = score(alarms, labels, end_ms=1000)
>>> (s.machine, s.true, s.false, s.unlabelled, s.precision, s.faults_found, s.faults)
(3, 1, 1, 1, 0.5, 1, 1)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FAULT_OUTCOMES = ("repaired", "replaced", "adjusted")
# the settings a what-if may try: detection and judgement, never connections, paths or secrets
TUNABLE_SECTIONS = ("windows", "detection", "validation", "alarms")


@dataclass(frozen=True)
class Label:
    """What the plant said about a span of one asset's time: a fault (`fault`) or a false alarm."""

    asset_id: str
    start_ms: int
    end_ms: int
    fault: bool
    source: str  # "review" or "maintenance"


@dataclass(frozen=True)
class Episode:
    """One alarm from its opening to its clearing (None: still open at the end of the history), and the
    sensors it named over its life."""

    alarm_id: str
    asset_id: str
    kind: str
    opened_ms: int
    cleared_ms: int | None
    sensors: frozenset[str] = frozenset()

    def end(self, end_ms: int) -> int:
        return self.cleared_ms if self.cleared_ms is not None else max(end_ms, self.opened_ms)


@dataclass(frozen=True)
class Score:
    """One candidate's alarms against the plant's labels."""

    machine: int
    sensor_fault: int
    true: int
    false: int
    unlabelled: int
    faults: int
    faults_found: int

    @property
    def precision(self) -> float | None:
        labelled = self.true + self.false
        return self.true / labelled if labelled else None

    @property
    def recall(self) -> float | None:
        return self.faults_found / self.faults if self.faults else None


@dataclass(frozen=True)
class Candidate:
    """A named set of settings to try: {section: {field: value}}."""

    name: str
    overrides: dict[str, dict[str, Any]]

    def describe(self) -> str:
        return " ".join(f"{s}.{k}={json.dumps(v)}" for s, kv in self.overrides.items() for k, v in kv.items())


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def labels_from(reviews: Iterable[dict[str, Any]], maintenance: Iterable[dict[str, Any]],
                lookback_ms: int) -> list[Label]:
    """Labels from decided review cases (`asset_id, status, first_window_end, window_start, window_end`) and
    the maintenance log (`asset_id, completed_at, outcome`, and `alarm_opened_at`/`alarm_cleared_at` of the
    alarm its work order came from, None when unknown)."""
    out = []
    for r in reviews:
        if r["status"] not in ("approved", "rejected"):
            continue
        start = r.get("window_start") or r.get("first_window_end") or r["window_end"]
        out.append(Label(r["asset_id"], _ms(start), _ms(r["window_end"]), r["status"] == "approved", "review"))
    for m in maintenance:
        done = _ms(m["completed_at"])
        if m["outcome"] in FAULT_OUTCOMES:
            out.append(Label(m["asset_id"], done - lookback_ms, done, True, "maintenance"))
        elif m["outcome"] == "no_fault_found":
            opened, cleared = m.get("alarm_opened_at"), m.get("alarm_cleared_at")
            if opened is not None:
                out.append(Label(m["asset_id"], _ms(opened), _ms(cleared) if cleared else done, False, "maintenance"))
            else:
                out.append(Label(m["asset_id"], done - lookback_ms, done, False, "maintenance"))
    return sorted(out, key=lambda x: (x.asset_id, x.start_ms, x.end_ms, x.fault))


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def score(episodes: Sequence[Episode], labels: Sequence[Label], end_ms: int) -> Score:
    """Machine alarms as true / false / unlabelled, and the faults found (see the module docstring)."""
    by_asset: dict[str, list[Label]] = {}
    for lab in labels:
        by_asset.setdefault(lab.asset_id, []).append(lab)
    machine = [e for e in episodes if e.kind != "sensor_fault"]
    true = false = 0
    found: set[Label] = set()
    for e in machine:
        hits = [lab for lab in by_asset.get(e.asset_id, ()) if _overlaps(e.opened_ms, e.end(end_ms),
                                                                          lab.start_ms, lab.end_ms)]
        faults = [lab for lab in hits if lab.fault]
        found.update(faults)
        if faults:
            true += 1
        elif hits:
            false += 1
    n_faults = sum(lab.fault for lab in labels)
    return Score(machine=len(machine), sensor_fault=len(episodes) - len(machine), true=true, false=false,
                 unlabelled=len(machine) - true - false, faults=n_faults, faults_found=len(found))


def gained_lost(base: Sequence[Episode], cand: Sequence[Episode], end_ms: int) -> tuple[int, int]:
    """Alarms of `cand` that `base` did not raise (gained), and of `base` that `cand` did not (lost)."""

    def missing(xs: Sequence[Episode], ys: Sequence[Episode]) -> int:
        index: dict[tuple[str, str], list[Episode]] = {}
        for y in ys:
            index.setdefault((y.asset_id, y.kind), []).append(y)
        return sum(not any(_overlaps(x.opened_ms, x.end(end_ms), y.opened_ms, y.end(end_ms))
                           for y in index.get((x.asset_id, x.kind), ())) for x in xs)

    return missing(cand, base), missing(base, cand)


def episodes_of(states: Iterable[Any]) -> list[Episode]:
    """Alarm states (`operators.records.Alarm`: open, update, clear) folded into one episode per alarm id."""
    first: dict[str, Any] = {}
    cleared: dict[str, int] = {}
    sensors: dict[str, set[str]] = {}
    for a in states:
        first.setdefault(a.alarm_id, a)
        sensors.setdefault(a.alarm_id, set()).update(a.sensors)
        if a.cleared_at is not None:
            cleared[a.alarm_id] = min(cleared.get(a.alarm_id, _ms(a.cleared_at)), _ms(a.cleared_at))
    return sorted((Episode(aid, a.asset_id, a.kind, _ms(a.opened_at), cleared.get(aid), frozenset(sensors[aid]))
                   for aid, a in first.items()), key=lambda e: (e.opened_ms, e.asset_id, e.alarm_id))


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_KEY = re.compile(r"^([a-z_]+)\.([a-z_]+)$")


def parse_candidate(text: str) -> Candidate:
    """`NAME: section.field=value [section.field=value ...]` (values as JSON when they parse, else text).

    >>> c = parse_candidate("strict: validation.open_threshold=0.8 validation.persistence=45min")
    >>> c.name, c.overrides
    ('strict', {'validation': {'open_threshold': 0.8, 'persistence': '45min'}})
    >>> parse_candidate("x: postgres.dsn=evil")
    Traceback (most recent call last):
    ValueError: postgres.dsn: a what-if tries only windows, detection, validation, alarms settings
    """
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise ValueError(f"a candidate is 'NAME: section.field=value ...' (NAME of letters, digits, _ . -), "
                         f"got {text[:80]!r}")
    overrides: dict[str, dict[str, Any]] = {}
    for item in rest.replace(",", " ").split():
        key, eq, raw = item.partition("=")
        m = _KEY.match(key)
        if not eq or not m:
            raise ValueError(f"{name}: expected section.field=value, got {item[:80]!r}")
        if m.group(1) not in TUNABLE_SECTIONS:
            raise ValueError(f"{key}: a what-if tries only {', '.join(TUNABLE_SECTIONS)} settings")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(m.group(1), {})[m.group(2)] = value
    if not overrides:
        raise ValueError(f"{name}: no settings to try")
    return Candidate(name, overrides)


def verdict_comment(base: Score, cand: Score, span: str, day: str) -> str:
    """The comment `--apply` writes beside a changed setting: what was measured, on what, when."""

    def p(s: Score) -> str:
        return "n/a" if s.precision is None else f"{s.precision:.2f}"

    return (f"whatif {day} on {span}: precision {p(base)} -> {p(cand)}, faults found "
            f"{base.faults_found}/{base.faults} -> {cand.faults_found}/{cand.faults}, machine alarms "
            f"{base.machine} -> {cand.machine}")
