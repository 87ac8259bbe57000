"""Whether this process runs its flow with Bytewax recovery, for sinks whose snapshots only matter then.

Bytewax calls every sink's `snapshot()` at the end of each epoch, with or without recovery. A sink that
writes in the background must wait there for its writes when recovery is on (the epoch's snapshot must
not be committed before its output is stored: at-least-once); without recovery nothing resumes from that
snapshot, and the wait only stalls the flow.

Who knows says so: `smart-maintenance run/replay` call `set_recovery` before the flow starts;
`python -m bytewax.run` is recognised by its own arguments and environment. Anything else (`run_main` in
tests, an embedding program) is assumed to run with recovery: waiting is the safe side.

>>> set_recovery(False); recovery_on()
False
>>> set_recovery(None); recovery_on(["/x/bytewax/run.py", "pkg:flow()", "-r", "/tmp/r"], {})
True
>>> recovery_on(["/x/bytewax/run.py", "pkg:flow()", "-s", "1"], {})
False
>>> recovery_on(["/x/bytewax/run.py", "pkg:flow()", "--recov", "/tmp/r"], {})  # argparse takes abbreviations
True
>>> recovery_on(["pytest"], {})
True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache

_declared: bool | None = None


def set_recovery(on: bool | None) -> None:
    """This process runs its flow with (True) or without (False) recovery; None: find out (the default)."""
    global _declared
    _declared = on


def recovery_on(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True unless this process is known to run its flow without recovery."""
    if _declared is not None:
        return _declared
    if argv is None and environ is None:  # this process's own: read once (per-key state logic asks too)
        return _from_process()
    return _from_args(sys.argv if argv is None else argv, os.environ if environ is None else environ)


@lru_cache(maxsize=1)
def _from_process() -> bool:
    return _from_args(sys.argv, os.environ)


def _from_args(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    if not argv or os.path.basename(os.path.dirname(argv[0])) != "bytewax" or os.path.basename(argv[0]) != "run.py":
        return True  # not `python -m bytewax.run`: we cannot tell
    if environ.get("BYTEWAX_RECOVERY_DIRECTORY"):
        return True
    try:  # Bytewax's own parser reads its arguments as it will (abbreviations such as --recovery, -rDIR, ...=DIR)
        from bytewax.run import _create_arg_parser

        known, _ = _create_arg_parser().parse_known_args(list(argv[1:]))  # type: ignore[no-untyped-call]
        return getattr(known, "recovery_directory", "unknown") is not None
    except (Exception, SystemExit):  # a parser that changed or refuses: the safe side
        return True
