"""The side processes' priority: idle while the flow runs, their normal share once the flow waits for them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

import smart_maintenance.dataflows.loop_steps as loop_steps
import smart_maintenance.dataflows.offload as offload
from smart_maintenance.dataflows.loop_steps import PredictLogic
from smart_maintenance.operators.predict.requests import PredictConfig, PredictionRequest, PredictSnapshot, predict

REQUEST = PredictionRequest("pump-01", "a1", "vibration", np.arange(5, dtype=np.int64) * 300_000, np.arange(5.0),
                            threshold=10.0, direction="above", horizon_ms=3_600_000, made_at_ms=1_200_000)


def test_a_pool_process_runs_at_idle_priority_until_boosted_then_at_its_nice() -> None:
    p = offload._pool("test_idle", 3)
    try:
        nice = min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
        # idle only where it can be lifted again (CAP_SYS_NICE or RLIMIT_NICE), else never: it would starve
        idle = offload._can_leave_idle(3)
        assert p.submit(os.sched_getscheduler, 0).result() == (os.SCHED_IDLE if idle else os.SCHED_OTHER)
        offload.boost("test_idle")
        assert p.submit(os.sched_getscheduler, 0).result() == os.SCHED_OTHER
        assert p.submit(os.getpriority, os.PRIO_PROCESS, 0).result() == nice
    finally:
        offload.reset_pool("test_idle")


class _Pool:
    """A pool that finishes its work only when boosted (or, so that a failing test cannot hang, after 5 s)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, result) -> None:
        self.futures: list[Future] = []
        self.boosted: list[str] = []
        self.result = result
        for module in (offload, loop_steps):
            monkeypatch.setattr(module, "boost", self.boost)

    def submit(self, *args) -> Future:
        self.futures.append(f := Future())
        threading.Timer(5.0, self.finish).start()
        return f

    def finish(self) -> None:
        for f in self.futures:
            if not f.done():
                f.set_result(self.result)

    def boost(self, name: str) -> None:
        self.boosted.append(name)
        self.finish()


def test_end_of_input_boosts_every_side_process_before_waiting(monkeypatch) -> None:
    fake = _Pool(monkeypatch, predict(REQUEST))
    monkeypatch.setattr(loop_steps, "pool", lambda: fake)
    monkeypatch.setattr(offload, "_POOLS", {"predict": fake, "incidents": fake})
    logic = PredictLogic(PredictSnapshot(None, (REQUEST,)), lambda a: None, PredictConfig(), True)
    assert logic.on_notify()[0] == [] and fake.boosted == []  # running: the pools stay idle
    assert [p.prediction_id for p in logic.on_eof()[0]] == [predict(REQUEST).prediction_id]
    assert fake.boosted == ["predict", "incidents"]  # the incident indexing left proceeds beside it


def test_a_request_starved_for_too_long_boosts_the_prediction_pool(monkeypatch) -> None:
    fake = _Pool(monkeypatch, predict(REQUEST))
    monkeypatch.setattr(loop_steps, "pool", lambda: fake)
    logic = PredictLogic(PredictSnapshot(None, (REQUEST,)), lambda a: None, PredictConfig(), True)
    monkeypatch.setattr(loop_steps, "STARVED_S", 0.0)
    logic.on_notify()
    assert fake.boosted == ["predict"]
    assert [p.prediction_id for p in logic.on_notify()[0]] == [predict(REQUEST).prediction_id]


def test_a_search_the_flow_waits_for_boosts_the_incident_process(monkeypatch) -> None:
    from smart_maintenance.config.incident_settings import IncidentSettings

    fake = _Pool(monkeypatch, [])
    monkeypatch.setattr(offload, "incident_pool", lambda: fake)
    monkeypatch.setattr(offload, "_SEARCH_GRACE_S", 0.01)
    remote = offload.RemoteIncidents(IncidentSettings(), "/nonexistent", frozen=False)  # live: it searches
    assert remote.attach(()) == [] and fake.boosted == ["incidents"]


