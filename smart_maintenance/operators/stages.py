"""The items that move between the flow's stages, per asset: what `validate` and `track_alarms` emit, and
the window step's state (open windows plus the controls waiting for their event time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smart_maintenance.operators.controls import (
    Control,
    ControlQueue,
    MaintenanceRecord,
    WorkOrderChange,
)
from smart_maintenance.operators.ingest.windows import (
    WindowState,
)
from smart_maintenance.operators.judge.validation import (
    Verdict,
)
from smart_maintenance.operators.records import (
    Alarm,
    FeatureBatch,
)


@dataclass(frozen=True, slots=True)
class Judged:
    """`validate`'s item: the verdicts of a batch of windows, or a control passing through."""

    asset_id: str
    verdicts: tuple[Verdict, ...] = ()
    features: FeatureBatch | None = None
    control: Control | None = None
    threshold_changes: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Tracked:
    """`track_alarms`' item: what the rest of the loop needs from one step of one asset."""

    asset_id: str
    features: FeatureBatch | None
    alarms: tuple[Alarm, ...]
    control: Control | None
    threshold_changes: tuple[dict[str, Any], ...]
    reviews: tuple[Any, ...] = ()  # review cases the batch's needs_review windows outside an open alarm touched

    def events(self) -> list[Any]:
        """Alarm changes and reviews needed, in event-time order (an alarm before a review of the same time)."""
        timed = [(a.updated_at, 0, i, a) for i, a in enumerate(self.alarms)]
        timed += [(r.window_end, 1, i, r) for i, r in enumerate(self.reviews)]
        return [e for *_, e in sorted(timed, key=lambda t: t[:3])]

    @property
    def maintenance(self) -> MaintenanceRecord | None:
        return self.control if isinstance(self.control, MaintenanceRecord) else None

    @property
    def work_order_change(self) -> WorkOrderChange | None:
        return self.control if isinstance(self.control, WorkOrderChange) else None


@dataclass(frozen=True)
class AssetInput:
    """The window step's state: the asset's open windows and the controls waiting for its event time."""

    window: WindowState
    controls: ControlQueue = ControlQueue()
    asset_id: str = ""
