"""Layer rules that import-linter cannot check (it does not see compiled modules)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deltastore"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_codecs_imports_the_native_extension() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "deltastore._native" in _imports(path) and path.parent.name != "codecs"
    ]
    assert offenders == []
    assert "deltastore._native" in _imports(PACKAGE / "codecs" / "chunk.py")
