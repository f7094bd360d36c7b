"""The field reference tables of docs/configuration.md, from the generated schema.

One row per field: its path, type and bounds, default and the description ``kubectl
explain`` shows. A queue's CE-level overrides are the pool's fields (same schema), so under
``spec.queues[]`` only the queue's own fields get rows, and one row stands for the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_QUEUE_OWN = ("name", "replicas", "limits")


def _code(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == {}:
        return "`{}`"
    return f"`{value}`"


def _range(low: Any, high: Any, unit: str = "") -> str:
    if low is not None and high is not None:
        return f"{low} to {high}{unit}"
    if low is not None:
        return f"≥ {low}{unit}"
    return f"≤ {high}{unit}" if high is not None else ""


def type_of(node: dict[str, Any]) -> str:
    """``integer, 30 to 86400``, ``list, ≤ 16 items, of string (1 to 512 chars)``, ``map``."""
    kind = node.get("type", "")
    if "enum" in node:
        return " \\| ".join(_code(v) for v in node["enum"])
    if kind == "object":
        return "map" if node.get("x-kubernetes-preserve-unknown-fields") else "object"
    if kind == "array":
        item = type_of(node.get("items", {})).replace(", ", " (", 1)
        item += ")" if "(" in item and not item.endswith(")") else ""
        bound = _range(node.get("minItems"), node.get("maxItems"))
        text = "list" + (f", {bound} items," if bound else "") + f" of {item}"
        keys = node.get("x-kubernetes-list-map-keys")
        return text + (f"; {', '.join(keys)} unique" if keys else "")
    bound = ""
    if kind == "string":
        bound = _range(node.get("minLength"), node.get("maxLength"), " chars")
    elif kind in ("integer", "number"):
        bound = _range(node.get("minimum"), node.get("maximum"))
    text = kind + (f" ({node['format']})" if "format" in node else "")
    return f"{text}, {bound}" if bound else text


def _rows(
    node: dict[str, Any], path: str, required: bool, in_queue: bool
) -> Iterator[tuple[str, str, str, str]]:
    if "default" in node:
        default = _code(node["default"])
    elif required:
        default = "required"
    else:
        default = "the pool's" if in_queue else ""
    yield f"`{path}`", type_of(node), default, node.get("description", "")
    children = node.get("properties", {})
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        children, path, node = node["items"]["properties"], f"{path}[]", node["items"]
    for name, child in children.items():
        if path == "spec.queues[]" and name not in _QUEUE_OWN:
            continue
        yield from _rows(
            child,
            f"{path}.{name}",
            name in node.get("required", []),
            in_queue or path.startswith("spec.queues[]"),
        )
    if path == "spec.queues[]":
        others = ", ".join(f"`{n}`" for n in children if n not in _QUEUE_OWN)
        yield (
            "`spec.queues[].<option>`",
            "as on the pool",
            "the pool's",
            f"Any CE-level option, with the pool's schema and no default: {others}.",
        )


def _markdown(text: str) -> str:
    """A description as table cell text: ``name:<image name>`` must not read as HTML."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(node: dict[str, Any], path: str) -> str:
    """A Markdown table of ``node`` and every field below it."""
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    for cells in _rows(node, path, required=False, in_queue=False):
        *first, description = cells
        lines.append("| " + " | ".join([*first, _markdown(description)]) + " |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the lines between the markers of block ``name`` replaced."""
    begin = f"<!-- generated: {name} (python -m scripts.crdgen; do not edit by hand) -->\n"
    end = f"<!-- end generated: {name} -->\n"
    start = text.index(begin) + len(begin)
    stop = text.index(end, start)
    return text[:start] + content + text[stop:]
