"""The writer's name codes: ranked by code point, so that ordering staged rows by code orders them by name."""

from __future__ import annotations

import numpy as np

from smart_maintenance.connectors.postgres.sink import _codes


def test_ranked_codes_order_rows_as_their_names_by_code_point() -> None:
    names = np.array(["pump-b", "Pump-a", None, "pump-a", "pump-b", "\u00e9t\x00"], dtype=object)
    codes, uniques = _codes(names, ranked=True)
    assert uniques == ["Pump-a", "pump-a", "pump-b", "\u00e9t\ufffd"]  # code point order ("P" < "p" < "é")
    assert [uniques[c - 1] if c else None for c in codes] == ["pump-b", "Pump-a", None, "pump-a", "pump-b",
                                                              "\u00e9t\ufffd"]
    by_code = [str(names[i]) for i in np.argsort(codes, kind="stable") if codes[i]]
    assert by_code == sorted(by_code)


def test_unranked_codes_keep_the_order_of_first_appearance() -> None:
    codes, uniques = _codes(np.array(["b", "a", None, "b"], dtype=object))
    assert codes.tolist() == [1, 2, 0, 1] and uniques == ["b", "a"]
