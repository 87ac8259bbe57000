"""Untrusted values described safely, and the names the flow accepts.

Everything a device, gateway or person sends is untrusted: a value may be a
string of megabytes or a list nested a thousand levels deep. `str()` or
`repr()` of such a container recurses and raises `RecursionError`, so dead-letter
details are built with `describe`, which never recurses and is bounded.

Names (asset and sensor ids) become dictionary keys, metric labels, database
keys and log fields: `name_problem` says why one is refused (`bad_name`).

Guarantees: `describe` returns at most `limit` + 3 characters for any input and
never raises; `name_problem` is O(len(name)).
"""

from __future__ import annotations

from typing import Any

MAX_NAME_LEN = 128
"""Default longest asset or sensor id, in characters (setting `limits.max_name_len`)."""


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut.

    >>> clip("abcdef", 4), clip("abc", 4)
    ('abcd...', 'abc')
    """
    return text if len(text) <= limit else text[:limit] + "..."


def describe(value: Any, limit: int = 80) -> str:
    """A short, safe text for an untrusted value: scalars as `repr`, containers by type and size.

    >>> describe("x" * 200, 10), describe([[[1]]]), describe({"a": 1}), describe(2.5)
    ("'xxxxxxxxx...", 'a JSON list of 1 item(s)', 'a JSON object of 1 item(s)', '2.5')
    """
    t = type(value)
    if t is str:
        return clip(repr(value[: limit + 1]), limit)
    if t is bool or value is None:
        return repr(value)
    if t is int:  # a 5,000-digit int cannot be turned into text (ValueError); its size is enough
        return repr(value) if -(10**30) < value < 10**30 else f"an integer of about {value.bit_length()} bits"
    if t is float:
        return repr(value)
    if t is list or t is tuple:
        return f"a JSON list of {len(value)} item(s)"
    if t is dict:
        return f"a JSON object of {len(value)} item(s)"
    return f"a {t.__name__}"


def name_problem(name: str, max_len: int = MAX_NAME_LEN) -> str | None:
    """Why `name` cannot be an asset or sensor id, or None when it can.

    Refused: longer than `max_len` characters, or any character that is not
    printable (control characters, CR/LF, tabs, zero-width and line separators).

    >>> name_problem("pump-01"), name_problem("a\\nb"), name_problem("x" * 200, 128)
    (None, 'contains a control or non-printable character', 'is 200 characters long (limit 128)')
    """
    if len(name) > max_len:
        return f"is {len(name)} characters long (limit {max_len})"
    if not name.isprintable():
        return "contains a control or non-printable character"
    return None
