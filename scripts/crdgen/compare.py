"""``python -m scripts.crdgen.compare OLD NEW``: the structural difference of two CRDs.

Compares the parsed documents, not the text: every key path whose value differs, is only
in one of them, or changed type (``600`` and ``600.0`` count as different, so a default
that turned into a float shows). Descriptions are compared whitespace-normalised, as YAML
folding makes line breaks meaningless. Exit status 1 when anything differs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def differences(old: Any, new: Any, path: str = "") -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            where = f"{path}.{key}"
            if key not in new:
                yield f"{where}: removed (was {old[key]!r})"
            elif key not in old:
                yield f"{where}: added ({new[key]!r})"
            else:
                yield from differences(old[key], new[key], where)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif isinstance(old, str) and isinstance(new, str):
        if " ".join(old.split()) != " ".join(new.split()):
            yield f"{path}: {old!r} -> {new!r}"
    elif type(old) is not type(new) or old != new:
        yield f"{path}: {old!r} -> {new!r}"


def main(argv: list[str]) -> int:
    old, new = (yaml.safe_load(Path(p).read_text()) for p in argv)
    found = list(differences(old, new))
    print("\n".join(found) if found else "no structural difference")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
