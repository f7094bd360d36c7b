"""What the first pool would otherwise pay for, done while the operator starts.

Measured (docs/performance.md, "The first pool"): the first reconcile of a fresh process
spent about 0.6 s of CPU that later pools did not, on the critical path of a new pool's
first VM: libcloud's EC2 driver module imported in a worker thread, the built-in Jinja
templates compiled, and the first cloud-config parsed. The operator pays it once before it
starts watching, when nothing waits on it.

Nothing here talks to a cluster or a cloud; a failure only costs the first pool the time
again, so it is logged and never stops the operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

logger = logging.getLogger(__name__)

PRELOADED_PROVIDERS = ("EC2", "OPENSTACK")
"""libcloud providers whose driver modules are imported at start-up: the two the operator
is tested against (others are imported on first use, as before)."""


def preload(allowed_driver_classes: Iterable[str] = ()) -> float:
    """Import the drivers and compile the templates a first pool needs; returns seconds.

    ``allowed_driver_classes``: class paths the site allowed for ``cloudType`` (importing
    them is what the site asked for; nothing else outside libcloud is imported).
    """
    started = time.perf_counter()
    try:
        _drivers(frozenset(allowed_driver_classes))
        _templates()
    except Exception:
        logger.warning(
            "preloading for the first pool failed; it will pay on first use", exc_info=True
        )
    return time.perf_counter() - started


def _drivers(allowed: frozenset[str]) -> None:
    from cloudpilot.cloud import lookups  # noqa: F401  (imports libcloud's base classes)
    from cloudpilot.cloud.drivers import _no_openstack_prices, driver_class

    _no_openstack_prices()
    for cloud_type in (*PRELOADED_PROVIDERS, *sorted(allowed)):
        driver_class(cloud_type, allowed)


def _templates() -> None:
    from cloudpilot.context import templating, validation, variables

    for name in templating.builtin_names():
        source = templating.builtin(name)
        templating.environment_for(source).get_template(name)
    variables.stamp_script()
    validation.check_cloud_config("#cloud-config\nruncmd: ['true']\n", where="warm-up")
