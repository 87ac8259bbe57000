"""The JSON documents the record upserts send: NUL replaced, and the regex left out when there is none."""

from __future__ import annotations

import orjson

from smart_maintenance.connectors.postgres import schema
from smart_maintenance.connectors.postgres.schema import json_doc


def test_escaped_nuls_become_the_replacement_character_and_text_that_only_looks_like_one_stays():
    records = [{"raw": "a\x00b\x00", "text": "a\\u0000b", "both": "\\\x00", "n": 1}]
    got = orjson.loads(json_doc(records))
    assert got == [{"raw": "a\ufffdb\ufffd", "text": "a\\u0000b", "both": "\\\ufffd", "n": 1}]


def test_a_document_without_a_nul_is_not_searched_by_the_regex(monkeypatch):
    regex = schema._JSON_NUL

    class Counting:
        calls = 0

        def sub(self, repl, doc):
            Counting.calls += 1
            return regex.sub(repl, doc)

    monkeypatch.setattr(schema, "_JSON_NUL", Counting())
    clean = [{"anomaly_id": f"an-{i}", "reasons": ["vibration z=7.1"], "score": 0.9} for i in range(200)]
    assert json_doc(clean) == orjson.dumps(clean).decode()
    assert Counting.calls == 0  # 4.9 ms per 200 anomalies on the writer thread when it ran on every document
    assert json_doc([{"raw": "\x00"}]) == '[{"raw":"\\ufffd"}]'
    assert Counting.calls == 1
