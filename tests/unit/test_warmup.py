"""What the operator loads at start-up so that its first pool does not pay for it."""

from __future__ import annotations

import sys

import pytest

from cloudpilot import warmup
from cloudpilot.context import templating


def test_preload_compiles_every_builtin_template_and_imports_the_drivers() -> None:
    templating.environment_for.cache_clear()
    warmup.preload()
    for name in templating.builtin_names():
        env = templating.environment_for(templating.builtin(name))
        # Jinja keeps compiled templates in its environment's cache: compiled already.
        assert any(key[1] == name for key in env.cache or {}), name
    assert "libcloud.compute.drivers.ec2" in sys.modules
    assert "libcloud.compute.drivers.openstack" in sys.modules


def test_a_render_reuses_the_compiled_template() -> None:
    """A new environment per render compiled the templates again for every new pool."""
    source = templating.TemplateSource("t.j2", "#cloud-config\n# {{ x }}\n", "test template")
    templating.environment_for.cache_clear()
    assert templating.render_source(source, {"x": 1}) == b"#cloud-config\n# 1\n"
    assert templating.render_source(source, {"x": 2}) == b"#cloud-config\n# 2\n"
    info = templating.environment_for.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_a_failing_preload_never_stops_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[str]:
        raise RuntimeError("no templates")

    monkeypatch.setattr(templating, "builtin_names", broken)
    assert warmup.preload() >= 0.0