def test_a_replay_on_a_store_not_yet_created_never_waits_for_the_incident_process(monkeypatch, tmp_path) -> None:
    from smart_maintenance.config.incident_settings import IncidentSettings

    fake = _Pool(monkeypatch, 0)  # opening the store would take 5 s
    monkeypatch.setattr(offload, "incident_pool", lambda: fake)
    monkeypatch.setattr(offload, "_SEARCH_GRACE_S", 0.01)
    remote = offload.RemoteIncidents(IncidentSettings(), tmp_path, frozen=True)
    assert remote.attach(()) == []
    assert fake.boosted == [] and not fake.futures[0].done()  # not asked, not waited for
    (tmp_path / "chroma").mkdir()  # a store from an earlier run: its size is asked (and waited for)
    remote = offload.RemoteIncidents(IncidentSettings(), tmp_path, frozen=True)
    assert remote.attach(()) == [] and fake.boosted == ["incidents"]


def test_indexing_starved_for_too_long_boosts_the_incident_process(monkeypatch) -> None:
    from smart_maintenance.dataflows.loop_steps import RecallLogic
    from smart_maintenance.operators.plan.work_orders import WorkOut

    fake = _Pool(monkeypatch, 1)

    class _Memory:
        def remember(self, closures):
            return fake.submit(closures)

    logic = RecallLogic(None, lambda: _Memory())
    logic.on_item(WorkOut(orders=(), closures=(("closure",),)))  # type: ignore[arg-type]
    logic.on_notify()
    assert fake.boosted == []  # not yet starved
    monkeypatch.setattr(loop_steps, "STARVED_S", 0.0)
    logic.on_notify()
    assert fake.boosted == ["incidents"]
    logic.on_notify()
    assert logic.snapshot() == () and logic.notify_at() is None


def test_a_model_still_loading_after_starved_s_boosts_the_incident_process(monkeypatch, tmp_path) -> None:
    import time

    from smart_maintenance.config.incident_settings import IncidentSettings

    fake = _Pool(monkeypatch, True)  # the model would load only after 5 s
    monkeypatch.setattr(offload, "incident_pool", lambda: fake)
    monkeypatch.setattr(offload, "STARVED_S", 0.05)
    offload.RemoteIncidents(IncidentSettings(), tmp_path, frozen=True)
    time.sleep(0.5)
    assert fake.boosted == ["incidents"]


def test_a_pool_process_does_not_import_the_parents_main_module(tmp_path) -> None:
    """A forkserver child imports the parent's main script before it runs anything (the stdlib does; for the CLI
    or a bench that is the whole application, about 1 CPU-s per pool process); ours go without."""
    import subprocess
    import sys

    marks = tmp_path / "imported_by"
    main = tmp_path / "main_script.py"
    main.write_text(
        "import os\n"
        f"open({str(marks)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "if __name__ == '__main__':\n"
        "    from smart_maintenance.dataflows import offload\n"
        "    print(offload._pool('test_main', 0).submit(os.getpid).result())\n"
    )
    out = subprocess.run([sys.executable, str(main)], capture_output=True, text=True, check=True, timeout=60,
                         env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    child = int(out.stdout.split()[-1])
    imported_by = [int(line) for line in marks.read_text().split()]
    assert child not in imported_by and len(imported_by) == 1  # the parent only


def test_the_incident_process_waits_for_work_without_spinning() -> None:
    """torch's OpenMP threads sleep between encodes (same embeddings, a fraction of the CPU on a busy machine)."""
    import os as os_

    assert ("OMP_WAIT_POLICY", "PASSIVE") in offload.INCIDENT_ENV
    p = offload._pool("test_env", 0, offload.INCIDENT_ENV)
    try:
        assert p.submit(os_.getenv, "OMP_WAIT_POLICY").result() == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    finally:
        offload.reset_pool("test_env")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by the fork server) is gone too
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.1)
    return False


def test_a_pool_process_ends_when_its_flow_process_is_killed() -> None:
    # a flow killed by SIGKILL (or the OOM killer) must not leave its pool process waiting for work for ever
    code = ("import os, sys, time\nimport smart_maintenance.dataflows.offload as offload\n"
            "print(offload.pool().submit(os.getpid).result(), flush=True)\ntime.sleep(60)\n")
    flow = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(flow.stdout.readline())
        assert not _gone_within(worker, 1.5)  # alive while its flow is
        flow.kill()
        flow.wait()
        assert _gone_within(worker, 10)
    finally:
        flow.kill()
