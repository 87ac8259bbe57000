"""Train a learned remaining-useful-life (RUL) model and register it by asset type.

    smart-maintenance train-rul DATA --asset-type TYPE [--test FILE --test-rul FILE] [--registry DIR]

Run-to-failure history comes in one of two formats (`fmt="auto"` tells them apart):

- **cmapss**: NASA C-MAPSS text (`train_FD001.txt`): whitespace-separated, no
  header, 26 columns: unit, cycle, 3 operational settings, 21 sensors. The
  sensors become columns `sensor_1` ... `sensor_21` (as in `bench/cmapss.py`).
- **csv**: a header row and one row per cycle of a run: a `run_id` column, one
  ordering column, `cycle` (a number) or `ts` (epoch milliseconds or ISO 8601
  text), and every other column is a numeric sensor (empty cells are missing
  readings). The separator is sniffed (`,` `;` tab `|`). Rows of a run are
  sorted by the ordering column; each run **ends at failure**: its last row is
  the last cycle before the asset failed (or was replaced for wear). Sensor
  names should be the names the flow sees for that asset type, so the model
  applies to live assets (`operators/predict/rul_predict.py`).

  Example::

      run_id,ts,temp,vib_rms,current
      pump-07/2023-1,2023-01-04T00:00:00Z,61.2,0.8,12.1
      pump-07/2023-1,2023-01-04T00:05:00Z,61.4,0.8,12.2
      ...

Evaluation. With `test` + `test_rul` (C-MAPSS `test_FD001.txt` +
`RUL_FD001.txt`, or the same CSV format with runs cut before failure and a file
of one true RUL per line, in the order the test runs first appear), the model
is scored at the last cycle of each test run against the true RUL: metrics
`test_rmse`, `test_nasa_score` (PHM08, a sum over runs) and `test_coverage`
(the share of runs whose true RUL is inside the interval; an open-ended
interval counts when the truth is above its lower bound). Without them, a
seeded `holdout` share of the runs is kept out of training, each held-out run is
cut at a seeded random cycle (at least `params.min_history` cycles in), and the
model is scored there against the true RUL capped at `params.cap` (the model
cannot see further): `holdout_rmse`, `holdout_nasa_score`, `holdout_coverage`.
The model that is registered is the one that was evaluated (trained without the
held-out runs), so its metrics describe it exactly; `holdout=0` trains on every
run and keeps only the out-of-fold metrics of `fit_rul_model`.

What is registered (`ModelRegistry.save`): the pickled `RulModel`; its
`data_sha256` is the hash of the training runs (`data_sha256(runs)`, the same
hash `bench/cmapss.py` stores for the same data); `metrics` as above plus the
out-of-fold ones; `params` = the `RulParams`, plus `columns` (the sensors the
model needs, in order), `cycle_ms` (the length of one cycle in milliseconds:
given, or the median spacing of a CSV `ts` column; None for abstract cycles,
the flow then takes the asset's window spacing) and `data` (format, file names,
run and row counts, evaluation kind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smart_maintenance.config.durations import duration_seconds
from smart_maintenance.operators.predict.rul import ModelMeta
from smart_maintenance.stores.model_registry import (
    ModelRegistry,
    data_sha256,
)

if TYPE_CHECKING:  # scikit-learn and scipy load when training starts, not with the command line
    from smart_maintenance.operators.predict.rul import RulModel, RulParams

CMAPSS_SENSORS = tuple(f"sensor_{i}" for i in range(1, 22))
ORDER_COLUMNS = ("cycle", "ts")
FORMATS = ("auto", "cmapss", "csv")


class TrainingError(Exception):
    """Training data that cannot be used as asked: missing, malformed, or too little of it."""


@dataclass(frozen=True)
class RunHistory:
    """Runs to failure: one (cycles, sensors) float64 array per run, rows in cycle order."""

    runs: tuple[np.ndarray, ...]
    columns: tuple[str, ...]
    run_ids: tuple[str, ...]
    cycle_ms: int | None = None  # one cycle in milliseconds, when the data says (a `ts` column)
    fmt: str = "runs"

    def __post_init__(self) -> None:
        if len(self.runs) != len(self.run_ids):
            raise ValueError("one run id per run")
        for r in self.runs:
            if r.ndim != 2 or r.shape[1] != len(self.columns) or len(r) == 0:
                raise TrainingError(f"every run needs at least one row of {len(self.columns)} columns, got {r.shape}")


# -- loading ----------------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """cmapss when the first line is 26 whitespace-separated numbers, else csv."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError as e:
        raise TrainingError(f"{path}: cannot read: {e}") from e
    fields = first.split()
    try:
        [float(x) for x in fields]
    except ValueError:
        return "csv"
    return "cmapss" if len(fields) == 26 else "csv"


