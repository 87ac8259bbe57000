"""Assets admitted out of quarantine, in PostgreSQL's `admitted_assets`: written by the CLI, read by the flow.

    with AdmissionStore(resolve_dsn(settings), settings.postgres.schema_name) as store:
        store.admit(["pump-07"], admitted_by="ana", note="new pump on line 3")
        store.admitted_ids()   # {"pump-07", ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from smart_maintenance.connectors.postgres.loop import _Connected

__all__ = ["AdmissionStore"]

_ADMIT = ("INSERT INTO {s}.admitted_assets (asset_id, admitted_by, note) SELECT unnest(%s::text[]), %s, %s "
          "ON CONFLICT (asset_id) DO NOTHING RETURNING asset_id")


class AdmissionStore(_Connected):
    """The admitted assets of one schema (migrated on first use)."""

    def admit(self, asset_ids: Sequence[str], *, admitted_by: str = "", note: str = "") -> list[str]:
        """Admit assets; returns those that were not admitted before."""
        query, ids = self._q(_ADMIT), list(dict.fromkeys(asset_ids))
        return [
            r[0] for r in self._run("admit assets", lambda c: c.execute(query, [ids, admitted_by, note]).fetchall())
        ]

    def admitted_ids(self) -> set[str]:
        query = self._q("SELECT asset_id FROM {s}.admitted_assets")
        return {r[0] for r in self._run("read admitted assets", lambda c: c.execute(query).fetchall())}

    def admitted(self) -> list[dict[str, Any]]:
        """Every admitted asset with who admitted it, when and why, in asset order."""
        query = self._q("SELECT asset_id, admitted_at, admitted_by, note FROM {s}.admitted_assets ORDER BY asset_id")

        def read(conn: psycopg.Connection) -> list[dict[str, Any]]:
            return conn.cursor(row_factory=dict_row).execute(query).fetchall()

        return self._run("list admitted assets", read)
