"""Pydantic's JSON Schema of ``PoolSpec`` turned into a Kubernetes structural schema.

Kubernetes wants every node inline (no ``$ref``), optional fields as plain types (no
``anyOf`` with ``null``), free-form maps as ``x-kubernetes-preserve-unknown-fields``, no
``additionalProperties: false`` next to ``properties`` (unknown fields are refused by the
API server's strict field validation anyway), and no ``title``. The metadata keys of
:mod:`cloudpilot.models.crd_meta` add what only the CRD has.
"""

from __future__ import annotations

from typing import Any

from cloudpilot.models import crd_meta as k8s
from cloudpilot.models.spec import PoolSpec

_ORDER = (
    "description",
    "type",
    "format",
    "nullable",
    "required",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "enum",
    "default",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "properties",
    "items",
    "x-kubernetes-validations",
)
"""Key order in the written YAML: what a field is first, its children last."""
_RULE_ORDER = ("rule", "message", "fieldPath", "reason")
_DROPPED = {"title", "additionalProperties", "anyOf", "$ref", "$defs"}
_META = {k8s.POOL_DEFAULT, k8s.ON_POOL, k8s.ON_QUEUE, k8s.ONLY_IN_CRD, k8s.SCOPE, k8s.DESCRIBE}


class SchemaError(ValueError):
    """The models say something a CRD cannot (a field without description, a union)."""


def spec_schema() -> dict[str, Any]:
    """The ``spec`` node of the CRD's openAPIV3Schema."""
    schema = PoolSpec.model_json_schema(by_alias=True, mode="validation")
    converted: dict[str, Any] = _convert(
        schema, schema.get("$defs", {}), in_queue=False, path="spec"
    )
    return converted


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``$ref`` followed and ``X | None`` unwrapped; the field's own keys win over the
    referenced model's (the field's docstring over the class docstring), metadata merged."""
    outer = {k: v for k, v in node.items() if k not in ("$ref", "anyOf")}
    inner = node
    if "anyOf" in node:
        branches = [n for n in node["anyOf"] if n.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaError(f"a union cannot be a structural schema: {node['anyOf']}")
        inner = branches[0]
    if "$ref" in inner:
        inner = {**defs[inner["$ref"].rsplit("/", 1)[-1]], **_without(inner, "$ref")}
        inner = _resolve(inner, defs)
    merged = {**inner, **outer}
    only = {**inner.get(k8s.ONLY_IN_CRD, {}), **outer.get(k8s.ONLY_IN_CRD, {})}
    if only:
        merged[k8s.ONLY_IN_CRD] = only
    return merged


def _without(node: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != key}


def _plain(value: Any) -> Any:
    """Integral floats as integers (``86400.0`` from a float constant is ``86400``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _convert(node: dict[str, Any], defs: dict[str, Any], *, in_queue: bool, path: str) -> Any:
    node = _resolve(node, defs)
    in_queue = in_queue or node.get(k8s.SCOPE) == "queue"
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key in _META or key in ("properties", "items"):
            continue
        if key == "default" and value is None:
            continue
        out[key] = _plain(value)
    if "description" in out:
        note = node.get(k8s.ON_QUEUE if in_queue else k8s.ON_POOL, "")
        out["description"] = " ".join(f"{out['description']}{note}".split())
    elif path != "spec":
        raise SchemaError(f"{path}: no description (give the field a docstring)")
    if not in_queue and k8s.POOL_DEFAULT in node:
        out["default"] = _plain(node[k8s.POOL_DEFAULT])
    if node.get("type") == "object" and node.get("additionalProperties") is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    out.update({k: _plain(v) for k, v in node.get(k8s.ONLY_IN_CRD, {}).items()})
    if "x-kubernetes-validations" in out:  # pydantic sorts keys: the rule first again
        out["x-kubernetes-validations"] = [
            {k: rule[k] for k in _RULE_ORDER if k in rule}
            for rule in out["x-kubernetes-validations"]
        ]
    if "properties" in node:
        out["properties"] = {
            name: _convert(child, defs, in_queue=in_queue, path=f"{path}.{name}")
            for name, child in node["properties"].items()
        }
        for name, text in node.get(k8s.DESCRIBE, {}).items():
            out["properties"][name]["description"] = text
    if "items" in node:
        out["items"] = _convert(node["items"], defs, in_queue=in_queue, path=f"{path}[]")
    unknown = set(out) - set(_ORDER)
    if unknown:
        raise SchemaError(f"{path}: keywords the generator does not place: {sorted(unknown)}")
    return {key: out[key] for key in _ORDER if key in out}
