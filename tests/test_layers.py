"""The packages' one-way contract (DESIGN.md): `pipeline` and `trainer` both import
`schemas`, never each other, and `schemas` imports neither; `retrieval` (using a trained
model) builds on `trainer` and `schemas`, and nothing below it imports it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"pipeline": {"trainer", "retrieval"}, "trainer": {"pipeline", "retrieval"},
             "schemas": {"pipeline", "trainer", "retrieval", "adswap"},
             "retrieval": {"pipeline"}}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downstream(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in files for name in imported_packages(path) & FORBIDDEN[package]}
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from trainer.train import train\n    import pipeline.x\n")
    assert imported_packages(module) == {"trainer", "pipeline"}
