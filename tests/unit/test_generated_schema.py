"""One schema source: the CRD and the configuration reference come from the models.

``python -m scripts.crdgen`` writes the CRD (and the chart's copy) and the field reference in
docs/configuration.md from ``cloudpilot.models.spec`` and the envelope
scripts/crdgen/envelope.yaml. The golden check below regenerates all of them and compares
byte for byte, so a model change without a regeneration (or a hand edit of a generated file)
fails here with the command to run. The cross-field rules are defined once
(``cloudpilot.models.rules``); the CEL the API server runs and the operator's Python check
must give the same verdict on the same pools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from scripts.crdgen import __main__ as generator
from scripts.crdgen.compare import differences
from scripts.crdgen.openapi import SchemaError, spec_schema

from cloudpilot.models import rules
from cloudpilot.models.queues import ConfigError, Lookup, effective_queues
from cloudpilot.models.spec import parse_spec
from tests.support.crd import cel_environment, pool_schema, problems


def test_generated_files_are_up_to_date() -> None:
    """The committed CRD, its chart copy and the docs' reference are the generator's output."""
    stale = [
        str(path.relative_to(generator.ROOT))
        for path, text in generator.outputs().items()
        if path.read_text() != text
    ]
    assert stale == [], f"out of date: {stale}; run `{generator.COMMAND}` and commit the result"


def test_check_fails_on_a_stale_file_and_the_generator_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The golden check can fail: a hand edit of the CRD is reported with the command, and
    running the generator restores the file."""
    targets = {}
    for name in ("CRD", "CHART_CRD", "DOCS"):
        copy = tmp_path / name
        copy.write_text(getattr(generator, name).read_text())
        monkeypatch.setattr(generator, name, copy)
        targets[name] = copy
    targets["CRD"].write_text(targets["CRD"].read_text().replace("maximum: 86400", "maximum: 9"))
    assert generator.main(["--check"]) == 1
    assert generator.COMMAND in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
    assert "maximum: 9\n" not in targets["CRD"].read_text()


def test_docs_keep_their_prose_around_the_generated_tables() -> None:
    text = generator.DOCS.read_text()
    for block in ("spec", "status"):
        assert f"<!-- generated: {block} " in text and f"<!-- end generated: {block} -->" in text
    assert "| `spec.context.maxLifetime` | integer, 60 to 31536000 | `1209600` |" in text
    assert "| `status.instances[].phase` | `Starting` \\| `Running`" in text
    assert "## From a DIRAC CE section to a pool" in text


def test_spec_schema_is_the_committed_one() -> None:
    """What the API server validates against is the model's schema, CEL rules included."""
    assert spec_schema() == pool_schema()["properties"]["spec"]
    spec_rules = pool_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert spec_rules == [rule.crd() for rule in rules.POOL_RULES]