def load_runs(path: str | Path, fmt: str = "auto", *, cycle_ms: int | None = None) -> RunHistory:
    """Read run-to-failure history (see the module docstring for the two formats)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not path.is_file():
        raise TrainingError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    history = _load_cmapss(path) if fmt == "cmapss" else _load_csv(path)
    if cycle_ms is not None:
        if cycle_ms <= 0:
            raise ValueError(f"cycle_ms must be positive, got {cycle_ms}")
        history = RunHistory(history.runs, history.columns, history.run_ids, int(cycle_ms), history.fmt)
    return history


def _load_cmapss(path: Path) -> RunHistory:
    try:
        d = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise TrainingError(f"{path}: not C-MAPSS text (26 numbers per line): {e}") from e
    if d.shape[1] != 26:
        raise TrainingError(f"{path}: C-MAPSS rows have 26 columns (unit, cycle, 3 settings, 21 sensors), "
                            f"found {d.shape[1]}")
    runs, ids = [], []
    for unit in np.unique(d[:, 0]):  # ascending unit numbers, the order of RUL_FD00x.txt
        r = d[d[:, 0] == unit]
        runs.append(np.ascontiguousarray(r[np.argsort(r[:, 1], kind="stable")][:, 5:26]))
        ids.append(str(int(unit)) if float(unit).is_integer() else str(unit))
    return RunHistory(tuple(runs), CMAPSS_SENSORS, tuple(ids), None, "cmapss")


def _load_csv(path: Path) -> RunHistory:
    import pandas as pd  # only the trainer needs pandas

    try:
        df = pd.read_csv(path, sep=None, engine="python", dtype={"run_id": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise TrainingError(f"{path}: cannot read as CSV: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    if "run_id" not in df.columns:
        raise TrainingError(f"{path}: a run file needs a run_id column; columns are {list(df.columns)}")
    order = [c for c in ORDER_COLUMNS if c in df.columns]
    if len(order) != 1:
        raise TrainingError(f"{path}: a run file needs one ordering column, cycle or ts; found {order or 'none'} "
                            f"in {list(df.columns)}")
    key = order[0]
    sensors = [c for c in df.columns if c not in ("run_id", key)]
    if not sensors:
        raise TrainingError(f"{path}: no sensor columns besides run_id and {key}")
    bad = [c for c in sensors if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise TrainingError(f"{path}: sensor columns must be numbers; not numeric: {bad}")
    if df["run_id"].isna().any():
        raise TrainingError(f"{path}: line {int(np.flatnonzero(df['run_id'].isna())[0]) + 2}: run_id is empty")
    if key == "ts":
        t = df["ts"]
        if pd.api.types.is_numeric_dtype(t):
            order_values = pd.to_numeric(t, errors="coerce")
        else:  # resolution-free: pandas may pick s, ms, us or ns
            dts = pd.to_datetime(t, utc=True, errors="coerce", format="mixed")
            order_values = (dts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)
    else:
        order_values = pd.to_numeric(df["cycle"], errors="coerce")
    if order_values.isna().any():
        line = int(np.flatnonzero(order_values.isna().to_numpy())[0]) + 2
        raise TrainingError(f"{path}: line {line}: {key} is not a {'time' if key == 'ts' else 'number'}")
    values = df[sensors].to_numpy(dtype=np.float64)
    keys = order_values.to_numpy(dtype=np.float64)
    runs, ids, spacing = [], [], []
    for run_id, idx in df.groupby("run_id", sort=False).indices.items():
        k = keys[idx]
        o = np.argsort(k, kind="stable")
        if np.any(np.diff(k[o]) == 0):
            raise TrainingError(f"{path}: run {run_id!r} has two rows with the same {key}")
        runs.append(np.ascontiguousarray(values[idx][o]))
        ids.append(str(run_id))
        if key == "ts" and len(idx) > 1:
            spacing.append(np.diff(k[o]))
    cycle_ms = int(round(float(np.median(np.concatenate(spacing))))) if spacing else None
    return RunHistory(tuple(runs), tuple(sensors), tuple(ids), cycle_ms, "csv")


def read_rul_file(path: str | Path) -> np.ndarray:
    """True RUL at the last cycle of each test run, one number per line (C-MAPSS `RUL_FD001.txt`)."""
    path = Path(path)
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as e:
        raise TrainingError(f"{path}: expected one true RUL per line: {e}") from e


# -- training -----------------------------------------------------------------------------------------------


def evaluate(model: RulModel, runs: Sequence[np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """RMSE, NASA score and interval coverage at the last cycle of each run."""
    from smart_maintenance.operators.predict.rul import nasa_score

    rul, lo, hi = model.predict_runs(list(runs))
    open_ended = hi >= model.params.cap
    covered = (truth >= lo) & ((truth <= hi) | open_ended)
    return {
        "rmse": float(np.sqrt(np.mean((rul - truth) ** 2))),
        "nasa_score": nasa_score(rul, truth),
        "coverage": float(np.mean(covered)),
        "runs": float(len(runs)),
    }


def split_holdout(history: RunHistory, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Run indices to train on and to hold out (seeded; at least one of each when share > 0)."""
    n = len(history.runs)
    if share <= 0:
        return list(range(n)), []
    k = min(max(1, int(round(share * n))), n - 1)
    held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return [i for i in range(n) if i not in held], sorted(held)


