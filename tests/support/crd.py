"""The CloudPilotPool CRD as a validator, close enough to the API server's to test against.

No Kubernetes API server runs here (the emulator does not validate), so this module does
what the API server does with a custom resource before storing it, in the same order:

1. **defaulting** (``default`` in the schema);
2. **structural schema validation**: the OpenAPI v3 schema converted to JSON Schema and run
   with ``jsonschema``. ``nullable`` becomes a ``null`` type; objects with declared
   properties get ``additionalProperties: false``, because ``kubectl apply`` (since 1.25)
   asks for strict field validation and an unknown field is an error, not pruned;
3. **list semantics**: ``x-kubernetes-list-type: map`` keys and ``set`` items are unique;
4. **CEL rules** (``x-kubernetes-validations``) evaluated with ``cel-python``, a real CEL
   implementation, with ``self`` bound to the node the rule sits on. As on the server, they
   run only on an object the schema accepted.

What it does not do: CEL cost estimation (approximated by :func:`unbounded_nodes`: every
list and string that a rule may walk must be bounded) and CEL type checking of the rules
against the schema (approximated by :func:`unknown_rule_fields`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

try:
    import celpy
except ImportError:  # pragma: no cover - cel-python belongs to the test extra
    celpy = None

__all__ = [
    "CRD_PATH",
    "EXAMPLES",
    "Problem",
    "apply_defaults",
    "cel_environment",
    "load_crd",
    "pool_schema",
    "problems",
    "structural_problems",
    "to_json_schema",
    "unbounded_nodes",
    "unknown_rule_fields",
    "walk",
]

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "cloudpilotpools.cloudpilot.io.yaml"
EXAMPLES = ROOT / "examples"

_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_RULES = "x-kubernetes-validations"


@dataclass(frozen=True)
class Problem:
    layer: str
    """``schema``, ``list`` or ``cel``: which check of the API server would refuse it."""
    path: str
    message: str

    def __str__(self) -> str:
        return f"[{self.layer}] {self.path}: {self.message}"


@cache
def _crd_document() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    documents = [d for d in yaml.load_all(CRD_PATH.read_text(), Loader=loader) if d]
    assert len(documents) == 1, f"{CRD_PATH} must hold exactly one CRD"
    return documents[0]


def load_crd() -> dict[str, Any]:
    """A fresh copy each call: tests may mutate what they get."""
    return copy.deepcopy(_crd_document())


def pool_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of the storage version."""
    crd = crd or load_crd()
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``.spec.queues[].name``), parents first."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


# -- conversion and validation ----------------------------------------------------------------


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 (Kubernetes flavour) to JSON Schema, for ``jsonschema``."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node and not node.get(_PRESERVE) and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = to_json_schema(pool_schema())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as the API server does."""
    value = copy.deepcopy(value)
    _default_into(schema, value)
    return value


