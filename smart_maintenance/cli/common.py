"""What every command shares: the consoles, settings with one config-error handler, one duration parser,
one time format, and printing that never reads data as markup.

Data goes to stdout (`out`), messages to stderr (`err`). Text that comes from
data or from people (asset ids, notes, error messages quoting input) is
printed as plain text: `say` never interprets it, and tables take `plain(...)`
cells, so an id such as `[/]` or `[link=...]` is shown as written.

Exit codes: 0 done, 1 a failure of the system (database, files), 2 a usage or
configuration error the user can fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from smart_maintenance.config.durations import duration_seconds
from smart_maintenance.config.settings import Settings, load_settings

out = Console(soft_wrap=False)
err = Console(stderr=True, soft_wrap=True)


def plain(value: Any) -> Text:
    """A table cell or message part from data: shown exactly as written, never as markup."""
    return Text(str(value))


def say(message: Any, label: str = "", style: str = "") -> None:
    """A message on stderr: an optional styled label, then `message` as plain text."""
    err.print(Text.assemble((label, style), str(message)))


def settings(**overrides: Any) -> Settings:
    """The settings (arguments > environment > TOML > defaults); a configuration error exits 2 with the reason."""
    try:
        return load_settings(**overrides)
    except Exception as e:  # pydantic's ValidationError, a bad TOML file, a missing config file
        say(e, "configuration error: ", "red")
        raise typer.Exit(2) from None


def fail(e: BaseException, what: str = "error", code: int = 1) -> NoReturn:
    """Print `what: <e>` and exit with `code` (1: the system failed, 2: the user can fix it)."""
    say(e, f"{what}: ", "red")
    raise typer.Exit(code) from None


def duration(text: str, *, forever: bool = False) -> float | None:
    """A duration option (`90s`, `15m`, `6h`, `2d`, `1w`, seconds), or None for `forever` where allowed.

    >>> duration("2d"), duration("forever", forever=True)
    (172800.0, None)
    """
    if forever and text.strip().lower() in ("forever", "inf", "none"):
        return None
    try:
        return duration_seconds(text, bare_seconds=True)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def speed(text: str) -> float:
    """'max' (as fast as possible), '1' (real time), '60' (a minute per second).

    >>> speed("max"), speed("60")
    (0.0, 60.0)
    """
    if text.strip().lower() in ("max", "fast", "0"):
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a speed: use max or a factor such as 1 or 60") from None
    if not v > 0 or v == float("inf"):
        raise typer.BadParameter("speed must be a positive number (or max)")
    return v


def when(value: datetime | None) -> str:
    """A time as `YYYY-MM-DD HH:MM:SS` UTC, or an empty string.

    >>> when(datetime(2026, 1, 5, 6, 30, tzinfo=timezone.utc))
    '2026-01-05 06:30:00'
    """
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def jsonable(value: Any) -> Any:
    """Times as RFC 3339 text, recursively, for `--json` output."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def loop_store() -> Any:
    """The PostgreSQL store of reviews, work orders and maintenance, opened; exit 1 when unreachable."""
    from smart_maintenance.connectors.postgres.server import (
        PostgresSinkError,
        resolve_dsn,
    )
    from smart_maintenance.connectors.postgres.store import LoopStore

    s = settings()
    try:
        return LoopStore(resolve_dsn(s), s.postgres.schema_name).open()
    except PostgresSinkError as e:
        fail(e, "database error")


def exit_for(e: Exception) -> typer.Exit:
    """Exit 2 for what the user can fix (a wrong id, a decided review, a bad value), 1 for the database."""
    from smart_maintenance.connectors.postgres.store import (
        ReviewClosedError,
        UnknownReviewError,
    )
    from smart_maintenance.operators.controls import ControlError

    if isinstance(e, (UnknownReviewError, ReviewClosedError, ControlError, ValueError)):
        say(e, "error: ", "red")
        return typer.Exit(2)
    say(e, "database error: ", "red")
    return typer.Exit(1)
