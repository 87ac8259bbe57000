"""The incident memory with the real model and a real embedded ChromaDB store in a temporary directory.

The model loads once for the module (about 5-10 s); everything else is fast.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from smart_maintenance.config.incident_settings import IncidentSettings
from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.incidents import Incident, from_dict
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.stores.incidents import IncidentMemory, IncidentMemoryError, ask

pytestmark = pytest.mark.integration

ROWS = [
    ("pump", ("vibration", "temperature"), "DE bearing growling, grease nipple dry, housing hot",
     "regreased bearings, refilled auto-lubricator"),
    ("pump", ("pressure", "flow"), "discharge pressure down, flow under duty point, impeller vanes eroded",
     "replaced impeller and wear rings"),
    ("pump", ("temperature",), "mechanical seal leaking, product dripping at the gland",
     "replaced mechanical seal cartridge"),
    ("compressor", ("discharge_pressure", "discharge_temp"), "2nd stage valve plate cracked, outlet temp high",
     "replaced discharge valve assembly"),
    ("compressor", ("oil_temp",), "oil black and smells burnt, oil change overdue",
     "changed oil and oil filter, flushed sump"),
    ("motor", ("winding_temp", "current"), "stator winding burnt, smell of varnish, tripped on overload",
     "installed spare motor, old one sent for rewind"),
    ("motor", ("vibration",), "high axial vibration at 2x running speed, coupling offset",
     "laser aligned motor to pump, shimmed feet"),
    ("conveyor", ("belt_speed", "motor_current"), "belt slipping on head pulley, take-up at end of travel",
     "re-tensioned belt and re-spliced"),
    ("conveyor", ("bearing_temp", "vibration"), "return idler seized and squealing",
     "replaced seized idler rollers"),
    ("conveyor", ("vibration",), "vibration signal spiking, accelerometer cable damaged",
     "replaced accelerometer cable"),
]


def _incidents() -> list[Incident]:
    return [from_dict({"incident_id": f"inc-{n}", "asset_id": f"{t}-0{n % 3 + 1}", "asset_type": t,
                       "sensors": list(s), "symptoms": sym, "resolution": fix, "outcome": "repaired",
                       "closed_at": f"2025-0{n % 9 + 1}-10T08:00:00Z"})
            for n, (t, s, sym, fix) in enumerate(ROWS)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("incidents")


@pytest.fixture(scope="module")
def memory(store: Path) -> IncidentMemory:
    m = IncidentMemory(IncidentSettings(), store)
    thread = m.warm()
    thread.join(120)
    assert not thread.is_alive()
    assert m.add(_incidents()) == 10
    return m


@pytest.mark.parametrize(("question", "asset_type", "expected"), [
    ("pump 7 screeching at the bearing, looks like nobody greased it", None, "inc-0"),
    ("P-112 can't reach its head any more, output tapering off", "pump", "inc-1"),
    ("the air compressor's lubricant went dark with a burnt smell", None, "inc-4"),
    ("motor M-12 shakes along the shaft axis, twice per revolution", None, "inc-6"),
    ("belt 2 loses speed under load, tensioner has no travel left", None, "inc-7"),
    ("one roller under the belt is stuck and squeals", "conveyor", "inc-8"),
])
def test_the_right_incident_comes_first(memory: IncidentMemory, question, asset_type, expected):
    hits = memory.similar(question, k=3, asset_type=asset_type)
    assert hits[0]["incident_id"] == expected, hits
    assert len(hits) == 3 and hits[0]["similarity"] >= hits[1]["similarity"] - 0.3
    assert hits[0]["resolution"] and hits[0]["asset_id"] and hits[0]["outcome"] == "repaired"


def test_asset_type_filter_and_fill_up(memory: IncidentMemory):
    hits = memory.similar("bearing running hot and noisy", k=3, asset_type="conveyor")
    assert [h["asset_type"] for h in hits] == ["conveyor"] * 3
    hits = memory.similar("bearing running hot and noisy", k=4, asset_type="compressor")  # only 2 compressors
    assert [h["asset_type"] for h in hits][:2] == ["compressor", "compressor"] and len(hits) == 4
    assert memory.similar("bearing running hot", k=3, asset_type="turbine")  # unknown type: the rest of the memory


def test_work_order_search_uses_type_and_sensors(memory: IncidentMemory):
    t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    wo = WorkOrder("w1", "motor-02", "a1", "repair", "open", 3, ("motors",), 180, t, t, t,
                   sensors=("winding_temp", "current"), reason="persistent (3 of last 5); detectors: iforest",
                   asset_type="motor")
    hits = memory.similar_for(wo)
    assert len(hits) == 3 and hits[0]["incident_id"] == "inc-5"
    assert [h["asset_type"] for h in hits][:2] == ["motor", "motor"]
    early = memory.similar_for(replace(wo, created_at=datetime(2025, 3, 1, tzinfo=timezone.utc)))
    assert early and all(h["closed_at"] < "2025-03-01" for h in early)  # nothing from the work order's future
    assert {h["incident_id"] for h in early} <= {"inc-0", "inc-1", "inc-9"}
    off = IncidentMemory(IncidentSettings(enabled=False), memory.data_dir)
    assert off.similar_for(wo) == []


def test_attach_and_remember_around_a_work_order(memory: IncidentMemory, store: Path):
    t = datetime(2026, 2, 1, tzinfo=timezone.utc)
    wo = WorkOrder("w-att", "pump-03", "a9", "repair", "open", 3, ("pumps",), 240, t, t, t,
                   sensors=("pressure", "flow"), reason="persistent (3 of last 5); detectors: limits",
                   asset_type="pump")
    [opened] = memory.attach([wo])
    assert len(opened.similar_incidents) == 3 and opened.similar_incidents[0]["incident_id"] == "inc-1"
    closed = replace(wo, status="done", revision=3, similar_incidents=())
    assert memory.attach([closed])[0].similar_incidents == opened.similar_incidents  # every revision keeps them
    fresh = IncidentMemory(IncidentSettings(), store)  # after a restart: no cache, same answer
    assert fresh.attach([closed])[0].similar_incidents == opened.similar_incidents
    done = MaintenanceRecord.from_dict({"asset_id": "pump-03", "completed_at": "2026-02-01T12:00:00Z",
                                        "work_order_id": "w-att", "action": "replaced impeller"})
    cancelled = MaintenanceRecord.from_dict({"asset_id": "pump-03", "completed_at": "2026-02-01T12:00:00Z",
                                             "outcome": "cancelled"})
    before = memory.count()
    assert memory.remember([(closed, done), (closed, cancelled)]) == 1
    assert memory.count() == before + 1
    assert memory.remember([(closed, done)]) == 1 and memory.count() == before + 1  # replayed: upserted
    assert memory.attach([replace(wo, work_order_id="w-next", created_at=datetime(2026, 3, 1, tzinfo=timezone.utc))]
                         )[0].similar_incidents[0]["work_order_id"] == "w-att"


def test_upsert_is_idempotent_and_persists_across_reopen(memory: IncidentMemory, store: Path):
    count = memory.count()
    assert memory.add(_incidents()[:3]) == 3
    assert memory.count() == count
    memory.close()
    reopened = IncidentMemory(IncidentSettings(), store)
    assert reopened.count() == count
    assert reopened.get("inc-3").symptoms.startswith("2nd stage valve plate")
    assert reopened.get("nope") is None
    assert reopened.similar("compressor valve broken, outlet hot", k=1)[0]["incident_id"] == "inc-3"


def test_import_jsonl_and_ask(memory: IncidentMemory, store: Path, tmp_path: Path):
    good = tmp_path / "history.jsonl"
    good.write_text(json.dumps({"asset_id": "pump-09", "asset_type": "pump", "symptoms": "cavitation noise, "
                                "suction strainer blocked", "resolution": "cleaned suction strainer",
                                "closed_at": "2024-05-01T12:00:00Z", "sensors": "pressure,vibration"}) + "\n\n")
    count = memory.count()
    assert memory.import_jsonl(good) == 1
    assert memory.count() == count + 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"asset_id": "x"}\n')
    with pytest.raises(IncidentMemoryError, match="bad.jsonl:3: incident: asset_type is required"):
        memory.import_jsonl(bad)
    with pytest.raises(IncidentMemoryError, match="cannot read"):
        memory.import_jsonl(tmp_path / "missing.jsonl")
    hits = ask(Settings(data_dir=store), "pump sounds like gravel in it", k=2, asset_type="pump")
    assert len(hits) == 2 and hits[0]["asset_id"] == "pump-09"
    out = tmp_path / "export.jsonl"
    assert memory.export_jsonl(out, page=4) == count + 1
    exported = [from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert {i.incident_id for i in exported} >= {f"inc-{n}" for n in range(10)} and len(exported) == count + 1
    assert next(i for i in exported if i.incident_id == "inc-0") == _incidents()[0]


def test_empty_memory_finds_nothing(tmp_path: Path):
    m = IncidentMemory(IncidentSettings(collection="empty-one"), tmp_path)
    assert m.count() == 0 and m.similar("anything", k=3) == []
    with pytest.raises(ValueError):
        m.similar("anything", k=0)


def test_a_missing_model_is_a_clear_error(tmp_path: Path):
    m = IncidentMemory(IncidentSettings(model_path=tmp_path / "no-model"), tmp_path)
    m.warm().join(10)
    with pytest.raises(IncidentMemoryError, match="no model folder"):
        m.embed(["x"])
    with pytest.raises(IncidentMemoryError, match="failed to load"):  # the failure is remembered, not retried
        m.embed(["x"])


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory) -> Iterator[str]:
    """A real ChromaDB server (the `chroma` command that comes with chromadb) on a free local port."""
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("no chroma command next to this Python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen([exe, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("chroma server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_store(memory: IncidentMemory, chroma_url: str, tmp_path: Path):
    remote = IncidentMemory(IncidentSettings(chroma_url=chroma_url, collection="plant-a"), tmp_path)
    assert remote.add(_incidents()) == 10 and remote.count() == 10
    assert remote.similar("oil smells burnt and looks black", k=1)[0]["incident_id"] == "inc-4"
    assert not (tmp_path / "chroma").exists()  # nothing was written locally
    again = IncidentMemory(IncidentSettings(chroma_url=chroma_url, collection="plant-a"), tmp_path)
    assert again.count() == 10


def test_unreachable_server_is_a_clear_error(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = IncidentMemory(IncidentSettings(chroma_url=f"http://127.0.0.1:{port}"), tmp_path)
    with pytest.raises(IncidentMemoryError, match="cannot open incident memory at http://127.0.0.1"):
        m.count()


def test_a_frozen_memory_indexes_but_does_not_find_what_this_run_remembered(store: Path):
    frozen = IncidentMemory(IncidentSettings(), store)
    frozen.freeze()
    t = datetime(2026, 4, 1, tzinfo=timezone.utc)
    wo = WorkOrder("w-frz", "pump-03", "a-frz", "repair", "open", 3, ("pumps",), 240, t, t, t,
                   sensors=("pressure", "flow"), reason="persistent (3 of last 5)", asset_type="pump")
    done = MaintenanceRecord.from_dict({"asset_id": "pump-03", "completed_at": "2026-04-01T12:00:00Z",
                                        "work_order_id": "w-frz", "action": "replaced impeller"})
    before = frozen.count()
    assert frozen.remember([(replace(wo, status="done"), done)]) == 1 and frozen.count() == before + 1
    later = replace(wo, work_order_id="w-frz-2", created_at=datetime(2026, 5, 1, tzinfo=timezone.utc))
    assert "w-frz" not in {h["work_order_id"] for h in frozen.similar_for(later)}  # as the run began
    live = IncidentMemory(IncidentSettings(), store)  # a live job (or the next replay) finds it
    assert "w-frz" in {h["work_order_id"] for h in live.similar_for(later)}


def test_the_incident_process_stores_and_finds_what_the_flow_process_did(memory: IncidentMemory, store: Path,
                                                                          tmp_path: Path):
    from smart_maintenance.dataflows.offload import RemoteIncidents

    t = datetime(2026, 6, 1, tzinfo=timezone.utc)
    wo = WorkOrder("w-rem", "pump-02", "a-rem", "repair", "done", 3, ("pumps",), 240, t, t, t,
                   sensors=("vibration",), reason="persistent (3 of last 5)", asset_type="pump")
    done = MaintenanceRecord.from_dict({"asset_id": "pump-02", "completed_at": "2026-06-01T12:00:00Z",
                                        "work_order_id": "w-rem", "action": "regreased bearings"})
    remote = RemoteIncidents(IncidentSettings(), tmp_path / "remote", frozen=True)
    assert remote.remember(((wo, done),)).result(timeout=300) == 1
    local = IncidentMemory(IncidentSettings(), tmp_path / "local")
    local.freeze()
    assert local.remember([(wo, done)]) == 1
    [incident_id] = local.open()._collection.get()["ids"]
    stored = IncidentMemory(IncidentSettings(), tmp_path / "remote").get(incident_id)  # read from this process
    assert stored is not None and stored == local.get(incident_id)
    later = replace(wo, work_order_id="w-rem-2", status="open", created_at=datetime(2026, 7, 1, tzinfo=timezone.utc))
    assert remote.attach((later,))[0].similar_incidents == ()  # empty when the replay began: nothing to find
    shared = RemoteIncidents(IncidentSettings(), store, frozen=False)  # the module's store, searched over there
    assert shared.attach((later,))[0].similar_incidents == memory.attach([later])[0].similar_incidents != ()
