"""Versioned trained models on disk, found by asset type.

Layout: `<root>/<asset_type>/<version>/model.pkl` + `meta.json`. The meta
records the version, when it was made, a sha256 of the training data (so a
model can be traced to exactly what it learned from), the sha256 of the
pickle (checked on load, a truncated copy fails loudly), its metrics and its
parameters. A version directory is written under a temporary name and renamed
into place, so a reader never sees half a model.

Pickles run code when loaded: only load registries you wrote yourself.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smart_maintenance.operators.predict.rul import ModelMeta

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AUTO = re.compile(r"^v(\d+)$")


class RegistryError(Exception):
    """A model in the registry is missing or does not match its meta."""




def data_sha256(arrays: Iterable[np.ndarray]) -> str:
    """A hash of training data: every array's dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: use letters, digits, '_', '.', '-' (at most 64, no leading dot)")
    return name


class ModelRegistry:
    """Save and load models under `root`; `latest(asset_type)` is what the flow loads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(
        self,
        asset_type: str,
        model: object,
        *,
        data_sha256: str,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        version: str | None = None,
        now: datetime | None = None,
    ) -> ModelMeta:
        """Store a new version (`v0001`, `v0002`, ... unless named) and return its meta."""
        _check(asset_type, "asset_type")
        if version is None:
            version = f"v{self._last_auto(asset_type) + 1:04d}"
        _check(version, "version")
        final = self.root / asset_type / version
        if final.exists():
            raise ValueError(f"{asset_type}/{version} already exists")
        now = now or datetime.now(timezone.utc)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        meta = ModelMeta(
            asset_type=asset_type,
            version=version,
            created_at=now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            data_sha256=data_sha256,
            model_sha256=hashlib.sha256(blob).hexdigest(),
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            params=dict(params or {}),
        )
        tmp = final.parent / f".{version}.tmp{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            (tmp / "model.pkl").write_bytes(blob)
            (tmp / "meta.json").write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return meta

    def load(self, asset_type: str, version: str | None = None) -> tuple[Any, ModelMeta]:
        """The model and its meta; the latest version when `version` is None."""
        if version is None:
            latest = self.latest(asset_type)
            if latest is None:
                raise RegistryError(f"no model for asset type {asset_type!r} in {self.root}")
            version = latest.version
        meta = self.meta(asset_type, version)
        blob = (self.root / _check(asset_type, "asset_type") / version / "model.pkl").read_bytes()
        if hashlib.sha256(blob).hexdigest() != meta.model_sha256:
            raise RegistryError(f"{asset_type}/{version}: model.pkl does not match its meta.json hash")
        return pickle.loads(blob), meta  # noqa: S301 our own registry, hash checked above

    def meta(self, asset_type: str, version: str) -> ModelMeta:
        path = self.root / _check(asset_type, "asset_type") / _check(version, "version") / "meta.json"
        try:
            return ModelMeta(**json.loads(path.read_text()))
        except FileNotFoundError as e:
            raise RegistryError(f"no model {asset_type}/{version} in {self.root}") from e

    def versions(self, asset_type: str) -> list[ModelMeta]:
        """All versions of an asset type, oldest first (by creation time, then name)."""
        d = self.root / _check(asset_type, "asset_type")
        if not d.is_dir():
            return []
        metas = [self.meta(asset_type, p.name) for p in d.iterdir()
                 if (p / "meta.json").is_file() and _NAME.match(p.name)]
        return sorted(metas, key=lambda m: (m.created_at, m.version))

    def latest(self, asset_type: str) -> ModelMeta | None:
        vs = self.versions(asset_type)
        return vs[-1] if vs else None

    def asset_types(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def _last_auto(self, asset_type: str) -> int:
        d = self.root / asset_type
        nums = [int(m.group(1)) for p in d.iterdir() if (m := _AUTO.match(p.name))] if d.is_dir() else []
        return max(nums, default=0)
