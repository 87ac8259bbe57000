"""Shards of assets: the window step's key, so a batch makes one item per shard touched, not one per asset.

Live, a source's batch holds a few readings of each of many assets; keyed per asset, every asset's few
readings were an item of their own through the window step, and Bytewax's per-key routing, calls and
snapshots were paid per asset and batch (docs/performance.md, "Window step per shard"). Keyed by shard,
an item holds the readings of every asset of that shard in the batch.

Guarantees:
- an asset's shard is `crc32(asset_id) % shards`: the same in every process and run (Python's `hash()` is
  salted per process), so a resumed or rescaled flow finds each asset's state in the same shard;
- within an item the assets are in `asset_id` order and each asset's readings in arrival order (as
  `split_by_asset` gives them), so what the window step does is the same whatever the shard count.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from smart_maintenance.operators.ingest.parse import split_by_asset
from smart_maintenance.operators.records import AssetReadings, Readings

ShardItem = tuple[AssetReadings, ...]
"""The readings of a shard's assets in one batch, one `AssetReadings` per asset, in `asset_id` order."""


@lru_cache(maxsize=65_536)  # a plant's assets recur in every batch; invented ids cannot grow it past the bound
def shard_of(asset_id: str, shards: int) -> str:
    """The key of the asset's shard, stable across processes.

    >>> shard_of("pump-01", 64), shard_of("pump-01", 64) == shard_of("pump-01", 64), shard_of("pump-01", 1)
    ('61', True, '0')
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return str(zlib.crc32(asset_id.encode("utf-8", "surrogatepass")) % shards)


def split_by_shard(readings: Readings, shards: int) -> list[tuple[str, ShardItem]]:
    """One item per shard touched: its assets' readings, assets in `asset_id` order; shards in order of their
    first asset.

    >>> batch = Readings.of([("b", "t", 1, 0.0), ("a", "t", 2, 0.0), ("b", "t", 3, 0.0)])
    >>> [(k, [(a.asset_id, a.ts.tolist()) for a in item]) for k, item in split_by_shard(batch, 1)]
    [('0', [('a', [2]), ('b', [1, 3])])]
    """
    by_shard: dict[str, list[AssetReadings]] = {}
    for part in split_by_asset(readings):  # sorted by asset_id
        key = shard_of(part.asset_id, shards)
        items = by_shard.get(key)
        if items is None:
            by_shard[key] = [part]
        else:
            items.append(part)
    return [(key, tuple(parts)) for key, parts in by_shard.items()]
