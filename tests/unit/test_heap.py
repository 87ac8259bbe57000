"""The flow process's collector settings, and per-asset state that is not kept when there is nothing to keep."""

import gc
import subprocess
import sys

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import build_flow
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.stages import Tracked


def test_a_flow_sets_the_collector_for_a_long_lived_heap() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        build_flow(load_settings(console=False), sinks={})
        assert gc.get_threshold() >= (50_000, 20, 100)
    finally:
        gc.set_threshold(*before)


def test_an_asset_without_alarms_or_reviews_keeps_no_notification_state() -> None:
    steps = Steps(load_settings(console=False), load_registry())
    state, notes = steps.plan_notifications(None, Tracked("pump-01", None, (), None, ()))
    assert state is None and notes == []  # None: Bytewax keeps nothing for the asset


def test_a_flow_process_sets_the_collector_before_it_imports_the_flow() -> None:
    # every process of a cluster pays its start-up; the imports alone ran ~200 collections at the default settings
    code = ("import gc, sys\nimport smart_maintenance.dataflows\n"
            "print(gc.get_threshold() >= (50_000, 20, 100), 'bytewax' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_a_flow_process_freezes_its_heap_before_the_interpreter_shuts_down() -> None:
    # the shutdown's collections over the flow's heap cost each process ~0.3 CPU-s (heap.freeze_at_exit); the
    # check is registered first, so it runs after the flow's handlers, as the interpreter's shutdown does
    code = ("import atexit, gc\natexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))\n"
            "import smart_maintenance.dataflows\nprint('running', gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["running", "False", "at", "exit", "True"]
