"""A module a test plants on ``sys.path`` that leaves a marker file if it is ever imported:
how the allow-list tests show that a refused ``cloudType`` ran no code at all."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Planted", "planted_driver"]


@dataclass(frozen=True)
class Planted:
    module: str
    marker: Path

    @property
    def driver(self) -> str:
        """The class path a pool names: ``<module>.Driver``."""
        return f"{self.module}.Driver"

    def imported(self) -> bool:
        return self.module in sys.modules or self.marker.exists()


@contextmanager
def planted_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str, *, extra: str = ""
) -> Iterator[Planted]:
    """Write ``<module>.py`` whose ``Driver`` subclasses ``base`` (``pkg.module.Class``),
    put it on ``sys.path`` (of this process, where an in-thread operator runs too), and
    forget it afterwards."""
    module = f"cp_planted_{uuid.uuid4().hex}"
    marker = tmp_path / "imported"
    base_module, _, base_class = base.rpartition(".")
    (tmp_path / f"{module}.py").write_text(
        "from pathlib import Path\n"
        f"from {base_module} import {base_class} as _Base\n"
        f"Path({str(marker)!r}).write_text('side effect')\n"
        "class Driver(_Base):\n"
        "    pass\n" + extra
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield Planted(module, marker)
    finally:
        sys.modules.pop(module, None)
