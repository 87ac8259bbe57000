"""Timer slack: a cluster process's main thread waits for its workers without waking a thousand times a second.

In a cluster (`python -m bytewax.run ... -i/-a`, or `-w N`), Bytewax's `cluster_main` runs the workers on
threads of their own and keeps the process's main thread in a loop until they end: sleep 1 ms, take the GIL,
check for signals (Bytewax 0.21, `src/run.rs`). Each turn wakes the thread, and while a worker runs Python it
waits for the GIL and takes it from the worker. Over a 1 M-reading backlog read by 2 processes (2026-12-07,
load ~20, docs/performance.md) the two main threads' loops used 0.51 CPU-s, and 0.026 cores idle; a 1-process
run (`run_main`) runs its worker on the main thread and has no such loop, so this was a cost of the cluster.

Linux lets a thread say how late its timed sleeps may end, its timer slack (`prctl(PR_SET_TIMERSLACK)`,
50 µs by default): the kernel ends such a sleep with the next wake-up it does anyway, or at the latest that
much late. `relax_main_thread` gives the main thread `MAIN_THREAD_SLACK_S`, so the loop's 1 ms sleeps end
with the machine's other wake-ups; what it costs is that a signal (Ctrl-C, SIGTERM) and the workers' end are
noticed up to that much later. Threads inherit their creator's slack, so the workers, started by the main
thread after `build_flow`, set theirs back (`restore_thread`) when the flow is built on them: their timed
waits (the 1 ms cool-down between steps, the sources' polls) end on time. In a 1-process run that is the main
thread itself, set back before the flow's first step.

Errors: none; where the call does not exist (not Linux, no libc) nothing changes.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30
# the loop only looks for signals and for the workers' end: 50 ms later is not noticed by a person or a
# service manager, and lets the loop's sleeps end with other wake-ups (one value, not tuned)
MAIN_THREAD_SLACK_S = 0.05

_usual_ns: int | None = None  # the main thread's slack before it was relaxed; what workers go back to


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def timer_slack_ns() -> int | None:
    """The calling thread's timer slack in ns (None where it cannot be read)."""
    prctl = _prctl()
    return None if prctl is None else prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)


def relax_main_thread(slack_s: float = MAIN_THREAD_SLACK_S) -> bool:
    """Give the main thread `slack_s` of timer slack (on any other thread: nothing); whether it was set."""
    global _usual_ns
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return False
    if _usual_ns is None:
        _usual_ns = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    return prctl(PR_SET_TIMERSLACK, round(slack_s * 1e9), 0, 0, 0) == 0


def restore_thread() -> None:
    """Set the calling thread's timer slack back to the main thread's before `relax_main_thread` (if it ran)."""
    prctl = _prctl()
    if prctl is not None and _usual_ns is not None and _usual_ns > 0:
        prctl(PR_SET_TIMERSLACK, _usual_ns, 0, 0, 0)


def launched_by_bytewax_run() -> bool:
    """Whether this process is `python -m bytewax.run ...`, which runs the flow it builds."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "bytewax.run"