def test_a_field_without_a_description_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kubectl explain`` shows the docstring: a field without one stops the generator."""
    from scripts.crdgen import openapi

    original = openapi._convert

    def stripped(node: dict[str, Any], defs: dict[str, Any], **kw: Any) -> Any:
        if kw["path"] == "spec.ce":
            node = {k: v for k, v in node.items() if k != "description"}
        return original(node, defs, **kw)

    monkeypatch.setattr(openapi, "_convert", stripped)
    with pytest.raises(SchemaError, match=r"spec\.ce: no description"):
        spec_schema()


# -- one definition per rule: CEL and Python agree ---------------------------------------------

_BASE = {
    "ce": "ce.example.org",
    "cloudType": "EC2",
    "credentialsSecret": {"name": "creds"},
    "instance": {"image": "ami-1", "flavor": "m5.large"},
}


def _without(spec: dict[str, Any], path: str) -> dict[str, Any]:
    spec = yaml.safe_load(yaml.safe_dump(spec))
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    del node[last]
    return spec


def _cases() -> list[Any]:
    cases: list[Any] = [pytest.param(_BASE, id="complete")]
    for rule in rules.REQUIRED_ON_POOL_OR_EVERY_QUEUE:
        field = rule.field
        bare = _without(_BASE, field)
        value = yaml.safe_load(yaml.safe_dump(_BASE))
        for part in field.split("."):
            value = value[part]
        on_queue = _set({"name": "a", "replicas": 1}, field, value)
        cases += [
            pytest.param(bare, id=f"{field}-nowhere"),
            pytest.param({**bare, "replicas": 2}, id=f"{field}-nowhere-replicas"),
            pytest.param({**bare, "queues": [on_queue]}, id=f"{field}-on-every-queue"),
            pytest.param({**bare, "queues": [on_queue, {"name": "b"}]}, id=f"{field}-one-queue"),
            pytest.param({**_BASE, "queues": [{"name": "b"}]}, id=f"{field}-pool-only"),
        ]
    cases += [
        pytest.param({**_BASE, "replicas": 3, "queues": [{"name": "a"}]}, id="replicas+queues"),
        pytest.param({**_BASE, "replicas": 3, "queues": []}, id="replicas+empty-queues"),
        pytest.param({**_BASE, "replicas": 0}, id="replicas-0"),
    ]
    dirac = {"endpoint": "https://d.example", "credentialsSecret": {"name": "t"}, "vo": "v"}
    dirac["site"] = "S"
    cases += [
        pytest.param({**_BASE, "dirac": dirac, "queues": [{"name": "a"}]}, id="dirac+queues"),
        pytest.param(
            {**_BASE, "dirac": {**dirac, "demand": {}}, "queues": [{"name": "a"}]},
            id="demand+queues",
        ),
        pytest.param({**_BASE, "dirac": {**dirac, "demand": {}}, "queues": []}, id="demand"),
    ]
    return cases


def _set(target: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = target
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return target


def _python_verdict(spec: dict[str, Any]) -> set[str]:
    """The messages of the rules the operator finds broken (its own wording aside)."""
    try:
        effective_queues(parse_spec(spec), namespace="ns", pool_name="p")
    except pydantic.ValidationError as error:
        return {r.message for r in rules.POOL_RULES if r.message in str(error)}
    except ConfigError as error:
        return {r.message for r in rules.REQUIRED_ON_POOL_OR_EVERY_QUEUE if r.field in str(error)}
    return set()


@pytest.mark.parametrize("spec", _cases())
def test_cel_and_python_give_the_same_verdict(spec: dict[str, Any]) -> None:
    cel_environment()
    pool = {
        "apiVersion": "cloudpilot.io/v1alpha1",
        "kind": "CloudPilotPool",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }
    by_cel = {p.message for p in problems(pool) if p.layer == "cel"}
    assert by_cel == _python_verdict(spec)


def test_the_verdict_cases_break_every_rule() -> None:
    """So that the comparison above cannot pass by never breaking anything."""
    broken = set().union(*(_python_verdict(c.values[0]) for c in _cases()))
    assert broken == {r.message for r in rules.POOL_RULES}


@pytest.mark.parametrize("text", ["name:", "name:x", "ami-1", "name", "x name:"])
def test_name_lookup_rule_agrees_with_the_parser(text: str) -> None:
    environment = cel_environment()
    import celpy

    program = environment.program(environment.compile(rules.NAME_NEEDS_A_NAME.rule))
    accepted_by_cel = bool(program.evaluate({"self": celpy.json_to_cel(text)}))
    try:
        Lookup.parse(text)
        accepted_by_python = True
    except ConfigError as error:
        assert rules.NAME_NEEDS_A_NAME.message in str(error)
        accepted_by_python = False
    assert accepted_by_cel == accepted_by_python


# -- the structural comparison used to check the first generated CRD ----------------------------


def test_compare_reports_type_and_text_changes_only() -> None:
    old = {"a": {"maximum": 600, "description": "one\n two"}, "b": [1, 2]}
    same = {"a": {"description": "one two", "maximum": 600}, "b": [1, 2]}
    assert list(differences(old, same)) == []
    new = {"a": {"maximum": 600.0, "description": "one three"}, "c": 1}
    assert list(differences(old, new)) == [
        ".a.maximum: 600 -> 600.0",
        ".a.description: 'one\\n two' -> 'one three'",
        ".b: removed (was [1, 2])",
        ".c: added (1)",
    ]
