"""Every SQL statement in the product is parametrised: no values formatted into SQL text."""

import ast
from pathlib import Path

PRODUCT = Path(__file__).parents[2] / "smart_maintenance"


def _string_built(node: ast.AST) -> bool:
    """An f-string, `"..." % x`, `"...".format(...)` or `"..." + x`: SQL text built from values."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return isinstance(node.left, (ast.Constant, ast.JoinedStr)) or _string_built(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return isinstance(node.func.value, ast.Constant)  # sql.SQL(...).format(...) composes identifiers safely
    return False


def test_no_execute_call_gets_string_built_sql():
    offenders = []
    for path in PRODUCT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany", "copy") and node.args
                    and _string_built(node.args[0])):
                offenders.append(f"{path.relative_to(PRODUCT)}:{node.lineno}")
    assert offenders == []
    assert any(PRODUCT.rglob("postgres/sink.py"))  # the scan saw the SQL code


def test_the_scan_recognises_string_built_sql():
    bad = ['c.execute(f"SELECT * FROM t WHERE id = {x}")', 'c.execute("SELECT %s" % x)',
           'c.execute("SELECT {}".format(x))', 'c.execute("SELECT " + x)']
    good = ['c.execute("SELECT %s", [x])', 'c.execute(sql.SQL("SELECT {}").format(sql.Identifier(x)))']
    first = lambda src: ast.parse(src).body[0].value.args[0]  # noqa: E731
    assert all(_string_built(first(s)) for s in bad)
    assert not any(_string_built(first(s)) for s in good)