def _default_into(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                _default_into(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_into(schema["items"], item)


def _json_path(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts) or "."


def _list_problems(schema: dict[str, Any], value: Any, path: str) -> Iterator[Problem]:
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from _list_problems(child, value[name], f"{path}.{name}")
        return
    if not isinstance(value, list):
        return
    kind = schema.get("x-kubernetes-list-type", "atomic")
    if kind == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen: set[tuple[Any, ...]] = set()
        for index, item in enumerate(value):
            key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
            if key in seen:
                duplicate = dict(zip(keys, key, strict=True))
                yield Problem("list", f"{path}[{index}]", f"Duplicate value: {duplicate}")
            seen.add(key)
    elif kind == "set":
        for index, item in enumerate(value):
            if item in value[:index]:
                yield Problem("list", f"{path}[{index}]", f"Duplicate value: {item!r}")
    if isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _list_problems(schema["items"], item, f"{path}[{index}]")


def cel_environment() -> Any:
    """A CEL environment; skips the calling test where ``cel-python`` is not installed (it
    is in the test extra), rather than passing it without evaluating a single rule."""
    if celpy is None:
        pytest.skip("cel-python is not installed: the CRD's CEL rules cannot be evaluated")
    return celpy.Environment()


@cache
def _program(rule: str) -> Any:
    environment = cel_environment()
    return environment.program(environment.compile(rule))


def _cel_problems(schema: dict[str, Any], value: Any, path: str) -> Iterator[Problem]:
    for rule in schema.get(_RULES, []):
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            where = path + rule.get("fieldPath", "")
            detail = f" (evaluation error: {result})" if isinstance(result, Exception) else ""
            yield Problem("cel", where or ".", rule.get("message", rule["rule"]) + detail)
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from _cel_problems(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_problems(schema["items"], item, f"{path}[{index}]")


def problems(obj: dict[str, Any]) -> list[Problem]:
    """Everything the API server would refuse in ``obj`` (a whole CloudPilotPool)."""
    schema = pool_schema()
    defaulted = apply_defaults(schema, obj)
    found = [
        Problem("schema", _json_path(error.absolute_path), error.message)
        for error in _validator().iter_errors(defaulted)
    ]
    if found:
        return found
    found += _list_problems(schema, defaulted, "")
    found += _cel_problems(schema, defaulted, "")
    return found


# -- checks of the schema itself ---------------------------------------------------------------

_STRUCTURAL_FORBIDDEN = ("$ref", "definitions", "allOf", "anyOf", "oneOf", "not", "uniqueItems")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Where the schema is not structural (the API server refuses such a v1 CRD), or breaks
    a rule this project keeps: every field below ``spec`` and ``status`` has a description,
    which is what ``kubectl explain`` shows."""
    found = []
    for path, node in walk(schema):
        free = node.get(_PRESERVE) or node.get("x-kubernetes-int-or-string")
        if "type" not in node and not free:
            found.append(f"{path or '.'}: no type")
        for key in _STRUCTURAL_FORBIDDEN:
            if key in node:
                found.append(f"{path}: uses {key}")
        if "properties" in node and "additionalProperties" in node:
            found.append(f"{path}: both properties and additionalProperties")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            found.append(f"{path}: array without an items schema")
        if node.get("x-kubernetes-list-type") == "map":
            required = set(node["items"].get("required", []))
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in required and "default" not in node["items"]["properties"][key]:
                    found.append(f"{path}: list-map key {key} neither required nor defaulted")
        if path.startswith((".spec", ".status")) and not node.get("description"):
            found.append(f"{path}: no description")
    metadata = schema["properties"].get("metadata", {})
    if set(metadata) - {"type"}:
        found.append(".metadata: only its type may be given")
    return found


def unbounded_nodes(schema: dict[str, Any], under: str = ".spec") -> list[str]:
    """Lists without ``maxItems`` and strings without ``maxLength`` or ``enum`` under
    ``under``. The API server estimates each CEL rule's worst-case cost from these bounds
    and refuses a CRD whose rules could cost too much; bounded inputs keep the estimate low
    whatever rule is added later."""
    found = []
    for path, node in walk(schema):
        if not path.startswith(under):
            continue
        if node.get("type") == "array" and "maxItems" not in node:
            found.append(f"{path}: array without maxItems")
        if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
            found.append(f"{path}: string without maxLength")
    return found


_CEL_WORDS = {
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "size",
    "startsWith",
    "endsWith",
    "matches",
    "contains",
}


def unknown_rule_fields(schema: dict[str, Any]) -> list[str]:
    """Field names used in CEL rules that the schema does not declare under the rule's node.

    The API server type-checks rules against the schema and refuses a CRD whose rule names
    a missing field; ``cel-python`` is dynamic and would quietly evaluate ``has(self.typo)``
    to false, so the names are checked here instead.
    """
    found = []
    for path, node in walk(schema):
        rules = node.get(_RULES, [])
        if not rules:
            continue
        declared = {p.rsplit(".", 1)[-1].rstrip("[]") for p, _ in walk(node)} - {""}
        for rule in rules:
            for name in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", rule["rule"]):
                if name not in declared and name not in _CEL_WORDS:
                    found.append(f"{path}: rule {rule['rule']!r} names unknown field {name}")
            field_path = rule.get("fieldPath")
            if field_path:
                target = node
                for part in field_path.strip(".").split("."):
                    target = target.get("properties", {}).get(part, {})
                if not target:
                    found.append(f"{path}: fieldPath {field_path} is not in the schema")
    return found
