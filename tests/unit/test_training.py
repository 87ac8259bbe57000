"""`train_rul`: C-MAPSS and runs-CSV loading, evaluation, registration, and the `train-rul` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from smart_maintenance.cli.train import train_rul_command
from smart_maintenance.operators.predict.rul import RulParams
from smart_maintenance.stores.model_registry import ModelRegistry, data_sha256
from smart_maintenance.training import (
    CMAPSS_SENSORS,
    RunHistory,
    TrainingError,
    load_runs,
    parse_cycle,
    train_rul,
)

CMAPSS = Path("/work/shared/data/cmapss")
FAST = RulParams(folds=2, max_iter=30, min_samples_leaf=20)
ENGINES = 20


def _subset(src: Path, dst: Path, units: int) -> Path:
    """The first `units` engines of a C-MAPSS file, in its own format (trailing spaces kept)."""
    lines = [x for x in src.read_text().splitlines(keepends=True) if int(x.split()[0]) <= units]
    dst.write_text("".join(lines))
    return dst


@pytest.fixture(scope="module")
def fd001(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cmapss")
    rul = d / "RUL_sub.txt"
    rul.write_text("".join((CMAPSS / "RUL_FD001.txt").read_text().splitlines(keepends=True)[:ENGINES]))
    return {"train": _subset(CMAPSS / "train_FD001.txt", d / "train_sub.txt", ENGINES),
            "test": _subset(CMAPSS / "test_FD001.txt", d / "test_sub.txt", ENGINES), "rul": rul}


def runs_csv(path: Path, runs: list[np.ndarray], names: list[str], *, key: str = "ts", step_ms: int = 300_000) -> Path:
    rows = [",".join(["run_id", key, *names])]
    for k, r in enumerate(runs):
        for i, values in enumerate(r):
            order = f"{1_700_000_000_000 + k * 10**9 + i * step_ms}" if key == "ts" else str(i + 1)
            rows.append(",".join([f"pump-{k:02d}", order, *(f"{v:.4f}" for v in values)]))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cmapss_with_test_files_is_evaluated_and_registered(fd001: dict[str, Path], tmp_path: Path) -> None:
    said: list[str] = []
    meta = train_rul(fd001["train"], "turbofan", tmp_path, test=fd001["test"], test_rul=fd001["rul"], params=FAST,
                     status=said.append)
    history = load_runs(fd001["train"])
    assert history.fmt == "cmapss" and len(history.runs) == ENGINES and history.columns == CMAPSS_SENSORS
    assert history.run_ids[:3] == ("1", "2", "3") and history.runs[0].shape == (192, 21)  # engine 1: 192 cycles
    assert (meta.asset_type, meta.version) == ("turbofan", "v0001")
    assert meta.data_sha256 == data_sha256(history.runs)  # the hash bench/cmapss.py stores for the same runs
    assert meta.metrics["test_runs"] == ENGINES and 5 < meta.metrics["test_rmse"] < 30
    assert 0 <= meta.metrics["test_coverage"] <= 1 and meta.metrics["test_nasa_score"] > 0
    assert meta.params["columns"] == list(CMAPSS_SENSORS) and meta.params["cycle_ms"] is None
    assert meta.params["data"]["evaluation"] == "test" and meta.params["folds"] == 2
    assert any("fitting on 20 runs" in s for s in said)

    model, loaded = ModelRegistry(tmp_path).load("turbofan")
    assert loaded == meta
    test = load_runs(fd001["test"])
    rul, _, _ = model.predict_runs(list(test.runs))
    truth = np.loadtxt(fd001["rul"])
    assert np.sqrt(np.mean((rul - truth) ** 2)) == pytest.approx(meta.metrics["test_rmse"])
    again = train_rul(fd001["train"], "turbofan", tmp_path, params=FAST, holdout=0.0)
    assert again.version == "v0002" and ModelRegistry(tmp_path).latest("turbofan") == again
    assert again.data_sha256 == meta.data_sha256  # both trained on all 20 runs
    assert again.params["data"]["evaluation"] == "out_of_fold" and "test_rmse" not in again.metrics


def test_a_runs_csv_with_times_holds_out_runs_and_records_the_cycle(fd001: dict[str, Path], tmp_path: Path) -> None:
    engines = load_runs(fd001["train"])
    names = ["temp", "pressure", "vib", "speed", "flow"]
    cols = [CMAPSS_SENSORS.index(c) for c in ("sensor_2", "sensor_3", "sensor_4", "sensor_7", "sensor_11")]
    path = runs_csv(tmp_path / "runs.csv", [r[:, cols] for r in engines.runs], names)
    history = load_runs(path)
    assert history.fmt == "csv" and history.columns == tuple(names) and history.cycle_ms == 300_000
    assert history.run_ids[:2] == ("pump-00", "pump-01")
    assert np.allclose(history.runs[0], engines.runs[0][:, cols], atol=1e-4)
    meta = train_rul(path, "pump", tmp_path / "reg", params=FAST, holdout=0.25)
    held = meta.params["data"]["held_out"]
    assert len(held) == 5 and meta.params["data"]["runs"] == 15 and meta.metrics["holdout_runs"] == 5
    assert meta.params["cycle_ms"] == 300_000 and meta.params["columns"] == names
    assert np.isfinite(meta.metrics["holdout_rmse"]) and meta.metrics["holdout_rmse"] < 60
    kept = [r for i, r in zip(history.run_ids, history.runs) if i not in held]
    assert meta.data_sha256 == data_sha256(kept)
    same = train_rul(path, "pump", tmp_path / "reg2", params=FAST, holdout=0.25)
    assert same.params["data"]["held_out"] == held and same.metrics == meta.metrics  # seeded


def test_a_runs_csv_with_cycles_takes_its_cycle_length_from_the_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs = [np.cumsum(rng.normal(0.1, 1, (n, 2)), axis=0) for n in rng.integers(40, 80, 6)]
    rows = runs_csv(tmp_path / "r.csv", runs, ["a", "b"], key="cycle").read_text().splitlines()
    (tmp_path / "shuffled.csv").write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")  # order is by cycle
    history = load_runs(tmp_path / "shuffled.csv", cycle_ms=60_000)
    assert history.cycle_ms == 60_000 and np.allclose(history.runs[0], runs[5], atol=1e-4)


@pytest.mark.parametrize(("text", "message"), [
    ("ts,a\n1,2\n", "needs a run_id column"),
    ("run_id,a\nr,2\n", "one ordering column, cycle or ts; found none"),
    ("run_id,cycle,ts,a\nr,1,1,2\n", r"found \['cycle', 'ts'\]"),
    ("run_id,cycle,a\nr,1,x\nr,2,3\n", r"not numeric: \['a'\]"),
    ("run_id,cycle,a\nr,1,1\nr,1,3\n", "two rows with the same cycle"),
    ("run_id,ts,a\nr,2024-01-01,1\nr,soon,3\n", "line 3: ts is not a time"),
    ("run_id,cycle\nr,1\n", "no sensor columns"),
])
def test_a_malformed_runs_csv_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TrainingError, match=message):
        load_runs(path)


def test_too_little_data_is_a_training_error(tmp_path: Path) -> None:
    runs = tuple(np.random.default_rng(0).normal(size=(30, 2)) for _ in range(2))
    with pytest.raises(TrainingError, match="need at least 2"):
        train_rul(RunHistory(runs, ("a", "b"), ("x", "y")), "pump", tmp_path, params=FAST, holdout=0.5)
    with pytest.raises(TrainingError, match="no such file"):
        train_rul(tmp_path / "missing.txt", "pump", tmp_path)
    with pytest.raises(ValueError, match="together"):
        train_rul(RunHistory(runs, ("a", "b"), ("x", "y")), "pump", tmp_path, test=tmp_path / "t.txt")
    assert not (tmp_path / "pump").exists()


def test_parse_cycle() -> None:
    assert [parse_cycle(x) for x in ("5m", "30s", "250ms", "1.5h", "2")] == [300_000, 30_000, 250, 5_400_000, 2_000]
    with pytest.raises(ValueError, match="cycle length"):
        parse_cycle("soon")


def test_the_train_rul_command(fd001: dict[str, Path], tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("train-rul")(train_rul_command)
    app.command("noop")(lambda: None)  # a group of two, as in cli/app.py
    runner = CliRunner()
    args = ["train-rul", str(fd001["train"]), "--asset-type", "turbofan", "--registry", str(tmp_path),
            "--test", str(fd001["test"]), "--test-rul", str(fd001["rul"]), "--folds", "2", "--max-iter", "30",
            "--cycle", "1h"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "turbofan/v0001" in result.output and "test_rmse" in result.output
    _, meta = ModelRegistry(tmp_path).load("turbofan")
    assert meta.params["cycle_ms"] == 3_600_000 and meta.params["max_iter"] == 30
    bad = runner.invoke(app, ["train-rul", str(tmp_path / "nope.txt"), "-t", "turbofan", "--registry", str(tmp_path)])
    assert bad.exit_code == 2 and "no such file" in bad.output
    bad = runner.invoke(app, [*args[:6], "--cycle", "soon"])
    assert bad.exit_code == 2 and "cycle length" in bad.output
