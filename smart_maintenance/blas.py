"""One BLAS thread per flow process: a flow runs in parallel by its Bytewax workers; OpenBLAS's threads only spin.

numpy and SciPy each load their own OpenBLAS, which starts a pool of one thread per core when it loads. A pool
thread that has no work waits for it by spinning on its core for a while before it sleeps (OpenBLAS's
`blas_thread_server`), at start-up and again after each call large enough to be split. A flow's matrices are
small (a window's features, one asset's covariance), so the pool has nothing to split, and a cluster already
runs one process per core: what the pool costs is the spin. Measured on this 2-core machine (2026-12-07,
docs/performance.md, branch `cpu2p3`): `python -c "import numpy"` used 0.15-0.16 CPU-s, 0.06-0.08 with one
thread; `blas_thread_server` was ~1.5 % of a flow process's CPU over a 1 M-reading backlog (perf).

`one_blas_thread()` sets `OPENBLAS_NUM_THREADS=1` in the environment before numpy is first imported; processes
the flow starts (the prediction pool) inherit it. `smart_maintenance/dataflows/__init__.py` calls it, so it
applies to every process that imports a dataflow before numpy: `python -m bytewax.run`, `smart-maintenance run`.

Guarantees: a value already in the environment is kept (set `OPENBLAS_NUM_THREADS` to have a pool); once numpy
is loaded nothing changes (OpenBLAS reads the variable when it loads), and the call says so by returning False.
"""

from __future__ import annotations

import os
import sys

BLAS_THREADS_VAR = "OPENBLAS_NUM_THREADS"


def one_blas_thread() -> bool:
    """Ask OpenBLAS for one thread, unless the environment says otherwise; True if it takes effect.

    >>> import numpy; one_blas_thread()  # numpy's OpenBLAS is loaded: too late, nothing changes
    False
    """
    if "numpy" in sys.modules or "scipy" in sys.modules:
        return False
    os.environ.setdefault(BLAS_THREADS_VAR, "1")
    return True
