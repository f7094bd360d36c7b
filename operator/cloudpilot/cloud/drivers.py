"""Build libcloud drivers from a pool's ``cloudType`` and ``driver`` options.

``cloudType`` is a libcloud ``Provider`` name in any case (``openstack``, ``EC2``) or, as in
the seed, a fully qualified ``pkg.module.Class`` naming a ``NodeDriver`` subclass, which the
operator's administrator must have allowed (``operator.allowedDriverClasses``). Driver
options keep their YAML types (DIRAC passed every ``Driver_*`` value as a string, so
``Driver_secure = False`` silently meant HTTPS).
"""

from __future__ import annotations

import functools
import importlib
from functools import lru_cache
from typing import Any

from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import Provider, get_driver

from cloudpilot.cloud.driver_protocol import ComputeDriver
from cloudpilot.models.queues import ConfigError
from cloudpilot.settings import ALLOWED_DRIVER_CLASSES_VALUE, ALLOWED_DRIVER_CLASSES_VARIABLE


@lru_cache(maxsize=64)
def driver_class(cloud_type: str, allowed: frozenset[str] = frozenset()) -> type[NodeDriver]:
    """Resolve ``cloudType``; raises ConfigError with the accepted spellings.

    A dotted name is imported only if it is on ``allowed``, the operator's allow-list
    (``CLOUDPILOT_ALLOWED_DRIVER_CLASSES``): whoever may create a pool must not be able to
    make the operator import a module of their choosing (importing runs its code). The
    check comes before any import.
    """
    if "." in cloud_type:
        if cloud_type not in allowed:
            raise ConfigError(refusal(cloud_type, allowed))
        module_name, _, class_name = cloud_type.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"cloudType {cloud_type!r}: cannot import {module_name}: {exc}"
            ) from None
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, NodeDriver)):
            raise ConfigError(f"cloudType {cloud_type!r} is not a libcloud NodeDriver class")
        return cls
    provider = getattr(Provider, cloud_type.upper(), None)
    if provider is None:
        raise ConfigError(
            f"cloudType {cloud_type!r} is not a libcloud compute provider "
            "(e.g. OPENSTACK, EC2, GCE, AZURE_ARM) nor an allowed pkg.module.Class path"
        )
    try:
        return get_driver(provider)
    except Exception as exc:  # libcloud raises bare Exceptions for removed providers
        raise ConfigError(f"cloudType {cloud_type!r}: {exc}") from None


def refusal(cloud_type: str, allowed: frozenset[str]) -> str:
    """Why a class path was refused, and how an administrator allows it."""
    listed = ", ".join(sorted(allowed)) if allowed else "none"
    return (
        f"cloudType {cloud_type!r} is a driver class the operator does not allow "
        f"(allowed: {listed}); use a libcloud provider name (e.g. OPENSTACK, EC2), or ask "
        f"the operator's administrator to add the class to the Helm value "
        f"{ALLOWED_DRIVER_CLASSES_VALUE} (environment {ALLOWED_DRIVER_CLASSES_VARIABLE})"
    )


@functools.cache
def _no_openstack_prices() -> None:
    """libcloud has no OpenStack prices and re-reads its 2 MB pricing file for every flavor
    of ``list_sizes()`` (65 ms each: 2.3 s for 35 flavors). Prices are never used here."""
    from libcloud import pricing

    pricing.set_pricing("compute", "openstack", {})


def build_driver(
    cloud_type: str,
    key: str,
    secret: str | None,
    options: dict[str, Any],
    allowed: frozenset[str] = frozenset(),
) -> ComputeDriver:
    """A new driver instance. Each worker thread gets its own: libcloud connections keep
    per-request state and are not safe to share between threads. ``allowed``: the class
    paths ``cloud_type`` may name (see :func:`driver_class`)."""
    _no_openstack_prices()
    cls = driver_class(cloud_type, allowed)
    args: tuple[Any, ...] = (key,) if secret is None else (key, secret)
    try:
        return cls(*args, **options)
    except (TypeError, ValueError, NotImplementedError) as exc:
        # Raised while checking arguments (EC2's "Invalid region", OpenStack's unknown
        # api_version): retrying cannot help, the spec must change.
        raise ConfigError(f"driver options rejected by {cls.__name__}: {exc}") from None
