"""The code stays navigable: no module over 800 lines, no private name imported across modules."""

import ast
from pathlib import Path

from fantasy_kg_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "fantasy_kg"
MAX_LINES = 800


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_800_lines() -> None:
    long = {
        str(p.relative_to(REPO_ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules along a real seam: {long}"


def test_no_private_name_imported_from_another_project_module() -> None:
    offenders = [
        f"{p.relative_to(REPO_ROOT)}:{node.lineno} imports {alias.name} from {node.module}"
        for p in _modules()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fantasy_kg")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not offenders, "make the name public where it lives: " + "; ".join(offenders)
