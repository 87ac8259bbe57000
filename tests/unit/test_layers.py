"""The layer rules of the layout (README, Layout), checked on the package's own imports."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "smart_maintenance"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions and TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in (PACKAGE / folder).rglob("*.py")
        for module in _imports(path)
        if module.startswith(forbidden)
    )


def test_operators_are_pure():
    forbidden = tuple(f"smart_maintenance.{p}" for p in
                      ("connectors", "stores", "sinks", "sources", "report", "dataflows", "cli")) + ("bytewax",
                                                                                                  "psycopg",
                                                                                                  "confluent_kafka",
                                                                                                  "paho", "chromadb")
    assert _offenders("operators", forbidden) == []


def test_only_dataflows_know_bytewax_operators():
    outside = [p for p in PACKAGE.rglob("*.py") if "dataflows" not in p.parts
               and "bytewax.operators" in _imports(p)]
    assert outside == []


def test_sinks_and_sources_do_not_import_each_other():
    assert _offenders("sinks", ("smart_maintenance.sources",)) == []
    assert _offenders("sources", ("smart_maintenance.sinks",)) == []


def test_a_connector_never_imports_its_peer_side():
    offenders = []
    for system in (PACKAGE / "connectors").iterdir():
        if not system.is_dir():
            continue
        sides = {"source": f"smart_maintenance.connectors.{system.name}.sink",
                 "sink": f"smart_maintenance.connectors.{system.name}.source"}
        for side, peer in sides.items():
            path = system / f"{side}.py"
            if path.exists() and peer in _imports(path):
                offenders.append(f"{system.name}/{side}.py imports {peer}")
    assert offenders == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from smart_maintenance.sinks.files import x\n")
    assert "smart_maintenance.sinks.files" in _imports(f)
