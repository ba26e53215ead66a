"""Size limits that keep the source readable one piece at a time (issue 15): no class in ``collectors/`` over
400 lines, no function over 80 lines in the source packages. Read with ``ast`` from the files themselves."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("permwatch", "collectors", "processor", "alerts")
MAX_CLASS_LINES = 400
"""for classes in collectors/"""
MAX_FUNCTION_LINES = 80


def definitions(package: str) -> Iterator[tuple[str, ast.AST, int]]:
    """(where, node, lines) for every class and function (methods and nested ones included) of ``package``."""
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no source found under {package}/"
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node, lines


def test_no_function_is_over_80_lines() -> None:
    too_long = [
        f"{where} ({lines} lines)"
        for package in PACKAGES
        for where, node, lines in definitions(package)
        if not isinstance(node, ast.ClassDef) and lines > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_no_collector_class_is_over_400_lines() -> None:
    too_long = [
        f"{where} ({lines} lines)"
        for where, node, lines in definitions("collectors")
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES
    ]
    assert too_long == []


def test_the_limits_see_what_they_measure() -> None:
    """The walk finds functions and classes of every size (a check that sees nothing would pass by itself)."""
    found = [(node, lines) for package in PACKAGES for _, node, lines in definitions(package)]
    functions = [lines for node, lines in found if not isinstance(node, ast.ClassDef)]
    classes = [lines for node, lines in found if isinstance(node, ast.ClassDef)]
    assert len(functions) > 500 and len(classes) > 100
    assert max(functions) > 40 and max(classes) > 200
