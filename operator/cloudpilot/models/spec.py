"""The ``CloudPilotPool`` spec as typed data, and the one source of the CRD's schema.

The CRD's structural schema rejects most bad input at ``kubectl apply`` time; this model is
the operator's own check of the same rules (and of a few the schema cannot express), so a
pool written before a CRD upgrade, or applied to a cluster without schema validation, gets a
clear ``InvalidConfig`` condition instead of a traceback.

The CRD's ``openAPIV3Schema`` for ``spec`` and the field reference in docs/configuration.md
are generated from these classes (``python -m scripts.crdgen``): each field's docstring is
its description in ``kubectl explain``, and what only the API server checks is attached with
:func:`~cloudpilot.models.crd_meta.crd` (see that module). Field names follow
../shared/guides/api.md; each maps a seed option of DIRAC's Cloud CE.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from cloudpilot import constants
from cloudpilot.models import crd_meta as k8s
from cloudpilot.models.crd_meta import UNSET_MEANS_POOL, crd
from cloudpilot.models.rules import (
    DEMAND_WITHOUT_QUEUES,
    NAME_NEEDS_A_NAME,
    POOL_RULES,
    REPLICAS_WITHOUT_QUEUES,
)

QueueName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=k8s.DNS_LABEL)]
Replicas = Annotated[int, Field(ge=0, le=constants.MAX_REPLICAS)]
"""A queue's desired VM count. Bounded here as in the CRD, so a pool stored under an older
CRD without the bound is refused (InvalidConfig) rather than planned."""
Lookup = Annotated[
    str,
    StringConstraints(min_length=1, strip_whitespace=True),
    Field(
        json_schema_extra=crd(
            maxLength=512,
            pattern=k8s.NO_SURROUNDING_SPACE,
            validations=[NAME_NEEDS_A_NAME.crd()],
        )
    ),
]
"""A raw cloud id, or ``name:<name>`` to look the id up by name (seed ``Instance_*``)."""
Network = Annotated[Lookup, Field(description="A network: a raw cloud id or name:<network name>.")]
ObjectName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    Field(json_schema_extra=crd(pattern=k8s.DNS_SUBDOMAIN)),
]
ObjectKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    Field(json_schema_extra=crd(pattern=k8s.CONFIG_KEY)),
]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, not ignored,
    so a typo in a manifest is reported instead of silently doing nothing. Attribute
    docstrings are the CRD's descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
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
    name: ObjectName
    """Name of the Secret, in the pool's namespace."""


class SecretKeyRef(_Model):
    name: ObjectName
    """Name of the Secret, in the pool's namespace."""
    key: ObjectKey
    """Key of the Secret."""


class ConfigMapKeyRef(_Model):
    name: ObjectName
    """Name of the ConfigMap, in the pool's namespace."""
    key: ObjectKey
    """Key of the ConfigMap holding the template."""


class InstanceSpec(_Model):
    image: Lookup | None = None
    """Image to boot (seed Instance_Image): a raw cloud id (ami-0123abcd, an OpenStack image
    UUID) or name:<image name>, looked up by name and cached for an hour instead of listing
    the catalogue on every submission as DIRAC did. A name that matches several bootable
    images is refused (InvalidConfig, naming their ids), never guessed: put the id."""
    flavor: Lookup | None = None
    """Flavor, size or instance type (seed Instance_Flavor): a raw id (m5.large, an OpenStack
    flavor id) or name:<flavor name>, looked up and cached like image; a name that matches
    several flavors is refused like an ambiguous image name."""
    networks: list[Network] | None = Field(None, json_schema_extra=crd(maxItems=16))
    """Networks to attach (seed Instance_Networks, a list instead of a comma-separated
    string): each a raw id or name:<network name>. Order is kept. Set on a queue, the list
    replaces the pool's list; it is not appended to it."""
    ssh_key: str | None = Field(None, json_schema_extra=crd(minLength=1, maxLength=255))
    """Name of a key pair already registered in the cloud (seed Instance_SSHKey), passed as
    ex_keyname where the driver takes it. Unset: the VM boots without an extra key."""
    create_options: dict[str, Any] | None = None
    """Extra keyword arguments for libcloud's create_node, values with their YAML types, for
    driver-specific knobs the seed hard-coded for OpenStack: ex_config_drive: true
    (OpenStack), ex_security_groups, ex_blockdevicemappings, ex_ebs_optimized, ex_spot (EC2)
    ... The arguments CloudPilot sets itself (name, image, size, location, networks,
    ex_userdata, ex_metadata, ex_keyname, ex_mincount, ex_maxcount, ex_clienttoken,
    ex_subnet) are refused: a pool that sets one, on itself or on a queue, is Stalled with
    reason InvalidConfig (use instance.image, flavor, networks and sshKey instead). A queue's
    map is merged key by key onto the pool's."""
    spot: bool | None = Field(
        None, json_schema_extra=crd(pool_default=False, on_queue=UNSET_MEANS_POOL)
    )
    """Run the VMs on the spot market (EC2 InstanceMarketOptions, through libcloud's ex_spot):
    cheaper, and the cloud may take them back at any time. Reclaimed VMs are counted
    (status.queues[].closedLoop.recent.reclaimed) and posted as Reclaimed Events. Default
    false; drivers without a spot market (no ex_spot) ignore it."""
    spot_max_price: (
        Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$")] | None
    ) = Field(None, json_schema_extra=crd(on_queue=UNSET_MEANS_POOL))
    """Most to pay per VM-hour on the spot market, a decimal string (EC2
    SpotOptions.MaxPrice, libcloud's ex_spot_max_price). On the pool, unset means up to the
    on-demand price."""


