"""A flow process imports only what it uses at start: every process of a cluster pays its imports (issue #17,
item 3: 1 -> 2 processes). Libraries that only some flows or some moments need are imported where they are used."""

from __future__ import annotations

import os
import subprocess
import sys

# what the flow module, and the modules its build imports at start, must not load by themselves
LAZY = (
    "ortools",  # the work-order planner: loaded at the first plan (operators/plan/dispatch.py:replan)
    "httpx",  # webhook and Slack notification channels, when switched on
    "paho",  # the MQTT notification channel, when switched on
    "scipy.signal",  # RUL features (operators/predict/rul.py), in the prediction pool
    "scipy.special",  # the T² limit (operators/detect/multivariate.py:phase2_limit), at a multivariate fit
    "jinja2",  # CMMS mapping templates (operators/cmms.py), when a mapping or path holds more than `{{ field }}`
    "sklearn",  # IsolationForest: loaded at an asset's first fit (operators/detect/iforest.py:fit_forest)
    "scipy.stats",  # through scikit-learn (and river.drift -> river.datasets); ~40 % of a process's import CPU
    "river.drift",  # ADWIN, where a new-normal watch starts (operators/detect/new_normal.py)
    "prophet",
    "sentence_transformers",
    "torch",
    "chromadb",
    "fastapi",
    "pandas",  # the flow used only its factorize: operators/ingest/codes.py (~0.3-0.45 CPU-s per process)
    "pyarrow",  # through pandas; the replay and file sources and the JSONL encoder import it themselves
)


def _loaded(modules: str) -> set[str]:
    code = (f"import sys\nimport {modules}\n"
            f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_flow_module_and_its_start_up_imports_load_no_library_it_uses_only_later() -> None:
    loaded = _loaded("smart_maintenance.dataflows.plant, smart_maintenance.stores.model_registry, "
                     "smart_maintenance.sinks.notify, smart_maintenance.dataflows.offload, "
                     "smart_maintenance.connectors.postgres.bulk")
    assert loaded == set()


def test_the_lazy_libraries_still_load_where_they_are_used() -> None:
    assert _loaded("smart_maintenance.operators.plan.scheduling") >= {"ortools"}


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n"
                          f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_multivariate_fit_and_a_cmms_template_still_find_their_libraries() -> None:
    assert "scipy.special" in _loaded_after(
        "from smart_maintenance.operators.detect.multivariate import phase2_limit\n"
        "assert phase2_limit(30, 3, 0.99) > 11.3")
    assert "jinja2" in _loaded_after(
        "from smart_maintenance.operators.cmms import render_path\n"
        "assert render_path('/wo/{{ id | upper }}', {'id': 'w1'}) == '/wo/W1'")


def test_building_the_flow_with_its_sinks_loads_no_library_it_uses_only_later() -> None:
    # build_flow imports its sinks and connectors (`dataflows/outputs.py`): the JSONL encoder they share loads
    # pyarrow only at its first encoding, which a flow without `out_dir` never reaches. Nothing connects here.
    env = {**os.environ, "SMART_MAINTENANCE__SOURCE": "kafka", "SMART_MAINTENANCE__KAFKA__BROKERS": '["127.0.0.1:9"]',
           "SMART_MAINTENANCE__POSTGRES__DSN": "postgresql://nobody@127.0.0.1:9/none",
           "SMART_MAINTENANCE__INCIDENTS__ENABLED": "false", "SMART_MAINTENANCE__CONSOLE": "false"}
    env.pop("SMART_MAINTENANCE__OUT_DIR", None)
    code = (f"import sys\nfrom smart_maintenance.dataflows.plant import build_flow\nbuild_flow()\n"
            f"print(' '.join(m for m in {LAZY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert set(out.stdout.split()) == set()


def test_the_jsonl_encoder_still_loads_pyarrow_when_it_encodes() -> None:
    assert "pyarrow" in _loaded_after(
        "from smart_maintenance.operators.ingest.encode import readings_jsonl\n"
        "from smart_maintenance.operators.records import Readings\n"
        "assert readings_jsonl(Readings.of([('p', 't', 0, 1.5)])).startswith(b'{\"asset_id\":\"p\"')")
