"""`train-rul`: a learned remaining-useful-life model from run-to-failure history, registered by asset type."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from smart_maintenance.cli.common import err, out, plain, say
from smart_maintenance.training import TrainingError, parse_cycle, train_rul


def train_rul_command(
    data: Annotated[Path, typer.Argument(help="run-to-failure history: C-MAPSS train_FD00x.txt or a runs CSV")],
    asset_type: Annotated[str, typer.Option("--asset-type", "-t", help="the asset type the model is for")],
    registry: Annotated[Path | None, typer.Option(
        "--registry",
        help="model registry folder (default: prediction.rul_registry, else data_dir/rul_models)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, cmapss or csv")] = "auto",
    test: Annotated[Path | None, typer.Option(help="test runs, cut before failure (e.g. test_FD001.txt)")] = None,
    test_rul: Annotated[Path | None, typer.Option(help="true RUL per test run (e.g. RUL_FD001.txt)")] = None,
    holdout: Annotated[float, typer.Option(help="share of runs held out to evaluate, without --test")] = 0.2,
    cycle: Annotated[str | None, typer.Option(
        "--cycle",
        help="length of one cycle (5m, 30s): default the data's ts spacing, else the asset's window")] = None,
    cap: Annotated[float, typer.Option(help="RUL target cap in cycles")] = 125.0,
    folds: Annotated[int, typer.Option(help="cross-fitted models in the ensemble")] = 5,
    max_iter: Annotated[int, typer.Option(help="boosting iterations per model")] = 400,
    seed: Annotated[int, typer.Option(help="seed of folds, holdout and trees")] = 0,
    version: Annotated[str | None, typer.Option(help="version name (default v0001, v0002, ...)")] = None,
) -> None:
    """Train a remaining-useful-life model on run-to-failure history and register it for an asset type."""
    from rich.table import Table

    from smart_maintenance.operators.predict.rul import RulParams

    console = err
    try:
        params = RulParams(cap=cap, folds=folds, max_iter=max_iter, seed=seed)
        cycle_ms = parse_cycle(cycle)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if registry is None:
        from smart_maintenance.config.settings import load_settings

        settings = load_settings()
        registry = settings.prediction.rul_registry or settings.data_dir / "rul_models"
    with console.status("training", spinner="dots") as spinner:
        def status(text: str) -> None:
            spinner.update(text)
            say(text, f"{datetime.now():%H:%M:%S} ", "dim")

        try:
            meta = train_rul(data, asset_type, registry, fmt=fmt, test=test, test_rul=test_rul, holdout=holdout,
                             params=params, cycle_ms=cycle_ms, version=version, status=status)
        except (TrainingError, ValueError) as e:
            say(e, "cannot train: ", "red")
            raise typer.Exit(2) from e
    table = Table(title=plain(f"RUL model {meta.asset_type}/{meta.version}"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in meta.metrics.items():
        table.add_row(k, f"{v:,.0f}" if float(v).is_integer() else f"{v:,.4g}")
    out.print(table)
    cycle_text = f"{meta.params['cycle_ms'] / 1000:g} s" if meta.params.get("cycle_ms") else "the asset's window"
    say(f"{Path(registry) / meta.asset_type / meta.version} for sensors {', '.join(meta.params['columns'])}; "
        f"one cycle = {cycle_text}; data sha256 {meta.data_sha256[:12]}", "saved ")