class ContextSpec(_Model):
    template: ConfigMapKeyRef | None = None
    """ConfigMap key holding the Jinja cloud-init template to use instead of the built-in one
    (seed Context_Template, a file path there). It may extend or include the built-in
    templates (el9.yaml.j2, centos7.yaml.j2) by name."""
    template_family: TemplateFamily | None = Field(
        None, json_schema_extra=crd(pool_default=TemplateFamily.EL9.value)
    )
    """Which built-in template to use when template is unset: el9 (the default; AlmaLinux,
    Rocky or RHEL 9 images) or centos7 (the seed's default template, for CentOS 7 images)."""
    ext_packages: (
        list[
            Annotated[
                str,
                StringConstraints(min_length=1),
                Field(
                    description="An OS package name.",
                    json_schema_extra=crd(maxLength=255, pattern=k8s.NO_SPACE),
                ),
            ]
        ]
        | None
    ) = Field(None, json_schema_extra=crd(maxItems=128))
    """Extra OS packages installed at boot (seed Context_ExtPackages, a list instead of a
    comma-separated string). A container image holding what jobs need is usually the better
    choice, as the seed's documentation says."""
    max_lifetime: Annotated[int, Field(ge=60, le=constants.MAX_LIFETIME_SECONDS)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_MAX_LIFETIME)
    )
    """Seconds after which a VM is destroyed whatever its state, taken as stuck or lost (seed
    Context_MaxLifetime). Default 1209600 (two weeks), at most 31536000 (a year)."""
    halt_grace_period: Annotated[int, Field(ge=0, le=86_400)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_HALT_GRACE_PERIOD)
    )
    """Seconds between the end of the pilot and the VM powering itself off, long enough for an
    admin to log in and look at a failed pilot. 0 to 86400; default 300, as in DIRAC's
    template."""
    user_data_limit: Annotated[int, Field(ge=1024, le=constants.MAX_USER_DATA_LIMIT)] | None = None
    """Largest user data, in bytes, that this cloud accepts, measured as the provider measures
    it (EC2: 16384 raw bytes; OpenStack: 65535 after base64). Default: the provider's known
    limit. User data over it is gzipped; if it still does not fit, no VM is created and the
    pool says why (DIRAC never checked). At most 1048576 (1 MiB), four times the largest
    provider limit."""


class PilotSpec(_Model):
    executable_secret: SecretKeyRef | None = Field(
        None,
        json_schema_extra=crd(describe={"key": "Key of the Secret holding the wrapper script."}),
    )
    """Secret key holding the pilot wrapper script, with its bundled pilot proxy, as DIRAC's
    SiteDirector writes it. The VM runs it as the dirac user, then powers off. A Secret, not
    a ConfigMap, because it carries a proxy."""
    proxy_secret: SecretKeyRef | None = Field(
        None, json_schema_extra=crd(describe={"key": "Key of the Secret holding the proxy."})
    )
    """Secret key holding the pilot proxy (PEM) apart from the wrapper. Unset: the proxy
    bundled in the pilot wrapper (executableSecret) is used. The proxy is what `secret =
    PROXY` in a cloud.auth credentials Secret stands for (sites that authenticate with a VOMS
    proxy, as DIRAC allowed)."""


