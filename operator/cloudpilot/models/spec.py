"""The ``CloudPilotPool`` spec as typed data.

The CRD's structural schema rejects most bad input at ``kubectl apply`` time; this model is
the operator's own check of the same rules (and of a few the schema cannot express), so a
pool written before a CRD upgrade, or applied to a cluster without schema validation, gets a
clear ``InvalidConfig`` condition instead of a traceback.

Field names follow ../shared/guides/api.md; each maps a seed option of DIRAC's Cloud CE.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from cloudpilot import constants

QueueName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
Replicas = Annotated[int, Field(ge=0, le=constants.MAX_REPLICAS)]
"""A queue's desired VM count. Bounded here as in the CRD, so a pool stored under an older
CRD without the bound is refused (InvalidConfig) rather than planned."""
Lookup = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
"""A raw cloud id, or ``name:<name>`` to look the id up by name (seed ``Instance_*``)."""


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, not ignored,
    so a typo in a manifest is reported instead of silently doing nothing."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class ScaleDownPolicy(StrEnum):
    DRAIN = "Drain"
    """Scale down removes VMs still starting; running pilots are left to finish their job."""
    DELETE_RUNNING = "DeleteRunning"
    """Scale down also destroys running pilots (newest first), killing their jobs."""


class TemplateFamily(StrEnum):
    EL9 = "el9"
    CENTOS7 = "centos7"


class SecretRef(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class SecretKeyRef(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class ConfigMapKeyRef(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class InstanceSpec(_Model):
    image: Lookup | None = None
    flavor: Lookup | None = None
    networks: list[Lookup] | None = None
    ssh_key: str | None = None
    create_options: dict[str, Any] | None = None
    """Extra keyword arguments for libcloud's ``create_node`` (``ex_security_groups``,
    ``ex_config_drive`` ...): the driver-specific knobs the seed hard-coded for OpenStack."""
    spot: bool | None = None
    """Run the VMs on the spot market (EC2 ``InstanceMarketOptions``): cheaper, and the
    cloud may reclaim them; reclaims are counted and posted as Events."""
    spot_max_price: (
        Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$")] | None
    ) = None
    """Most to pay per VM-hour on the spot market (a decimal string); unset: on-demand price."""


class ContextSpec(_Model):
    template: ConfigMapKeyRef | None = None
    template_family: TemplateFamily | None = None
    ext_packages: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    max_lifetime: Annotated[int, Field(ge=60, le=constants.MAX_LIFETIME_SECONDS)] | None = None
    halt_grace_period: Annotated[int, Field(ge=0, le=86_400)] | None = None
    user_data_limit: Annotated[int, Field(ge=1024, le=constants.MAX_USER_DATA_LIMIT)] | None = None


class PilotSpec(_Model):
    executable_secret: SecretKeyRef | None = None
    proxy_secret: SecretKeyRef | None = None


class LimitsSpec(_Model):
    max_instances: Annotated[int, Field(ge=0, le=constants.MAX_LIMIT)] | None = None
    max_starting: Annotated[int, Field(ge=1, le=constants.MAX_LIMIT)] | None = None


class BackoffSpec(_Model):
    initial_seconds: Annotated[float, Field(ge=1, le=constants.MAX_BACKOFF_SECONDS)] | None = None
    max_seconds: Annotated[float, Field(ge=1, le=constants.MAX_BACKOFF_SECONDS)] | None = None


class ClosedLoopSpec(_Model):
    """How a queue listens to its pilots (cloudpilot.outcomes; docs/closed-loop.md)."""

    enabled: bool | None = None
    fizzle_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = None
    backoff_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = None
    max_backoff_seconds: Annotated[int, Field(ge=1, le=604_800)] | None = None
    window_seconds: Annotated[int, Field(ge=60, le=604_800)] | None = None


class _Overridable(_Model):
    """The CE-level options; a queue may override any of them."""

    cloud_type: Annotated[str, StringConstraints(min_length=1)] | None = None
    driver: dict[str, Any] | None = None
    credentials_secret: SecretRef | None = None
    instance: InstanceSpec | None = None
    context: ContextSpec | None = None
    pilot: PilotSpec | None = None
    boot_timeout: Annotated[int, Field(ge=30, le=constants.MAX_BOOT_TIMEOUT)] | None = None
    scale_down_policy: ScaleDownPolicy | None = None
    closed_loop: ClosedLoopSpec | None = None


class QueueSpec(_Overridable):
    name: QueueName
    replicas: Replicas = 0
    limits: LimitsSpec | None = None
    """Per-queue caps; the pool's own ``spec.limits`` cap all queues together."""


class PoolSpec(_Overridable):
    ce: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    replicas: Replicas | None = None
    queues: list[QueueSpec] | None = None
    limits: LimitsSpec | None = None
    backoff: BackoffSpec | None = None
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE

    @model_validator(mode="after")
    def _queue_names_unique(self) -> PoolSpec:
        names = [q.name for q in self.queues or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"queue names must be unique, repeated: {', '.join(duplicates)}")
        if self.queues and self.replicas is not None:
            raise ValueError(
                "spec.replicas applies to a pool without queues; with spec.queues set each "
                "queue's own replicas count"
            )
        return self


def parse_spec(raw: dict[str, Any]) -> PoolSpec:
    """Parse ``.spec`` of a CloudPilotPool; raises ``pydantic.ValidationError``."""
    return PoolSpec.model_validate(raw)


def describe_validation_error(error: Exception) -> str:
    """One line per problem, with the spec path in the manifest's own camelCase spelling."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return str(error)
    lines = []
    for item in errors():
        path = ".".join(str(p) for p in ("spec", *item.get("loc", ())))
        lines.append(f"{path}: {item.get('msg', 'invalid')}")
    return "; ".join(lines)