def cut_runs(runs: Sequence[np.ndarray], min_history: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Each run cut at a seeded random cycle (at least `min_history` in), and the true RUL there."""
    rng = np.random.default_rng(seed + 1)
    cut, truth = [], []
    for r in runs:
        end = int(rng.integers(min(min_history, len(r)), len(r) + 1))  # rows kept: 1..len
        cut.append(r[:end])
        truth.append(float(len(r) - end))
    return cut, np.asarray(truth)


def train_rul(
    data: str | Path | RunHistory,
    asset_type: str,
    registry_root: str | Path,
    *,
    fmt: str = "auto",
    test: str | Path | None = None,
    test_rul: str | Path | None = None,
    holdout: float = 0.2,
    params: RulParams | None = None,
    cycle_ms: int | None = None,
    version: str | None = None,
    now: datetime | None = None,
    status: Callable[[str], None] | None = None,
) -> ModelMeta:
    """Load run-to-failure history, fit a RUL model, evaluate it and register it under `asset_type`.

    `data` is a file (see the module docstring) or a `RunHistory` already loaded.
    `status(text)` (optional) is told what is happening, for a progress display.
    Returns the registered model's meta; `ModelRegistry(registry_root).load(asset_type)` gives it back.
    """
    from smart_maintenance.operators.predict.rul import (
        RulParams,
        fit_rul_model,
        params_dict,
    )

    say = status or (lambda _text: None)
    p = params or RulParams()
    if (test is None) != (test_rul is None):
        raise ValueError("give test and test_rul together")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    registry = ModelRegistry(registry_root)
    if isinstance(data, RunHistory):
        history, sources = data, ["<runs>"]
        if cycle_ms is not None:
            history = RunHistory(history.runs, history.columns, history.run_ids, int(cycle_ms), history.fmt)
    else:
        say(f"reading {Path(data).name}")
        history, sources = load_runs(data, fmt, cycle_ms=cycle_ms), [Path(data).name]
    runs = [np.asarray(r, dtype=np.float64) for r in history.runs]

    if test is not None:
        say(f"reading {Path(test).name} and {Path(test_rul).name}")  # type: ignore[arg-type]
        tests = load_runs(test, history.fmt if history.fmt in ("cmapss", "csv") else fmt)
        truth = read_rul_file(test_rul)  # type: ignore[arg-type]
        if tests.columns != history.columns:
            raise TrainingError(f"{test}: columns {list(tests.columns)} differ from the training data's "
                                f"{list(history.columns)}")
        if len(truth) != len(tests.runs):
            raise TrainingError(f"{test_rul}: {len(truth)} RUL values for {len(tests.runs)} test runs")
        held_idx: list[int]
        train_idx, held_idx, kind = list(range(len(runs))), [], "test"
        sources += [Path(test).name, Path(test_rul).name]  # type: ignore[arg-type]
    else:
        train_idx, held_idx = split_holdout(history, holdout, p.seed)
        kind = "holdout" if held_idx else "out_of_fold"
    train = [runs[i] for i in train_idx]
    if len(train) < p.folds:
        raise TrainingError(f"{len(train)} training runs: need at least {p.folds} (params.folds) to fit; "
                            f"give more runs{' or a smaller holdout' if held_idx else ''}")

    say(f"fitting on {len(train)} runs, {sum(len(r) for r in train):,} cycles, {len(history.columns)} sensors")
    try:
        model = fit_rul_model(train, history.columns, p)
    except ValueError as e:
        raise TrainingError(f"cannot fit: {e}") from e

    metrics: dict[str, float] = dict(model.metrics)
    if kind == "test":
        say(f"evaluating on {len(tests.runs)} test runs")
        metrics |= {f"test_{k}": v for k, v in evaluate(model, tests.runs, truth).items()}
    elif kind == "holdout":
        say(f"evaluating on {len(held_idx)} held-out runs")
        cut, truth = cut_runs([runs[i] for i in held_idx], p.min_history, p.seed)
        metrics |= {f"holdout_{k}": v for k, v in evaluate(model, cut, np.minimum(truth, p.cap)).items()}

    say(f"registering under {asset_type}")
    meta_params: dict[str, Any] = params_dict(p) | {
        "columns": list(history.columns),
        "cycle_ms": history.cycle_ms,
        "data": {"format": history.fmt, "files": sources, "runs": len(train), "rows": int(sum(len(r) for r in train)),
                 "evaluation": kind, "held_out": [history.run_ids[i] for i in held_idx]},
    }
    return registry.save(asset_type, model, data_sha256=data_sha256(train), metrics=metrics, params=meta_params,
                         version=version, now=now)


# -- the command ----------------------------------------------------------------------------------------------

def parse_cycle(text: str | None) -> int | None:
    """A cycle length such as '5m', '30s', '1h', '250ms' or a number of seconds, in milliseconds.

    >>> parse_cycle("5m"), parse_cycle("90"), parse_cycle(None)
    (300000, 90000, None)
    """
    if text is None:
        return None
    try:
        seconds = duration_seconds(text, bare_seconds=True)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{text!r} is not a cycle length such as 5m, 30s, 1h or 250ms")
    return int(round(seconds * 1000))


