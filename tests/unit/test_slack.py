"""A cluster process's main thread sleeps with timer slack; its workers do not (smart_maintenance/slack.py)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is Linux's")

RELAXED = round(0.05 * 1e9)


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()


def test_threads_started_by_a_relaxed_main_thread_set_theirs_back() -> None:
    code = """
import threading
from smart_maintenance import slack
usual = slack.timer_slack_ns()
seen = {}
def worker():
    seen["inherited"] = slack.timer_slack_ns()
    slack.restore_thread()
    seen["restored"] = slack.timer_slack_ns()
print(slack.relax_main_thread(), slack.timer_slack_ns())
t = threading.Thread(target=worker); t.start(); t.join()
print(seen["inherited"], seen["restored"] == usual, slack.timer_slack_ns())
"""
    assert _run(code) == ["True", str(RELAXED), str(RELAXED), "True", str(RELAXED)]


def test_the_flow_relaxes_the_main_thread_of_bytewax_run_and_its_workers_set_theirs_back() -> None:
    # 2 workers in one process: Bytewax's cluster_main, whose main thread waits in a 1 ms loop; a sink's build
    # runs on each worker's thread after the flow's first step (`worker_start`)
    code = """
import sys, types
from bytewax._bytewax import cli_main
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource
from smart_maintenance import slack
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import build_flow
usual = slack.timer_slack_ns()
class Part(StatelessSinkPartition):
    def write_batch(self, items):
        pass
seen = []
class Probe(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        seen.append(slack.timer_slack_ns() == usual)
        return Part()
def flow():
    return build_flow(load_settings(console=False), source=TestingSource([]), sinks={"anomalies": [Probe()]},
                      live=False)
flow()
print("built", slack.timer_slack_ns() == usual)  # not by bytewax.run: nothing changes
sys.modules["__main__"].__spec__ = types.SimpleNamespace(name="bytewax.run")
f = flow()
print("main", slack.timer_slack_ns())
cli_main(f, workers_per_process=2)
print("workers", *seen)
seen.clear()
cli_main(flow(), workers_per_process=1)  # run_main: the worker is the main thread, set back before it runs
print("one", *seen, slack.timer_slack_ns() == usual)
"""
    assert _run(code) == ["built", "True", "main", str(RELAXED), "workers", "True", "True", "one", "True", "True"]
