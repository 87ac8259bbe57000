"""Console notifications: alarms as they open, change and clear."""

from __future__ import annotations

import sys
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from rich.console import Console

from smart_maintenance.operators.records import Alarm

_STYLE = {1: "cyan", 2: "yellow", 3: "dark_orange", 4: "red", 5: "bold red"}


def alarm_line(a: Alarm) -> str:
    """One line of rich markup for an alarm state (user text escaped)."""
    from rich.markup import escape

    when = a.updated_at.strftime("%Y-%m-%d %H:%M")
    sensors = ", ".join(a.sensors) or "-"
    if a.status == "cleared":
        lasted = a.updated_at - a.opened_at
        return (
            f"[green]{when}  CLEARED[/] {escape(a.asset_id)} {a.kind} after {lasted} "
            f"(peak {a.peak_score:.2f}, {a.anomaly_count} anomalies)  [dim]{a.alarm_id}[/]"
        )
    style = _STYLE.get(a.severity, "red")
    verb = "OPEN   " if a.updated_at == a.opened_at else "UPDATE "
    return (
        f"[{style}]{when}  {verb} {escape(a.asset_id)} {a.kind} severity {a.severity}[/] "
        f"sensors {escape(sensors)}: {escape(a.reason)}  [dim]{a.alarm_id}[/]"
    )


class _ConsolePartition(StatelessSinkPartition[Alarm]):
    def __init__(self, console: Console) -> None:
        self._console = console

    def write_batch(self, items: list[Alarm]) -> None:
        for a in items:
            self._console.print(alarm_line(a), highlight=False, soft_wrap=True)


class ConsoleAlarmSink(DynamicSink[Alarm]):
    """Print alarm states to the terminal (stderr by default, so stdout stays clean for pipes)."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConsolePartition:
        return _ConsolePartition(Console(file=self._stream or sys.stderr))
