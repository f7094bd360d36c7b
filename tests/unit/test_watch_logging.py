"""The operator's log at a thousand pools: no line per watch event, failures still shown."""

from __future__ import annotations

import logging

import pytest

from cloudpilot.kube import handlers


def test_the_watch_handlers_success_is_not_logged_but_its_failure_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handlers._quiet_watch_handler()
    handlers._quiet_watch_handler()  # registering twice installs one filter
    kopf_objects = logging.getLogger("kopf.objects")
    assert sum(isinstance(f, handlers._QuietWatchHandler) for f in kopf_objects.filters) == 1

    with caplog.at_level(logging.INFO, logger="kopf.objects"):
        kopf_objects.info("Handler %r succeeded.", handlers.WATCH_HANDLER)
        kopf_objects.info("Handler 'register.<locals>.pool_deleted' succeeded.")
        kopf_objects.error("Handler %r failed temporarily: boom", handlers.WATCH_HANDLER)

    assert [r.getMessage() for r in caplog.records] == [
        "Handler 'register.<locals>.pool_deleted' succeeded.",
        "Handler 'pool-event' failed temporarily: boom",
    ]
