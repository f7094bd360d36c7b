"""The operator runs on its declared dependencies only: the image installs
``[project].dependencies`` and nothing else (Dockerfile), so a module of ``cloudpilot`` that
imports a test-only package (``kubernetes``: the tests' client for playing the user) would
fail in production, possibly only on the code path that imports it lazily."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = ("kubernetes",)


def _imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (lazy ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_of_the_operator_imports_a_test_only_package() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported(path) & set(TEST_ONLY))
        for path in (ROOT / "operator" / "cloudpilot").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_test_only_packages_are_declared_for_the_tests_and_not_for_the_image() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    runtime = names(project["dependencies"])
    test = names(project["optional-dependencies"]["test"])
    for package in TEST_ONLY:
        assert package not in runtime
        assert package in test
    pinned = (ROOT / "constraints.txt").read_text().lower().split()
    assert all(any(line.startswith(f"{p}==") for line in pinned) for p in TEST_ONLY)
