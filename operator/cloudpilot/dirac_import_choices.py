"""What ``import-dirac-cfg`` decides beyond copying an option, and why: pure functions.

Most DIRAC options map one to one onto a spec field (see :mod:`cloudpilot.dirac_import`).
A few things a site writes by hand have no DIRAC option, because DIRAC hard-coded them:

* **the template family.** DIRAC's default cloud-init template assumed a CentOS 7 image
  (yum, the CentOS 7 CVMFS repository); CloudPilot's default is ``el9``. A CE that boots a
  CentOS 7 image must say ``templateFamily: centos7`` or its VMs get the EL9 template
  (dnf) and never start a pilot. The family is read from the image *name* (``name:``
  references) or given explicitly (``--template-family``); a raw image id says nothing,
  so the import leaves the operator's default and warns.
* **the config drive.** DIRAC called ``create_node(..., ex_config_drive=True)`` on every
  cloud (which is why its EC2 CEs failed); on OpenStack that is what lets cloud-init read
  its data without the metadata service. The import keeps it for OpenStack CEs only,
  where the option exists, as ``instance.createOptions.ex_config_drive: true``.

Each function returns :class:`Choice` values (the field, its value, the reason) so the
import's report explains every choice, and so the rules are tested without any YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudpilot.models.spec import TemplateFamily

OPENSTACK = "openstack"
"""``CloudType`` of the clouds that take a config drive (libcloud's provider name)."""


@dataclass(frozen=True)
class Choice:
    """One field the import set (``value``) or left alone (``value is None``), and why."""

    field: str
    """The spec field, dotted (``context.templateFamily``)."""
    value: Any
    reason: str
    certain: bool = True
    """False when a human should check it (reported as a warning, not as information)."""


_FAMILIES: tuple[tuple[TemplateFamily, re.Pattern[str]], ...] = (
    (
        TemplateFamily.CENTOS7,
        re.compile(r"(?<![a-z])(centos|rhel|redhat|el|sl|scientific)[^a-z0-9]*7(\b|[^0-9])", re.I),
    ),
    (
        TemplateFamily.EL9,
        re.compile(
            r"(?<![a-z])(alma|almalinux|rocky|rhel|redhat|el|centos[^a-z0-9]*stream|oracle|ol)"
            r"[^a-z0-9]*9(\b|[^0-9])",
            re.I,
        ),
    ),
)
"""Image-name patterns of each family, tried in order (``CentOS-7-x86_64-GenericCloud-1905``,
``AlmaLinux-9-GenericCloud``, ``Rocky-9``, ``rhel-9.4``, ``CentOS-Stream-9``)."""


def family_of_image_name(name: str) -> TemplateFamily | None:
    """The template family an image name announces, or ``None`` when it says nothing."""
    for family, pattern in _FAMILIES:
        if pattern.search(name):
            return family
    return None


def template_family(
    image: str | None, explicit: str | None = None, inherited: str | None = None
) -> Choice | None:
    """``context.templateFamily`` for a level that sets ``Instance_Image`` (or ``None`` when
    the level sets neither an image nor an explicit family: it inherits).

    ``inherited``: the CE's family, when this is a queue with an image of its own; a queue
    whose image says nothing keeps it, which the reason says so that someone checks.
    """
    field = "context.templateFamily"
    fallback = (
        f"the queue keeps the CE's {inherited}: check that its image is that OS"
        if inherited
        else "the operator's default el9 applies"
    )
    if explicit is not None:
        chosen = TemplateFamily(explicit)
        return Choice(field, chosen.value, f"{chosen.value}, as --template-family says")
    if image is None:
        return None
    reference = image.strip()
    if not reference.startswith("name:"):
        return Choice(
            field,
            None,
            f"not set: the image {reference!r} is a raw id, which does not tell the OS; "
            f"{fallback} (DIRAC's template assumed CentOS 7: pass --template-family centos7 "
            f"if the image is CentOS 7)",
            certain=False,
        )
    family = family_of_image_name(reference.removeprefix("name:"))
    if family is None:
        return Choice(
            field,
            None,
            f"not set: the image name {reference!r} names neither EL9 nor CentOS 7; "
            f"{fallback} (use --template-family to choose)",
            certain=False,
        )
    described = "a CentOS 7 image" if family is TemplateFamily.CENTOS7 else "an EL9 image"
    return Choice(
        field,
        family.value,
        f"{family.value}: the image {reference!r} is {described} (DIRAC's template assumed "
        f"CentOS 7; CloudPilot's default is el9, which would use dnf on it)",
    )


def config_drive(cloud_type: str | None) -> Choice | None:
    """``instance.createOptions.ex_config_drive`` for a level whose ``CloudType`` is known."""
    if cloud_type is None or cloud_type.strip().lower() != OPENSTACK:
        return None
    return Choice(
        "instance.createOptions.ex_config_drive",
        True,
        "true: DIRAC's Cloud CE asked OpenStack for a config drive on every VM, so "
        "cloud-init reads its user data without the metadata service",
    )


def explain_instance(instance: Mapping[str, Any]) -> list[Choice]:
    """Why the copied ``Instance_Networks`` and ``Instance_SSHKey`` mean what they meant."""
    choices = []
    networks: Sequence[str] = instance.get("networks") or ()
    if networks:
        by_name = [n for n in networks if n.startswith("name:")]
        how = (
            "name: entries are looked up by the driver (Nova's os-networks with libcloud's "
            'default api_version 1.1, Neutron with driver.api_version "2.0"; a name that '
            "matches several networks is an error in the pool's Ready condition, not a "
            "guess); raw ids are used as they are, without a lookup"
            if by_name
            else "raw ids, used as they are, without a lookup"
        )
        choices.append(
            Choice("instance.networks", list(networks), f"{len(networks)} network(s): {how}")
        )
    if instance.get("sshKey"):
        choices.append(
            Choice(
                "instance.sshKey",
                instance["sshKey"],
                "the name of a key pair the cloud already holds (OpenStack: a Nova key pair), "
                "given to each VM as DIRAC did",
            )
        )
    return choices
