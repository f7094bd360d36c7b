"""Choosing the one catalogue entry a reference means, or refusing to guess.

Pure functions over what the driver listed. Names are not unique anywhere CloudPilot runs:
Neutron and Glance keep no uniqueness at all (a re-uploaded image keeps its name), and an
EC2 name filter returns every visible AMI of that name, one per owner. A name that matches
several usable entries is therefore a configuration error listing them all, never the first
of an unordered listing (nor the newest: anyone can publish a newer public AMI with the name
a pool asks for, which is how the "whoAMI" name-confusion attack works).

An image that cannot boot is not a candidate: Glance lists deactivated, queued and killed
images beside active ones (libcloud's 2.0 driver does not filter them), and EC2 lists
pending and failed AMIs. Retiring an image by deactivating it is how many sites re-upload
under the same name, and that must keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from cloudpilot.cloud.driver_protocol import Catalogued
from cloudpilot.models.queues import ConfigError, Lookup

C = TypeVar("C", bound=Catalogued)

USABLE_STATES = frozenset({"active", "available"})
"""Image states that boot: OpenStack's ``ACTIVE`` (Nova) / ``active`` (Glance), EC2's
``available``."""


class NotFoundError(LookupError):
    """A ``name:`` or id that the cloud does not know."""


def image_state(item: object) -> str | None:
    """The image's state as the driver reported it (OpenStack ``status``, EC2 ``state``),
    or ``None`` where the driver says nothing (then it is taken as usable)."""
    extra = getattr(item, "extra", None) or {}
    state = extra.get("status") or extra.get("state")
    return str(state) if state else None


def usable(item: object) -> bool:
    state = image_state(item)
    return state is None or state.lower() in USABLE_STATES


def describe(item: object) -> str:
    """``id`` plus what tells duplicates apart (owner, visibility, creation date), so the
    error shows enough to choose one without another listing."""
    extra = getattr(item, "extra", None) or {}
    details = [
        f"{label} {extra[key]}"
        for key, label in (
            ("owner_id", "owner"),
            ("owner_alias", "alias"),
            ("visibility", "visibility"),
            ("creation_date", "created"),
            ("created", "created"),
        )
        if extra.get(key)
    ]
    ident = str(getattr(item, "id", ""))
    return f"{ident} [{', '.join(details)}]" if details else ident


def unique(items: Sequence[C], ref: Lookup, kind: str, *, only_usable: bool = False) -> C:
    """The one entry ``ref`` names; a ``name:`` that matches several is a ``ConfigError``
    naming every match, one that matches none a :class:`NotFoundError`.

    ``only_usable`` (images): entries that cannot boot are left out first; if nothing is
    left, the error says which matches were left out and why.
    """
    attr = "name" if ref.by_name else "id"
    matches = [item for item in items if getattr(item, attr, None) == ref.value]
    if only_usable:
        unusable = [m for m in matches if not usable(m)]
        matches = [m for m in matches if usable(m)]
        if not matches and unusable:
            states = ", ".join(sorted(f"{m.id} is {image_state(m)}" for m in unusable))
            raise NotFoundError(f"{kind} {ref}: no usable {kind} of that name ({states})")
    if len(matches) > 1:
        listed = ", ".join(sorted(describe(m) for m in matches))
        raise ConfigError(
            f"{kind} {ref} matches {len(matches)} {kind}s ({listed}): give the id of the one "
            f"to use instead of its name"
        )
    if not matches:
        raise NotFoundError(f"{kind} {ref} not found in the cloud's catalogue")
    return matches[0]
