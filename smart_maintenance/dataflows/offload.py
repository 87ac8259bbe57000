"""Prediction off the hot path: one process pool per worker process (a Prophet fit holds the GIL for
40-90 ms; in a pool process it never stalls detection), and what runs in it."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from smart_maintenance.operators.predict.requests import (
    Prediction,
    PredictionRequest,
    predict,
)
from smart_maintenance.operators.records import stable_id

_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ProcessPoolExecutor:
    """One prediction process per worker process, started on first use (forkserver: never fork Bytewax's threads)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"),
                                        initializer=os.nice, initargs=(10,))
            atexit.register(_POOL.shutdown, wait=False, cancel_futures=True)
        return _POOL


def reset_pool() -> None:
    """Forget a broken pool; the next `pool()` starts a new one."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.shutdown(wait=False, cancel_futures=True)
        _POOL = None


_RUL_CACHE: dict[tuple[str, str], Any] = {}
def predict_with_models(request: PredictionRequest, rul_root: str | None) -> Prediction:
    """In the pool process: the asset type's learned RUL model where it applies, else Prophet.

    Models load once per pool process (a few MB each) and are kept.
    """
    if rul_root and request.asset_type and request.means is not None:
        key = (rul_root, request.asset_type)
        if key not in _RUL_CACHE:
            from smart_maintenance.stores.model_registry import ModelRegistry

            registry = ModelRegistry(rul_root)
            _RUL_CACHE[key] = registry.load(request.asset_type) if registry.latest(request.asset_type) else None
        loaded = _RUL_CACHE[key]
        if loaded is not None:
            from smart_maintenance.operators.predict.rul_predict import (
                predict_rul,
                rul_applies,
            )

            model, meta = loaded
            if rul_applies(meta, request.sensors):
                p = predict_rul(model, meta, asset_id=request.asset_id, alarm_id=request.alarm_id,
                                sensors=request.sensors, window_end=request.ts, means=request.means)
                if p is not None and "outside_envelope" not in p.inputs:
                    return p
                if p is not None:  # the model never saw data like this: Prophet, saying why
                    fallback = predict(request)
                    why = {"rul_model_declined": p.inputs["outside_envelope"], "rul_model_version": meta.version}
                    return replace(fallback, inputs={**fallback.inputs, **why})
    return predict(request)


def request_id(r: PredictionRequest) -> str:
    """The deterministic id of a prediction request (and of the prediction it makes)."""
    return stable_id("prediction", r.asset_id, r.alarm_id, r.made_at_ms)
