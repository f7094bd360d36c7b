"""``cloudpilot demo`` closes its kubectl (an event loop and a Kubernetes client session)
however the story ends, a failure while preparing the namespace and Secrets included."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cloudpilot.commands import demo


def test_a_failed_preparation_still_closes_the_demos_kubectl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    story = demo.Demo(SimpleNamespace(url="http://127.0.0.1:1"), replicas=1)

    def refused() -> None:
        raise RuntimeError("the API emulator refused the namespace")

    monkeypatch.setattr(story, "_prepare", refused)
    try:
        with pytest.raises(RuntimeError, match="refused the namespace"):
            story.run()
        assert story.kubectl._loop.is_closed(), "the demo's event loop was left open"
    finally:
        if not story.kubectl._loop.is_closed():
            story.kubectl.close()
