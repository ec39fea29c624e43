"""The HTTP core must stay sans-IO: no asyncio, sockets, anyio or server imports."""

from __future__ import annotations

import ast
from pathlib import Path

import nea._http

FORBIDDEN = {"asyncio", "socket", "anyio", "uvloop", "selectors", "nea._server", "nea.server"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_http_core_imports_no_io() -> None:
    files = sorted(Path(nea._http.__file__).parent.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for name in imported_modules(path):
            root_matches = {name, name.split(".")[0]} & FORBIDDEN
            prefix_matches = {f for f in FORBIDDEN if name.startswith(f + ".")}
            assert not (root_matches or prefix_matches), f"{path.name} imports {name}"