class LimitsSpec(_Model):
    max_instances: Annotated[int, Field(ge=0, le=constants.MAX_LIMIT)] | None = None
    """Most VMs at once (starting, running or of unknown state, plus creations in flight).
    Unset: no cap but replicas. Set it to stay within a cloud quota. At most 100000."""
    max_starting: Annotated[int, Field(ge=1, le=constants.MAX_LIMIT)] | None = None
    """Most VMs starting at once, to spread boots (image transfer, CVMFS cache fill) over
    time. Unset: no cap. At most 100000."""


class BackoffSpec(_Model):
    initial_seconds: Annotated[float, Field(ge=1, le=constants.MAX_BACKOFF_SECONDS)] | None = None
    """First delay, in seconds. Default 10, at most 86400 (a day)."""
    max_seconds: Annotated[float, Field(ge=1, le=constants.MAX_BACKOFF_SECONDS)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.BACKOFF_MAX)
    )
    """Longest delay, in seconds. Default 600, at most 86400 (a day)."""


class ClosedLoopSpec(_Model):
    """How a queue listens to its pilots (cloudpilot.outcomes; docs/closed-loop.md)."""

    enabled: bool | None = Field(None, json_schema_extra=crd(pool_default=True))
    """false: the open loop, replicas obeyed whatever the pilots do (quota learning stays
    on). Default true."""
    fizzle_seconds: Annotated[int, Field(ge=0, le=86_400)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_FIZZLE_SECONDS)
    )
    """A VM that halts itself sooner than this after launch fizzled (its pilot found no work);
    later, it worked. Also the age under which a live VM is unproven during ramp-up. Default
    600 (Vcycle's fizzle_seconds), at most 86400."""
    backoff_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_FIZZLE_BACKOFF_SECONDS)
    )
    """First hold of new creations after a fizzle, in seconds. Default 600, at most 86400."""
    max_backoff_seconds: Annotated[int, Field(ge=1, le=604_800)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_FIZZLE_MAX_BACKOFF_SECONDS)
    )
    """Longest hold after fizzles: each hold that ends in another fizzle doubles the next, up
    to this. Default 3600, at most 604800 (a week)."""
    window_seconds: Annotated[int, Field(ge=60, le=604_800)] | None = Field(
        None, json_schema_extra=crd(pool_default=constants.DEFAULT_OUTCOME_WINDOW_SECONDS)
    )
    """The recent window of ended pilots counted in status.queues[].closedLoop.recent and
    efficiency. Default 3600, at most 604800."""


JobFilterValue = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128),
    Field(description="A value of the DiracX job parameter to match."),
]


class DiracTokenSecretRef(_Model):
    name: ObjectName
    """Name of the Secret, in the pool's namespace."""
    key: ObjectKey = "token"
    """Key of the token in the Secret."""


class DiracDemandSpec(_Model):
    """Scale on DiracX's waiting jobs: target = ceil(jobs * pilotsPerJob), at least
    minReplicas, at most spec.replicas (the ceiling, which a person or an autoscaler sets),
    rising by at most maxScaleUpStep per read and falling only after scaleDownDelaySeconds.
    Only for a pool without queues (cloudpilot.dirac.demand)."""

    min_replicas: Annotated[int, Field(ge=0, le=constants.MAX_REPLICAS)] = 0
    """Pilots kept whatever the demand (capped by spec.replicas)."""
    pilots_per_job: Annotated[
        float,
        Field(
            ge=0.001,
            le=100,
            # kube-apiserver compares a whole number with a fractional minimum after
            # truncating the minimum (0 >= int(0.001) passes), so 0 got through admission;
            # the rule refuses it where `minimum` does not.
            json_schema_extra=crd(
                validations=[
                    {
                        "rule": "double(self) >= 0.001",
                        "message": "pilotsPerJob must be at least 0.001",
                    }
                ]
            ),
        ),
    ] = 1.0
    """Pilots wanted per waiting job (0.1 = one pilot for ten jobs)."""
    job_statuses: list[JobFilterValue] = Field(
        default_factory=lambda: ["Waiting"], json_schema_extra=crd(maxItems=64)
    )
    """Job statuses that count as demand."""
    sites: list[JobFilterValue] | None = Field(None, json_schema_extra=crd(maxItems=64))
    """Count only jobs whose Site is one of these (e.g. this site and ANY). Unset: any."""
    job_types: list[JobFilterValue] | None = Field(None, json_schema_extra=crd(maxItems=64))
    """Count only jobs of these JobTypes (User, MCSimulation ...). Unset: any."""
    job_groups: list[JobFilterValue] | None = Field(None, json_schema_extra=crd(maxItems=64))
    """Count only jobs of these JobGroups. Unset: any."""
    owners: list[JobFilterValue] | None = Field(None, json_schema_extra=crd(maxItems=64))
    """Count only jobs of these owners. Unset: any."""
    max_scale_up_step: Annotated[int, Field(ge=1, le=constants.MAX_REPLICAS)] = 10
    """Most pilots the target rises by per demand read: a burst does not start a hundred VMs."""
    scale_down_delay_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    """The target falls only to the highest target of this window (seconds)."""
    interval_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    """Seconds between two demand reads."""


