"""Work off the hot path: a process pool per worker process for predictions (a Prophet fit holds the GIL
for 40-90 ms; in a pool process it never stalls detection), one for the incident memory (the embedding
model), and what runs in them."""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import context as mp_context
from multiprocessing import popen_forkserver
from typing import Any

from smart_maintenance.operators.predict.requests import (
    Prediction,
    PredictionRequest,
    predict,
)
from smart_maintenance.operators.records import stable_id

_POOLS: dict[str, ProcessPoolExecutor] = {}  # "predict", "incidents": one process each per worker process
_BOOSTED: set[str] = set()  # pools whose processes left idle priority: something waited for them
_POOL_LOCK = threading.Lock()
_CAP_SYS_NICE = 23
# Work a pool (at idle priority) has not finished after this long means the machine has no idle CPU for
# it: the pool is given its normal share from then on (wall time: it decides when, never what). Long
# enough for the incident process to load its model on the idle CPU of a quiet 2-core machine (~7 CPU-s).
STARVED_S = 15.0


def _can_leave_idle(nice: int) -> bool:
    """Whether this process (and so its pool processes, same credentials) may switch a thread from
    SCHED_IDLE back to normal scheduling at `nice`: CAP_SYS_NICE, or an RLIMIT_NICE that allows it.
    Without that, a pool at idle priority could never be given the CPU when the flow waits for it."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        import resource

        if resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - nice:
            return True
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
        return bool(int(caps.split()[1], 16) >> _CAP_SYS_NICE & 1)
    except (OSError, ValueError, StopIteration):
        return False


def _start_process(nice: int, idle: bool, env: tuple[tuple[str, str], ...] = (), parent: int | None = None) -> None:
    """A pool process's initializer: nice, and idle priority (SCHED_IDLE: it runs only on CPU nothing else
    wants, and gives it up at once when the flow or PostgreSQL wakes up) until `boost` lifts it; `env` is set
    unless already set (before the process imports what reads it). It ends when the flow process `parent`
    does (`_exit_with`)."""
    for key, value in env:
        os.environ.setdefault(key, value)
    os.nice(nice)
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent, _started(parent)), name="exit-with-flow", daemon=True).start()


def _started(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat), which a reused pid does not share; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _exit_with(parent: int, started: str | None, every_s: float = 1.0) -> None:
    """End this pool process once the flow process that started it is gone.

    A pool process is a child of the fork server, not of the flow, and waits for work on a queue whose
    writing end it holds itself: when the flow is killed (SIGKILL, the OOM killer) nothing tells it, and it
    would wait for ever, with the fork server and resource tracker it keeps alive. Checked once a second.
    """
    while True:
        time.sleep(every_s)
        if _started(parent) != started:
            os._exit(0)


def _launch_without_main(popen: Any, process_obj: Any) -> None:
    """The standard library's forkserver launch (Python 3.11's `popen_forkserver.Popen._launch`), less the
    parent's `__main__`.

    A forkserver child imports the parent's main module before it runs anything (the stdlib's preload of
    `__main__` into the fork server never takes: it looks for a key the preparation data does not have).
    For a flow started from the CLI or a bench script that is the whole application, about 1 CPU-s per
    pool process, where the pool only runs functions of this module. Everything it runs is importable by
    name, so the child goes without.
    """
    from multiprocessing import forkserver, reduction, spawn, util
    from multiprocessing.context import set_spawning_popen

    prep_data = spawn.get_preparation_data(process_obj._name)
    prep_data.pop("init_main_from_name", None)
    prep_data.pop("init_main_from_path", None)
    buf = io.BytesIO()
    set_spawning_popen(popen)
    try:
        reduction.dump(prep_data, buf)
        reduction.dump(process_obj, buf)
    finally:
        set_spawning_popen(None)
    popen.sentinel, w = forkserver.connect_to_new_process(popen._fds)
    parent_w = os.dup(w)  # the child's sentinel of this process, as the stdlib keeps it
    popen.finalizer = util.Finalize(popen, util.close_fds, (parent_w, popen.sentinel))  # type: ignore[attr-defined]
    with open(w, "wb", closefd=True) as f:
        f.write(buf.getbuffer())
    popen.pid = forkserver.read_signed(popen.sentinel)


class _LeanPopen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        _launch_without_main(self, process_obj)


class _LeanProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _LeanPopen(process_obj)


class _LeanContext(mp_context.ForkServerContext):
    """The forkserver context whose processes skip the parent's main module (module level: the process
    object is pickled to the child)."""

    Process = _LeanProcess


def _pool_context() -> Any:
    """`_LeanContext` on Python 3.11, whose launch `_launch_without_main` repeats; else the standard one."""
    return _LeanContext() if sys.version_info[:2] == (3, 11) else multiprocessing.get_context("forkserver")


def _pool(name: str, nice: int, env: tuple[tuple[str, str], ...] = ()) -> ProcessPoolExecutor:
    """The named pool of one niced process at idle priority, started on first use (forkserver: never fork
    Bytewax's threads)."""
    with _POOL_LOCK:
        p = _POOLS.get(name)
        if p is None:
            idle = _can_leave_idle(nice)
            p = _POOLS[name] = ProcessPoolExecutor(max_workers=1, mp_context=_pool_context(),
                                                   initializer=_start_process, initargs=(nice, idle, env, os.getpid()))
            atexit.register(p.shutdown, wait=False, cancel_futures=True)
        return p


def boost(name: str = "predict") -> None:
    """Give the named pool's process its share of the CPU again (normal scheduling at its nice value).

    Called when the flow waits for the pool (end of input, a search it needs, a request that waited too
    long), so that what it waits for is not starved by other work on the machine; from then on the pool
    stays at normal priority. Every thread of the process (torch's too) is switched. A no-op where the
    pool was never idle.
    """
    with _POOL_LOCK:
        p = _POOLS.get(name)
        pids = list(getattr(p, "_processes", None) or {}) if p is not None and name not in _BOOSTED else []
        if pids:  # a pool whose process has not started yet stays idle: nothing can wait for it yet
            _BOOSTED.add(name)
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = [pid]
        for tid in tids:
            try:
                if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:  # the thread ended meanwhile
                continue


def boost_all() -> None:
    """End of input: the flow only waits for the side processes now, so all of them get their share."""
    for name in list(_POOLS):
        boost(name)


def wait_for(f: Future[Any], name: str, grace_s: float = 0.0) -> Any:
    """The future's result; if it is not ready within `grace_s`, the pool that computes it is boosted first."""
    if not f.done() and grace_s > 0:
        wait([f], timeout=grace_s)
    if not f.done():
        boost(name)
    return f.result()


def pool() -> ProcessPoolExecutor:
    """One prediction process per worker process (idle priority until the flow waits for it, then nice 10)."""
    return _pool("predict", 10)


def reset_pool(name: str = "predict") -> None:
    """Forget a broken pool; the next use starts a new one."""
    with _POOL_LOCK:
        p = _POOLS.pop(name, None)
        _BOOSTED.discard(name)
    if p is not None:
        p.shutdown(wait=False, cancel_futures=True)


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


# -- the incident memory, in a process of its own ------------------------------------------------------
# Importing torch and sentence-transformers and loading the model take about 10 s of CPU, and
# embedding holds the GIL in stretches: in the flow's process that slowed detection (ablation: 7 s of
# a 42 s replay). Here the model, the embeddings and the Chroma client live in one more process
# (one per worker process, like the prediction pool); the flow hands it closures to index and work
# orders to search for, in order (one worker: what was remembered before a search is there for it).

_MEMORIES: dict[str, Any] = {}  # in the incident process: one memory per flow, by its key


# torch's OpenMP threads wait for work by spinning (libgomp's default): on a busy machine a few short
# encodes (a replay's closures, 2-3 texts each) then cost 5-7x the CPU of the same encodes with sleeping
# waiters. The wait policy decides how an idle thread waits, not how the work is split, so the
# embeddings are bit for bit the same (checked on 120 texts, 2 threads; 1 thread would change them).
INCIDENT_ENV = (("OMP_WAIT_POLICY", "PASSIVE"),)


def incident_pool() -> ProcessPoolExecutor:
    """The incident memory's process (idle priority, then nice 5: it loads the model while the flow starts)."""
    return _pool("incidents", 5, INCIDENT_ENV)


def _memory(key: str, settings: Any, data_dir: str, frozen: bool) -> Any:
    """In the incident process: the flow's memory, made (frozen for a replay) and warmed on first use."""
    m = _MEMORIES.get(key)
    if m is None:
        from smart_maintenance.stores.incidents import IncidentMemory

        m = _MEMORIES[key] = IncidentMemory(settings, data_dir)
        if frozen:
            m.freeze()
        m.warm()
    return m


def open_incidents(key: str, settings: Any, data_dir: str, frozen: bool) -> int:
    """In the incident process: open the memory, start loading the model; how many incidents it holds."""
    return int(_memory(key, settings, data_dir, frozen).count())


def load_incident_model(key: str, settings: Any, data_dir: str, frozen: bool) -> bool:
    """In the incident process: wait until the model has loaded (its error, if any, comes with the next use)."""
    _memory(key, settings, data_dir, frozen).warm().join()
    return True


def remember_incidents(key: str, settings: Any, data_dir: str, frozen: bool, closures: tuple[Any, ...]) -> int:
    """In the incident process: index what maintenance closed."""
    return int(_memory(key, settings, data_dir, frozen).remember(closures))


def attach_incidents(key: str, settings: Any, data_dir: str, frozen: bool, orders: tuple[Any, ...]) -> list[Any]:
    """In the incident process: the work orders with their similar past incidents."""
    return list(_memory(key, settings, data_dir, frozen).attach(orders))


def _store_path(settings: Any, data_dir: Any) -> Any:
    """Where the embedded store lives (the constructor only stores its settings: nothing is opened)."""
    from smart_maintenance.stores.incidents import IncidentMemory

    return IncidentMemory(settings, data_dir).path


_SEARCH_GRACE_S = 0.5  # a search the flow waits for longer than this lifts the incident process's idle priority


class RemoteIncidents:
    """The flow's handle on the incident memory in the incident process.

    Made when the flow is built (a replay) or at its first work order (live); the process opens the
    store and starts loading the model at once. `remember` returns a future and never waits;
    `attach` waits for the search, except when a frozen memory held nothing when the replay began:
    then no past incident can be found (everything in it is this run's, hidden from its searches),
    and the work orders go on without asking, so a first replay never waits for the model.
    """

    def __init__(self, settings: Any, data_dir: Any, frozen: bool) -> None:
        self.settings = settings
        self.frozen = frozen
        self._args: tuple[Any, ...] = (os.urandom(8).hex(), settings, str(data_dir), frozen)
        # A replay whose embedded store does not exist yet starts on an empty memory: known here, before
        # the incident process creates the store, so that no work order waits for it to import chromadb
        # and open the store (seconds, while its model loads beside it).
        self._new_store = frozen and not settings.chroma_url and not _store_path(settings, data_dir).exists()
        self._size: Future[int] = self._submit(open_incidents)
        # The model loads at idle priority; if it has not loaded after STARVED_S the machine has no idle
        # CPU for it, and it would only load when the end of input waits for it: give it its share now.
        self._loaded: Future[bool] = self._submit(load_incident_model)
        timer = threading.Timer(STARVED_S, self._unless_loaded)
        timer.daemon = True
        timer.start()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        try:
            return incident_pool().submit(fn, *self._args, *args)
        except BrokenProcessPool:  # the process died (OOM, a native crash): the failed calls were logged; a new one
            reset_pool("incidents")
            return incident_pool().submit(fn, *self._args, *args)

    def _unless_loaded(self) -> None:
        if not self._loaded.done():
            boost("incidents")

    def _empty_at_start(self) -> bool:
        """Whether the memory held nothing when the replay began (asked once; the first ask may wait)."""
        if self._new_store:
            return True
        if not self._size.done():
            import structlog

            t0 = time.perf_counter()
            wait_for(self._size, "incidents", _SEARCH_GRACE_S)
            structlog.get_logger("smart_maintenance.loop").info(
                "incident_memory_opened", step="recall_incidents", waited_s=round(time.perf_counter() - t0, 3))
        return bool(self._size.result() == 0)

    def remember(self, closures: tuple[Any, ...]) -> Future[int]:
        return self._submit(remember_incidents, tuple(closures))

    def attach(self, orders: tuple[Any, ...]) -> list[Any]:
        if not self.settings.enabled:
            return list(orders)
        if self.frozen and self._empty_at_start():
            from smart_maintenance.operators.plan.work_orders import with_similar

            return [with_similar(w, []) for w in orders]
        return list(wait_for(self._submit(attach_incidents, tuple(orders)), "incidents", _SEARCH_GRACE_S))
