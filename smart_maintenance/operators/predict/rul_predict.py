"""Time to failure from a learned RUL model, on an asset's window history.

Pure: a registered `RulModel` with its `ModelMeta` (`training.py`) and one
asset's history as `PredictionState` keeps it (`sensors` names, `window_end`
epoch ms, `means` [windows x sensors], NaN where a window had no reading or the
asset was stopped) give a `Prediction` with method "rul_model".

How the history becomes a run:
- The model's columns (`meta.params["columns"]`) are taken from the asset's
  sensors by name; the model applies when all of them are there
  (`rul_applies`) and each has at least `min_history` finite windows
  (default: the model's `params["min_history"]`, 30).
- Windows where all of those columns are NaN (the asset stopped, or reported
  nothing) are left out: they are not cycles of wear. Other gaps are
  forward-filled by the model, as in training.
- The model counts cycles from the start of the run it is given, so the
  history should begin at the asset's last renewal (install or maintenance).
  A history that holds only the last `history_windows` windows of a longer run
  makes the model see a younger asset; keep that in mind when reading its
  estimates (`inputs.cycles_seen`).

Cycles to time: one cycle is `meta.params["cycle_ms"]` when the training data
said (a `ts` column, or `--cycle`), else the asset's median window spacing
(the median of positive steps of `window_end`), recorded in `inputs`
(`cycle_ms`, `cycle_from`). `made_at` is the last window end (event time);
`failure_at` = made_at + RUL cycles; `lo`/`hi` = made_at + the model's interval
bounds. When the interval reaches the model's cap the model only claims
"at least lo": `hi` is None, and so is `failure_at` when the estimate itself
sits at the cap (no degradation seen). `horizon_end` = made_at + cap cycles,
the furthest the model can see. When the history leaves the model's training
envelope (a fault mode or regime it never saw, `RulModel.outside`), the
prediction claims nothing: `lo` = made_at, `hi` and `failure_at` None, and
`inputs["outside_envelope"]` says why; the flow then falls back to Prophet
(`dataflows/offload.py`). The prediction id is the same as
`predict.predict` gives for (asset, alarm, made_at): one prediction per alarm
and time, whichever method made it.

>>> import numpy as np
>>> from smart_maintenance.operators.predict.rul import ModelMeta
>>> meta = ModelMeta("pump", "v0001", "2024-01-01T00:00:00.000Z", "d" * 64, "m" * 64,
...                  params={"columns": ["temp", "vib"], "cycle_ms": None})
>>> rul_applies(meta, ("vib", "flow", "temp")), rul_applies(meta, ("temp",))
(True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from smart_maintenance.operators.predict.requests import Prediction
from smart_maintenance.operators.records import ms_to_dt, stable_id

if TYPE_CHECKING:  # types only: no scikit-learn import, and operators do not import sinks
    from smart_maintenance.operators.predict.rul import ModelMeta, RulEstimate

METHOD = "rul_model"


class _RulModel(Protocol):  # what `RulModel` offers
    columns: tuple[str, ...]

    def predict(self, run: np.ndarray) -> RulEstimate: ...


def rul_columns(meta: ModelMeta) -> tuple[str, ...]:
    """The sensors the model needs, in its order."""
    cols = meta.params.get("columns")
    if not cols:
        raise ValueError(f"{meta.asset_type}/{meta.version}: meta.params has no 'columns' (not a RUL model?)")
    return tuple(str(c) for c in cols)


def rul_applies(meta: ModelMeta, sensors: tuple[str, ...] | list[str]) -> bool:
    """Does the asset report every sensor the model needs?"""
    have = set(sensors)
    return all(c in have for c in rul_columns(meta))


def rul_run(
    meta: ModelMeta, sensors: tuple[str, ...], window_end: np.ndarray, means: np.ndarray, min_history: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The run the model reads (rows: windows with any of its sensors, columns: its order) and those rows'
    window ends; None when a sensor is missing or has fewer than `min_history` finite windows."""
    if not rul_applies(meta, sensors):
        return None
    need = int(min_history if min_history is not None else meta.params.get("min_history", 30))
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or means.shape != (len(window_end), len(sensors)):
        raise ValueError(f"means must be (windows, sensors) = ({len(window_end)}, {len(sensors)}), got {means.shape}")
    run = means[:, [sensors.index(c) for c in rul_columns(meta)]]
    finite = np.isfinite(run)
    if len(run) == 0 or finite.sum(axis=0).min() < max(need, 1):
        return None
    keep = finite.any(axis=1)
    return run[keep], np.asarray(window_end, dtype=np.int64)[keep]


def cycle_length_ms(meta: ModelMeta, window_end: np.ndarray) -> tuple[int | None, str]:
    """One cycle in ms and where it came from: the model's meta, else the median window spacing."""
    given = meta.params.get("cycle_ms")
    if given:
        return int(given), "model"
    steps = np.diff(np.asarray(window_end, dtype=np.int64))
    steps = steps[steps > 0]
    if not len(steps):
        return None, "none"
    return int(np.median(steps)), "window_spacing"


def predict_rul(
    model: _RulModel,
    meta: ModelMeta,
    *,
    asset_id: str,
    alarm_id: str,
    sensors: tuple[str, ...],
    window_end: np.ndarray,
    means: np.ndarray,
    min_history: int | None = None,
) -> Prediction | None:
    """A "rul_model" prediction at the last window, or None when the model does not apply (see the docstring).

    Deterministic: the same model and history give the same prediction.
    """
    if tuple(model.columns) != rul_columns(meta):
        raise ValueError(f"{meta.asset_type}/{meta.version}: the model's columns differ from its meta's")
    got = rul_run(meta, tuple(sensors), window_end, means, min_history)
    if got is None or not len(window_end):
        return None
    run, _ = got
    cycle_ms, cycle_from = cycle_length_ms(meta, window_end)
    if cycle_ms is None:
        return None  # one window: no spacing to turn cycles into time
    est = model.predict(run)
    made_at_ms = int(np.asarray(window_end)[-1])
    cap = float(meta.params.get("cap", 125.0))

    def at(cycles: float) -> int:
        return made_at_ms + int(round(cycles * cycle_ms))

    no_wear_seen = est.rul >= cap - 1e-9 or est.outside is not None
    inputs: dict[str, Any] = {
        "model_version": meta.version,
        "model_asset_type": meta.asset_type,
        "data_sha256": meta.data_sha256,
        "model_sha256": meta.model_sha256,
        "rul_cycles": round(est.rul, 3),
        "lo_cycles": round(est.lo, 3),
        "hi_cycles": round(est.hi, 3),
        "coverage": est.coverage,
        "open_ended": est.open_ended,
        "cap_cycles": cap,
        "cycle_ms": cycle_ms,
        "cycle_from": cycle_from,
        "cycles_seen": len(run),
        "columns": list(rul_columns(meta)),
        "envelope": "unknown" if getattr(model, "envelope", None) is None else "inside",
    }
    if est.outside is not None:
        inputs["envelope"] = "outside"
        inputs["outside_envelope"] = est.outside
    return Prediction(
        prediction_id=stable_id("prediction", asset_id, alarm_id, made_at_ms),
        asset_id=asset_id,
        alarm_id=alarm_id,
        sensor=",".join(rul_columns(meta)),
        method=METHOD,
        made_at=ms_to_dt(made_at_ms),
        failure_at=None if no_wear_seen else ms_to_dt(at(est.rul)),
        lo=ms_to_dt(at(est.lo)),
        hi=None if est.open_ended else ms_to_dt(at(est.hi)),
        horizon_end=ms_to_dt(at(cap)),
        inputs=inputs,
    )