class DiracSpec(_Model):
    """DiracX, DIRAC's REST service (docs/dirac.md). Set, every VM the pool starts is
    registered there as a pilot (stamp from the instance id, reference cloud://<id>, this
    grid site, the CE as destination, the queue) and its status follows the VM. A DiracX
    outage never stops VM management: it shows in status.dirac.lastError and is retried."""

    endpoint: Annotated[
        str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
    ]
    """Base URL of the DiracX server (https://diracx.example.org); the operator calls
    /api/pilots/ and /api/jobs/summary under it."""
    credentials_secret: DiracTokenSecretRef
    """Secret holding a DiracX access token with pilot management (ServiceAdministrator)
    and, for demand, job queries of the VO. Read every reconcile; never logged nor shown."""
    vo: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Virtual organisation of the pilots (a VO DiracX knows)."""
    site: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """DIRAC grid site of the CE (e.g. CLOUD.mysite.org), the pilots' GridSite."""
    grid_type: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "Cloud"
    """Pilot GridType recorded in DiracX."""
    register_pilots: bool = True
    """Register the pool's pilots and keep their status; false reads demand only (the
    pilots register themselves, docs/dirac.md)."""
    demand: DiracDemandSpec | None = None
    """Scale spec.replicas' pilots on DiracX's waiting jobs (spec.replicas is the ceiling)."""


class _Overridable(_Model):
    """The CE-level options; a queue may override any of them."""

    cloud_type: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        None,
        json_schema_extra=crd(
            maxLength=256,
            pattern=k8s.PYTHON_PATH,
            on_pool=" Required here or on every queue.",
            on_queue=UNSET_MEANS_POOL,
        ),
    )
    """libcloud compute provider (seed CloudType): a Provider name in any case (OPENSTACK, ec2,
    gce, azure_arm), or the full path of a NodeDriver subclass
    (mypkg.prov.driver.MyNodeDriver)."""
    driver: dict[str, Any] | None = Field(
        None,
        json_schema_extra=crd(
            on_queue=" Merged key by key onto the pool's driver map: a queue sets only what"
            " differs."
        ),
    )
    """Keyword arguments for the libcloud driver's constructor (the seed's Driver_* options
    without the prefix: ex_force_auth_url, region ...). Values keep their YAML types: secure:
    false is the boolean false (DIRAC passed every value as a string, so Driver_secure = False
    meant HTTPS). Credentials go in credentialsSecret, not here."""
    credentials_secret: SecretRef | None = Field(
        None,
        json_schema_extra=crd(
            on_pool=" Required here or on every queue.", on_queue=UNSET_MEANS_POOL
        ),
    )
    """Secret with the cloud credentials, replacing the seed's CloudAuth ini file: keys `key`
    (user name, access key id) and `secret` (password, secret access key), the libcloud
    driver's two positional arguments; or one key `cloud.auth` holding DIRAC's ini file
    (section named after spec.ce, else DEFAULT; surrounding quotes are taken off values). Read
    on every reconcile, so a rotated Secret is used at once."""
    instance: InstanceSpec | None = None
    """The VM to boot (the seed's Instance_* options). image and flavor are required here or
    in every queue. A queue's instance block overrides field by field: createOptions merge key
    by key, every other field (networks included) replaces the pool's value whole."""
    context: ContextSpec | None = Field(None, json_schema_extra=crd(pool_default={}))
    """How the VMs are contextualised with cloud-init (the seed's Context_* options). A
    queue's context block overrides field by field; extPackages is replaced whole."""
    pilot: PilotSpec | None = None
    """The DIRAC pilot the VMs run."""
    boot_timeout: Annotated[int, Field(ge=30, le=constants.MAX_BOOT_TIMEOUT)] | None = Field(
        None,
        json_schema_extra=crd(
            pool_default=constants.DEFAULT_BOOT_TIMEOUT, on_queue=UNSET_MEANS_POOL
        ),
    )
    """Seconds a VM may stay starting before it is destroyed as stuck (the seed had no such
    timeout). Default 1800, at most 86400 (a day)."""
    scale_down_policy: ScaleDownPolicy | None = Field(
        None,
        json_schema_extra=crd(
            pool_default=ScaleDownPolicy.DRAIN.value,
            on_pool=" The pool's value also applies to the VMs of queues removed from the spec.",
            on_queue=UNSET_MEANS_POOL,
        ),
    )
    """What scaling down does to surplus VMs. Drain (default): only VMs still starting are
    destroyed, running pilots are left to finish their job. DeleteRunning: running pilots are
    destroyed too, newest first, killing their jobs."""
    closed_loop: ClosedLoopSpec | None = Field(
        None, json_schema_extra=crd(pool_default={}, on_queue=UNSET_MEANS_POOL)
    )
    """How the queue listens to its pilots, as Vcycle and Vac do (docs/closed-loop.md): a VM
    that halts sooner than fizzleSeconds after launch fizzled (its pilot found no work); after
    fizzles new VMs are held for backoffSeconds, doubling up to maxBackoffSeconds while the
    probe that follows fizzles too; after failed VMs the error back-off holds them; then at
    most one unproven VM at a time, doubling with every pilot that works. replicas stays the
    ceiling. A queue's block overrides field by field."""


