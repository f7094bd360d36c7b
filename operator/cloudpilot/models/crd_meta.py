"""Kubernetes-only facts about spec fields, written next to the fields they describe.

The models in :mod:`cloudpilot.models.spec` are the one source of the CRD's schema
(``python -m scripts.crdgen`` writes the CRD and the reference in docs/configuration.md from
them). Most of a field's schema comes from its type, bounds and docstring. What only the API
server checks, or only makes sense there, is attached with :func:`crd` as
``json_schema_extra``, under keys the generator reads and the operator never does:

* ``x-crd``: schema keywords the model does not enforce (patterns, ``maxLength`` and
  ``maxItems`` that bound CEL cost estimates, ``format``, list types, CEL rules). Keeping them
  out of the model is deliberate: a pool stored before a CRD upgrade is then still accepted
  by the operator as it was.
* ``x-crd-pool-default``: a default the API server fills in on the pool only. The same model
  classes hold a queue's overrides, where a default would always be set and the queue would
  never inherit the pool's value; the operator falls back to the same value (constants.py).
* ``x-crd-on-pool`` / ``x-crd-on-queue``: a sentence added to the description on the pool or
  under ``queues[]`` (what an unset value means there).
* ``x-crd-describe``: descriptions of the fields of a shared block in this one use (the
  ``key`` of a Secret reference says what the key holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (Secret, ConfigMap)."""
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A queue name: it goes into VM names and tags, valid on every cloud."""
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
"""A Secret or ConfigMap key."""
NO_SURROUNDING_SPACE = r"^\S(.*\S)?$"
"""Image, flavor and network entries (the operator would strip the space; DIRAC kept it)."""
NO_SPACE = r"^\S+$"
"""An OS package name."""
PYTHON_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
"""A libcloud Provider name or a dotted class path, nothing else."""

_UNSET: Any = object()

POOL_DEFAULT = "x-crd-pool-default"
ON_POOL = "x-crd-on-pool"
ON_QUEUE = "x-crd-on-queue"
DESCRIBE = "x-crd-describe"
ONLY_IN_CRD = "x-crd"
SCOPE = "x-crd-scope"
"""On a model: ``queue`` for the model under ``spec.queues[]`` (no pool defaults below it)."""

UNSET_MEANS_POOL = " Unset: the pool's value."


def crd(
    *,
    pool_default: Any = _UNSET,
    on_pool: str = "",
    on_queue: str = "",
    describe: Mapping[str, str] | None = None,
    list_map_keys: Sequence[str] = (),
    validations: Sequence[Mapping[str, str]] = (),
    **keywords: Any,
) -> dict[str, Any]:
    """``json_schema_extra`` for a field or a model: what the CRD says beyond the model.

    ``keywords`` are OpenAPI schema keywords spelled as in the CRD (``maxLength``,
    ``pattern``, ``format``).
    """
    extra: dict[str, Any] = {}
    only = dict(keywords)
    if list_map_keys:  # a list of objects keyed by these fields: unique, merged by key
        only["x-kubernetes-list-type"] = "map"
        only["x-kubernetes-list-map-keys"] = list(list_map_keys)
    if validations:
        only["x-kubernetes-validations"] = [dict(v) for v in validations]
    if only:
        extra[ONLY_IN_CRD] = only
    if pool_default is not _UNSET:
        extra[POOL_DEFAULT] = pool_default
    if on_pool:
        extra[ON_POOL] = on_pool
    if on_queue:
        extra[ON_QUEUE] = on_queue
    if describe:
        extra[DESCRIBE] = dict(describe)
    return extra
