"""A flow process runs OpenBLAS with one thread: the pool's idle threads spin (blas.py, issue #17 item 3)."""

import json
import os
import subprocess
import sys

_POOLS = ("import json, os, threadpoolctl, numpy, scipy.linalg\n"
          "print(json.dumps([os.environ.get('OPENBLAS_NUM_THREADS'),"
          " sorted(p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas')]))")


def _pools(first: str, **env: str) -> tuple[str | None, list[int]]:
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", f"{first}\n{_POOLS}"], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    var, threads = json.loads(out.stdout)
    return var, threads


def test_a_flow_process_loads_numpy_and_scipy_with_one_blas_thread() -> None:
    assert _pools("import smart_maintenance.dataflows") == ("1", [1, 1])


def test_a_thread_count_set_in_the_environment_is_kept() -> None:
    assert _pools("import smart_maintenance.dataflows", OPENBLAS_NUM_THREADS="2") == ("2", [2, 2])


def test_once_numpy_is_loaded_the_flow_changes_nothing() -> None:
    var, _ = _pools("import numpy\nimport smart_maintenance.dataflows")
    assert var is None