class QueueSpec(_Overridable):
    """One queue of the CE: its own replicas and limits, and any CE-level option to
    override."""

    model_config = ConfigDict(json_schema_extra={k8s.SCOPE: "queue"})

    name: QueueName
    """Queue name, unique in the pool: a DNS label (lower case letters, digits and '-', at
    most 63 characters), as it goes into VM names and tags."""
    replicas: Replicas = 0
    """Desired number of live pilot VMs (starting or running) in this queue. At most 10000,
    beyond any site's quota: a typo such as 1000000000 is refused at apply time instead of
    being served."""
    limits: LimitsSpec | None = None
    """Caps for this queue alone; spec.limits caps all queues together."""


class PoolSpec(_Overridable):
    """Desired state: the seed's CE-level options, and the queues with their overrides."""

    model_config = ConfigDict(json_schema_extra=crd(validations=[r.crd() for r in POOL_RULES]))

    ce: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Host name of the cloud CE this pool stands for (the seed's CE name, e.g.
    cloudprov.mysite.example). Picks the section of a cloud.auth credentials Secret, and is
    recorded on every VM (tag cloudpilot.io/ce)."""
    replicas: Replicas | None = Field(None, json_schema_extra=crd(format="int32"))
    """Desired number of live pilot VMs (starting or running) of a pool without queues, which
    has one implicit queue named default. Not allowed together with queues, where each queue
    has its own. Target of kubectl scale. At most 10000 (see queues[].replicas)."""
    queues: list[QueueSpec] | None = Field(
        None,
        json_schema_extra=crd(maxItems=64, list_map_keys=["name"]),
    )
    """The CE's queues, each with its own replicas. A queue may override any CE-level option:
    driver and instance.createOptions merge key by key, every other option (lists included)
    replaces the pool's value whole. Without queues the pool is one queue named default,
    sized by spec.replicas."""
    limits: LimitsSpec | None = None
    """Caps for all queues of the pool together; each queue may have its own in
    queues[].limits. New VMs are shared round robin between queues within them."""
    backoff: BackoffSpec | None = Field(None, json_schema_extra=crd(pool_default={}))
    """Retry timing after failed creations in a queue: doubling from initialSeconds up to
    maxSeconds, with jitter. Rejected credentials wait at least 1800 s between tries."""
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    """What deleting the pool does to its VMs. Delete (default): they are destroyed, and the
    pool is kept (by a finalizer) until they are gone. Orphan: they are left running; a pool
    of the same name and namespace applied again adopts them."""
    dirac: DiracSpec | None = None
    """Register the pool's pilots in DiracX and, optionally, scale on its waiting jobs
    (docs/dirac.md). Unset: CloudPilot never calls DIRAC."""

    @model_validator(mode="after")
    def _queue_names_unique(self) -> PoolSpec:
        names = [q.name for q in self.queues or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"queue names must be unique, repeated: {', '.join(duplicates)}")
        if REPLICAS_WITHOUT_QUEUES.violated(self):
            raise ValueError(REPLICAS_WITHOUT_QUEUES.message)
        if DEMAND_WITHOUT_QUEUES.violated(self):
            raise ValueError(DEMAND_WITHOUT_QUEUES.message)
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
