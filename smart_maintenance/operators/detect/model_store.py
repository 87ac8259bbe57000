"""Fitted detectors, versioned and persisted, so that a restart does not begin from nothing.

Bytewax's recovery snapshots already carry every asset's `DetectorState`
while a job runs. A *new* job (a redeploy, a replay into a fresh recovery
directory, another worker count) starts with empty state and would spend the
warm-up (a day by default) unable to score. The model store closes that gap:

- after every fit (`DetectorState.version` changed) the dataflow saves
  `export_models(...)`: the whole detector state (ring of recent normal rows,
  robust baseline, compact forest, T² model; ~100-200 KB) as bytes;
- when an asset appears with no state, the dataflow asks the store for its
  latest blob and `import_models` turns it back into a fitted state, or None
  when it was made under a different detector configuration (feature layout,
  detectors, forest size), in which case the asset warms up as usual.

A store is anything with `save(asset_id, version, blob)` and
`latest(asset_id)`; `stores/model_files.py: DirectoryModelStore` keeps
`<root>/<asset_id>/v<version>.pkl` (written to a temporary name and renamed,
the last `keep` versions kept).
Pickles run code when loaded: only load stores you wrote yourself.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Protocol

from smart_maintenance.operators.detect.detectors import DetectConfig, DetectorState
from smart_maintenance.operators.records import stable_id

FORMAT = 1
# the DetectConfig fields that change what a fitted state holds or means
_SHAPE_FIELDS = ("detectors", "context_windows", "lag_windows", "slow_sensors", "drift_ratio", "n_trees",
                 "max_samples", "mv_variance", "mv_ridge", "mv_quantile", "baseline_size", "block")


class ModelStore(Protocol):
    def save(self, asset_id: str, version: int, blob: bytes) -> None: ...

    def latest(self, asset_id: str) -> bytes | None: ...


@dataclass(frozen=True)
class StoredModels:
    format: int
    config_key: str
    asset_id: str
    version: int
    state: DetectorState


def config_key(cfg: DetectConfig) -> str:
    """A fingerprint of the configuration a fitted state belongs to."""
    return stable_id(*(repr(getattr(cfg, f)) for f in _SHAPE_FIELDS))


def export_models(asset_id: str, state: DetectorState, cfg: DetectConfig) -> bytes:
    if not state.fitted:
        raise ValueError(f"{asset_id}: nothing fitted to export yet")
    return pickle.dumps(StoredModels(FORMAT, config_key(cfg), asset_id, state.version, state), protocol=5)


def import_models(blob: bytes, asset_id: str, cfg: DetectConfig) -> DetectorState | None:
    """The stored state if it was made for this asset under this configuration, else None."""
    stored = pickle.loads(blob)  # noqa: S301 the project's own model store
    if not isinstance(stored, StoredModels) or stored.format != FORMAT:
        return None
    if stored.asset_id != asset_id or stored.config_key != config_key(cfg):
        return None
    return stored.state


def restore(store: ModelStore | None, asset_id: str, cfg: DetectConfig) -> DetectorState | None:
    """What the dataflow calls for an asset without state."""
    if store is None:
        return None
    blob = store.latest(asset_id)
    return import_models(blob, asset_id, cfg) if blob is not None else None


def save_if_refitted(store: ModelStore | None, asset_id: str, before: DetectorState | None,
                     after: DetectorState, cfg: DetectConfig) -> bool:
    """What the dataflow calls after `detect`: persist a state whose models were (re)fitted."""
    if store is None or not after.fitted or (before is not None and before.version == after.version):
        return False
    store.save(asset_id, after.version, export_models(asset_id, after, cfg))
    return True


class MemoryModelStore:
    """Blobs in a dict: tests, and a single process that restarts its flow."""

    def __init__(self) -> None:
        self.blobs: dict[str, dict[int, bytes]] = {}

    def save(self, asset_id: str, version: int, blob: bytes) -> None:
        self.blobs.setdefault(asset_id, {})[version] = blob

    def latest(self, asset_id: str) -> bytes | None:
        versions = self.blobs.get(asset_id)
        return versions[max(versions)] if versions else None


__all__ = ["MemoryModelStore", "ModelStore", "StoredModels", "config_key",
           "export_models", "import_models", "restore", "save_if_refitted"]
