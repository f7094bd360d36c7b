"""What ``import-dirac-cfg`` decides that no DIRAC option spells out: the rules alone."""

from __future__ import annotations

import pytest

from cloudpilot.dirac_import_choices import (
    config_drive,
    explain_instance,
    family_of_image_name,
    template_family,
)
from cloudpilot.models.spec import TemplateFamily


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("CentOS-7-x86_64-GenericCloud-1905", TemplateFamily.CENTOS7),
        ("CentOS 7 (PVHVM)", TemplateFamily.CENTOS7),
        ("centos7-base", TemplateFamily.CENTOS7),
        ("rhel-7.9-x86_64", TemplateFamily.CENTOS7),
        ("sl7-worker", TemplateFamily.CENTOS7),
        ("AlmaLinux-9-GenericCloud-9.4-x86_64", TemplateFamily.EL9),
        ("Rocky-9-GenericCloud", TemplateFamily.EL9),
        ("rhel-9.4", TemplateFamily.EL9),
        ("CentOS-Stream-9-20240101", TemplateFamily.EL9),
        ("el9-pilot", TemplateFamily.EL9),
        ("Ubuntu 22.04", None),
        ("level-7-image", None),  # "el" inside a word is not EL
        ("CentOS-70-not-a-release", None),
    ],
)
def test_family_of_image_name(name: str, family: TemplateFamily | None) -> None:
    assert family_of_image_name(name) is family


def test_template_family_from_a_name_is_certain() -> None:
    choice = template_family("name:CentOS-7-x86_64-GenericCloud-1905")
    assert choice is not None
    assert (choice.field, choice.value) == ("context.templateFamily", "centos7")
    assert choice.certain
    assert "CentOS 7 image" in choice.reason


def test_a_raw_id_or_an_unknown_name_leaves_the_default_and_warns() -> None:
    for image in ("4f6b1c2e-0000-4000-8000-000000000001", "name:Ubuntu 22.04"):
        choice = template_family(image)
        assert choice is not None and choice.value is None and not choice.certain
        assert "default el9" in choice.reason
    inherited = template_family("gpu-image-uuid-0001", inherited="centos7")
    assert inherited is not None and "keeps the CE's centos7" in inherited.reason


def test_explicit_family_wins_and_no_image_inherits() -> None:
    choice = template_family("name:AlmaLinux-9", explicit="centos7")
    assert choice is not None and (choice.value, choice.certain) == ("centos7", True)
    assert template_family(None) is None


@pytest.mark.parametrize("cloud_type", ["OPENSTACK", "openstack", " OpenStack "])
def test_config_drive_for_openstack_only(cloud_type: str) -> None:
    choice = config_drive(cloud_type)
    assert choice is not None and choice.value is True
    assert config_drive("EC2") is None
    assert config_drive(None) is None


def test_networks_and_key_are_explained() -> None:
    named, key = explain_instance(
        {"networks": ["name:a", "0000-net"], "sshKey": "mysshkey", "image": "x"}
    )
    assert named.field == "instance.networks" and "looked up by the driver" in named.reason
    assert key.field == "instance.sshKey" and key.value == "mysshkey"
    (raw,) = explain_instance({"networks": ["0000-net"]})
    assert "without a lookup" in raw.reason and "Neutron" not in raw.reason
    assert explain_instance({}) == []
