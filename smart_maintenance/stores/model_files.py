"""Fitted detector models on disk: the model store a flow uses across restarts (see operators/detect/model_store.py)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from smart_maintenance.operators.records import stable_id

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class DirectoryModelStore:
    """`<root>/a-<hash of asset_id>/v<version>.pkl`, written atomically; the newest `keep` versions stay.

    Directories are named by a hash of the asset id, never by the id itself: an id is input, and
    a long or odd one (249+ characters, `..`, `/`) must not become a path. A store written before
    (`<readable id>-<6 hex>`) is still read for ids whose old name was a valid path.
    """

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def _dir(self, asset_id: str) -> Path:
        digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return self.root / f"a-{digest}"

    def _legacy_dir(self, asset_id: str) -> Path | None:
        name = _SAFE.sub("_", asset_id) + "-" + stable_id(asset_id)[:6]
        return self.root / name if len(name.encode()) <= 200 else None

    def _versions(self, d: Path) -> list[tuple[int, Path]]:
        if not d.is_dir():
            return []
        found = [(int(p.stem[1:]), p) for p in d.glob("v*.pkl") if p.stem[1:].isdigit()]
        return sorted(found)

    def save(self, asset_id: str, version: int, blob: bytes) -> None:
        d = self._dir(asset_id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".v{version}.pkl.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, d / f"v{version}.pkl")
        for _, old in self._versions(d)[: -self.keep]:
            old.unlink(missing_ok=True)

    def latest(self, asset_id: str) -> bytes | None:
        versions = self._versions(self._dir(asset_id))
        if not versions:
            legacy = self._legacy_dir(asset_id)
            versions = self._versions(legacy) if legacy is not None else []
        return versions[-1][1].read_bytes() if versions else None
