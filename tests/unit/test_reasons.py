"""One vocabulary of reasons: every reason an Event, a condition or an audit line carries is
a Reason, and docs/reasons.md lists them all with what each means and what to do."""

from __future__ import annotations

import ast
from pathlib import Path

from cloudpilot import reasons
from cloudpilot.credentials.proxy import ProxyReason
from cloudpilot.memory import ErrorKind
from cloudpilot.reasons import Reason

PACKAGE = Path(reasons.__file__).parent
DOCS = Path(__file__).parents[2] / "docs" / "reasons.md"

# Where a reason is given: the callable, and the position of its reason argument.
REASON_ARGUMENT = {"Event": 1, "Notice": 1, "Condition": 2, "record": 2}


def test_error_classes_and_proxy_states_are_reasons() -> None:
    assert {k.value for k in ErrorKind} <= set(Reason)
    assert {p.value for p in ProxyReason} <= set(Reason)


def test_every_reason_is_explained() -> None:
    assert set(reasons.EXPLAINED) == set(Reason)


def test_no_reason_is_spelled_as_a_string_literal_in_the_operator() -> None:
    """Events (cycle_events.Event, teardown.Notice), conditions and audit lines take their
    reason from the vocabulary; a literal would be a reason the vocabulary does not know."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            position = REASON_ARGUMENT.get(name)
            if position is None or len(call.args) <= position:
                continue
            argument = call.args[position]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                if argument.value not in set(Reason):
                    offenders.append(f"{path.name}:{call.lineno}: {argument.value}")
                else:
                    offenders.append(f"{path.name}:{call.lineno}: {argument.value} (use Reason)")
    assert offenders == []


def test_the_check_above_can_fail() -> None:
    source = 'Event("Warning", "CreateFailed", "boom")'
    call = ast.parse(source).body[0].value  # type: ignore[attr-defined]
    assert isinstance(call.args[REASON_ARGUMENT["Event"]], ast.Constant)


def test_docs_list_every_reason_as_generated() -> None:
    assert reasons.markdown_table() in DOCS.read_text(), (
        "docs/reasons.md is out of date: paste cloudpilot.reasons.markdown_table() into it"
    )
