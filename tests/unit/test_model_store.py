import pickle
import re
from dataclasses import replace

import numpy as np
import pytest

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.model_store import (
    MemoryModelStore,
    export_models,
    import_models,
    restore,
    save_if_refitted,
)
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import stable_id
from smart_maintenance.stores.model_files import DirectoryModelStore
from tests.synthetic import asset_day
from tests.unit.test_detect import _features

CFG = DetectConfig(warmup_windows=36, baseline_size=96, refit_blocks=4)


def _run(batches, state=None, store=None):
    scores, warming = [], []
    for fb in batches:
        before = state
        state, s = detect(state, fb, AssetProfile("x"), CFG)
        save_if_refitted(store, "x", before, state, CFG)
        scores.append(s.score)
        warming.append(s.warming_up)
    return state, np.concatenate(scores), np.concatenate(warming)


def test_a_restarted_flow_scores_at_once_and_like_the_running_one():
    batches = _features(asset_day(hours=12), 1000)
    store = MemoryModelStore()
    first, _, _ = _run(batches[:14], store=store)
    assert sorted(store.blobs["x"]) == list(range(1, first.version + 1)) and first.version >= 2
    restored = restore(store, "x", CFG)
    assert restored is not None and restored.version == first.version
    _, cont, _ = _run(batches[14:], first)
    _, again, warming = _run(batches[14:], restored)
    assert not warming.any()  # nothing to warm up: the stored models score straight away
    assert abs(cont.mean() - again.mean()) < 0.05 and again.max() < 0.6  # the last fit's models, not new ones


def test_models_of_another_configuration_are_not_loaded():
    state, _, _ = _run(_features(asset_day(hours=6), 5000))
    blob = export_models("x", state, CFG)
    assert import_models(blob, "x", CFG) is not None
    assert import_models(blob, "y", CFG) is None
    assert import_models(blob, "x", replace(CFG, lag_windows=3)) is None
    assert len(blob) < 256 * 1024 and pickle.loads(blob).version == state.version


def test_directory_store_keeps_the_newest_versions(tmp_path):
    store = DirectoryModelStore(tmp_path, keep=2)
    for v in (1, 2, 3):
        store.save("pump/01", v, f"blob{v}".encode())
    assert store.latest("pump/01") == b"blob3"
    assert store.latest("pump-02") is None
    (folder,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["v2.pkl", "v3.pkl"]


@pytest.mark.parametrize("asset_id", ["x" * 300, "../../etc", "a/b\\c", "pump\r\n01", "\udcff-surrogate", "."])
def test_directory_store_names_folders_by_hash_never_by_the_id(tmp_path, asset_id):
    store = DirectoryModelStore(tmp_path / "models")
    store.save(asset_id, 1, b"blob")
    assert store.latest(asset_id) == b"blob"
    (folder,) = list((tmp_path / "models").iterdir())
    assert re.fullmatch(r"a-[0-9a-f]{32}", folder.name)
    assert list(tmp_path.iterdir()) == [tmp_path / "models"]  # nothing escaped the root


def test_directory_store_still_reads_a_store_written_before(tmp_path):
    old = tmp_path / ("pump_01-" + stable_id("pump/01")[:6])  # the layout before hashed names
    old.mkdir()
    (old / "v4.pkl").write_bytes(b"old")
    store = DirectoryModelStore(tmp_path)
    assert store.latest("pump/01") == b"old"
    store.save("pump/01", 5, b"new")
    assert store.latest("pump/01") == b"new"
