"""From DIRAC's configuration (CS) to CloudPilotPool manifests.

A site already describes its cloud CEs in the CS, under
``Resources/Sites/<grid>/<site>/CEs/<ce host>`` with ``CEType = Cloud``, and keeps their
credentials in a ``cloud.auth`` file. This module turns each such CE into one pool (its
queues with their overrides) and one credentials Secret, so moving to CloudPilot is one
command, and says what did not carry over: every option is either converted or reported,
none is dropped silently.

How options map (CE level; a queue may override any of them, as in DIRAC):

=========================  ===============================================================
``CloudType``              ``cloudType``
``Driver_<x>``             ``driver.<x>``, typed: ``True``/``False`` -> bool, integers ->
                           int, decimals -> float (DIRAC passed every value as a string,
                           so ``Driver_secure = False`` meant HTTPS); options whose name
                           holds ``version`` stay strings (``2.0`` is not a float there)
``Instance_Image/Flavor``  ``instance.image`` / ``instance.flavor``
``Instance_Networks``      ``instance.networks``: the comma list, split and stripped
``Instance_SSHKey``        ``instance.sshKey``
``Context_ExtPackages``    ``context.extPackages``: the comma list, split and stripped
``Context_MaxLifetime``    ``context.maxLifetime`` (int, at least 60)
``MaxTotalJobs``           queue ``limits.maxInstances``: DIRAC's cap on a queue's pilots
``MaxWaitingJobs``         queue ``limits.maxStarting``: pilots not yet running, i.e. VMs
                           still booting (0, "submit nothing", has no equivalent: the
                           queue stays at ``replicas: 0`` and does not inherit the CE's
                           value either)
``CloudAuth``              replaced by ``credentialsSecret`` (the Secret made here)
=========================  ===============================================================

A CE-level ``MaxTotalJobs``/``MaxWaitingJobs`` is, as in DIRAC, each queue's default, so it
is copied into every queue that does not set its own (``spec.limits`` would cap the queues
*together*, which DIRAC never did). Queues start with ``replicas: 0``: DIRAC submitted on
demand, a pool runs the number it is told, and applying the manifest must not start VMs.

What DIRAC hard-coded (the CentOS 7 template, the OpenStack config drive) is written out as
the fields a site would set by hand; :mod:`cloudpilot.dirac_import_choices` decides them and
says why, and each reason is in the report.

Reported, not converted: ``Context_Template`` (a file on the DIRAC host: put it in a
ConfigMap), ``Context_ProxyLifetime`` (gone from DIRAC too; the operator watches the pilot
proxy's expiry instead), ``Driver_key``/``Driver_secret`` and driver options that look like
credentials (a pool spec is readable by anyone who can read pools), options DIRAC's matcher
and pilot use (they stay in the CS, where DIRAC reads them), and anything unknown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import yaml
from diraccfg import CFG

from cloudpilot import constants
from cloudpilot import dirac_import_choices as choices
from cloudpilot.credentials import ini
from cloudpilot.credentials.errors import CloudAuthError
from cloudpilot.models.queues import ConfigError, effective_queues
from cloudpilot.models.spec import describe_validation_error, parse_spec


class DiracConfigError(ValueError):
    """The CS file cannot be read, or holds no cloud CE to convert."""


class Level(StrEnum):
    INFO = "info"
    """Handled, but differently: worth knowing."""
    WARNING = "warning"
    """Not converted: a human must decide."""
    ERROR = "error"
    """The generated pool does not pass the operator's own checks."""


@dataclass(frozen=True)
class Finding:
    ce: str
    option: str
    message: str
    level: Level = Level.WARNING
    queue: str | None = None

    def __str__(self) -> str:
        where = f"{self.ce}, queue {self.queue}" if self.queue else self.ce
        return f"{self.level.value}: {where}: {self.option}: {self.message}"


@dataclass(frozen=True)
class CloudCE:
    grid: str
    site: str
    host: str
    options: Mapping[str, str]
    queues: Mapping[str, Mapping[str, str]]


@dataclass
class Conversion:
    ce: CloudCE
    pool: dict[str, Any]
    secret: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    secret_has_values: bool = False
    """The Secret holds real credentials (from ``--auth``), not placeholders."""


# -- reading the CS -----------------------------------------------------------------------------

CE_TYPE = "Cloud"
_SECRET_LIKE = re.compile(r"pass|secret|token|credential|private", re.IGNORECASE)

DIRAC_ONLY = frozenset(
    {
        "architecture",
        "OS",
        "Platform",
        "SI00",
        "HS06",
        "maxCPUTime",
        "CPUTime",
        "CPUScalingFactor",
        "CPUNormalizationFactor",
        "Tag",
        "RequiredTag",
        "MaxRAM",
        "NumberOfProcessors",
        "MaxProcessors",
        "WholeNode",
        "LocalCEType",
        "VO",
        "SubmissionMode",
        "MaxNumberOfProcessors",
        "GridEnv",
        "BundleProxy",
        "ExtraPilotOptions",
        "SharedArea",
        "JobListFile",
        "Preamble",
        "Pilot",
        "QueueName",
        "Site",
        "Queue",
    }
)
"""Options DIRAC's matcher, SiteDirector or pilot read: they stay in the CS, where DIRAC
keeps reading them; the pool has nothing to do with them."""


def load_cfg(text: str, source: str = "the configuration") -> CFG:
    try:
        return CFG().loadFromBuffer(text)
    except Exception as exc:  # diraccfg raises plain ValueErrors about the structure
        raise DiracConfigError(f"cannot parse {source} as a DIRAC CS file: {exc}") from None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def find_cloud_ces(cfg: CFG) -> list[CloudCE]:
    """Every CE with ``CEType = Cloud`` under ``Resources/Sites/<grid>/<site>/CEs``."""
    found = []
    sites = _as_dict(_as_dict(cfg.getAsDict().get("Resources")).get("Sites"))
    for grid, grid_sites in sites.items():
        for site, site_options in _as_dict(grid_sites).items():
            for host, ce in _as_dict(_as_dict(site_options).get("CEs")).items():
                ce = _as_dict(ce)
                if str(ce.get("CEType", "")).strip().lower() != CE_TYPE.lower():
                    continue
                options = {k: str(v) for k, v in ce.items() if not isinstance(v, dict)}
                queues = {
                    name: {k: str(v) for k, v in _as_dict(q).items() if not isinstance(v, dict)}
                    for name, q in _as_dict(ce.get("Queues")).items()
                }
                found.append(CloudCE(grid, site, host, options, queues))
    return found


# -- values ---------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


def restore_type(value: str, name: str = "") -> Any:
    """A ``Driver_*`` value with the type DIRAC's string lost; see the module docstring."""
    text = value.strip()
    if "version" in name.lower():
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text) and re.search(r"[.eE]", text):
        return float(text)
    return text  # "0123" too: a leading zero says it is an id, not a number


def split_list(value: str) -> list[str]:
    """DIRAC's comma lists; unlike DIRAC, entries are stripped (``a, b`` means ``b``)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def kube_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from a host or queue name; long ones keep a short digest."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    if len(slug) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:6]
        slug = f"{slug[: limit - 7].rstrip('-')}-{digest}"
    return slug


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate, n = f"{name[: 63 - len(suffix)]}{suffix}", n + 1
    taken.add(candidate)
    return candidate


# -- one CE -----------------------------------------------------------------------------------


class _Report(Protocol):
    def __call__(self, option: str, message: str, level: Level = ...) -> None: ...


@dataclass
class _Options:
    """The converted options of one level (CE or queue)."""

    top: dict[str, Any] = field(default_factory=dict)
    driver: dict[str, Any] = field(default_factory=dict)
    instance: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    not_inherited: set[str] = field(default_factory=set)
    """``limits`` fields this level must not take from the CE (``MaxWaitingJobs = 0``)."""


def _shown(option: str, value: str) -> str:
    return "(value not shown)" if _SECRET_LIKE.search(option) else repr(value.strip())


_STRINGS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "CloudType": ("top", "cloudType", str.strip),
    "Instance_Image": ("instance", "image", str.strip),
    "Instance_Flavor": ("instance", "flavor", str.strip),
    "Instance_Networks": ("instance", "networks", split_list),
    "Instance_SSHKey": ("instance", "sshKey", str.strip),
    "Context_ExtPackages": ("context", "extPackages", split_list),
}
"""Option -> (block, field, conversion)."""

_INTEGERS: dict[str, tuple[str, str, int]] = {
    "Context_MaxLifetime": ("context", "maxLifetime", 60),
    "MaxTotalJobs": ("limits", "maxInstances", 0),
    "MaxWaitingJobs": ("limits", "maxStarting", 1),
}
"""Option -> (block, field, the CRD's minimum)."""

_NOTES: dict[str, tuple[Level, str]] = {
    "CloudAuth": (Level.INFO, "{value} is replaced by spec.credentialsSecret"),
    "Context_Template": (
        Level.WARNING,
        "{value} is a file on the DIRAC host: put the template in a ConfigMap and set "
        "spec.context.template {{name, key}}",
    ),
    "Context_ProxyLifetime": (
        Level.INFO,
        "no equivalent: the pilot proxy comes with the pilot executable (or "
        "spec.pilot.proxySecret) and the operator warns before it expires",
    ),
}
"""Options reported with a note of their own instead of being converted."""


def _driver_option(option: str, value: str, out: _Options, report: _Report) -> None:
    name = option[len("Driver_") :]
    if name in ("key", "secret"):
        report(
            option,
            "not converted: the cloud credentials come from the credentials "
            "Secret (DIRAC itself overrode Driver_secret with them)",
        )
    elif _SECRET_LIKE.search(name):
        report(
            option,
            "looks like a credential: not put in the pool, whose spec anyone who "
            "can read pools can read; add it by hand if it is not secret",
        )
    elif name:
        out.driver[name] = restore_type(value, name)


def _integer_option(option: str, value: str, out: _Options, report: _Report) -> None:
    block, name, minimum = _INTEGERS[option]
    if option == "MaxWaitingJobs" and value.strip() == "0":
        report(
            option,
            "0 (DIRAC submits nothing to this queue) has no equivalent: keep the "
            "queue at replicas: 0 (nor is a CE-level MaxWaitingJobs copied into it)",
        )
        out.not_inherited.add(name)
        return
    try:
        number = int(value.strip())
    except ValueError:
        report(option, f"{value.strip()!r} is not an integer: not converted")
        return
    if number < minimum:
        report(option, f"{number} is below {minimum}, the least CloudPilot takes: not converted")
        return
    getattr(out, block)[name] = number


def _convert_options(
    options: Mapping[str, str], ce: str, queue: str | None, findings: list[Finding]
) -> _Options:
    """One level's options (the CE's or a queue's), each converted or reported."""
    out = _Options()

    def report(option: str, message: str, level: Level = Level.WARNING) -> None:
        findings.append(Finding(ce, option, message, level, queue))

    for option, value in options.items():
        if option == "CEType":
            continue
        if option.startswith("Driver_"):
            _driver_option(option, value, out, report)
        elif option in _STRINGS:
            block, name, conversion = _STRINGS[option]
            getattr(out, block)[name] = conversion(value)
        elif option in _INTEGERS:
            _integer_option(option, value, out, report)
        elif option in _NOTES:
            level, note = _NOTES[option]
            report(option, note.format(value=repr(value.strip())), level)
        elif option in DIRAC_ONLY:
            report(
                option,
                f"{_shown(option, value)} is read by DIRAC (matcher, pilot), not "
                "by the operator: it stays in the CS",
                Level.INFO,
            )
        else:
            report(option, f"{_shown(option, value)} has no CloudPilot equivalent: not converted")
    return out


def _apply_choices(
    level: _Options,
    ce_level: _Options | None,
    explicit_family: str | None,
    report: Callable[[choices.Choice], None],
) -> None:
    """Write what DIRAC hard-coded into ``level`` (the CE's, or a queue's when ``ce_level``
    is given) and report each choice; see :mod:`cloudpilot.dirac_import_choices`."""
    made: list[choices.Choice] = []
    explicit = explicit_family if ce_level is None else None
    if ce_level is None or explicit_family is None:
        inherited = None if ce_level is None else ce_level.context.get("templateFamily")
        family = choices.template_family(level.instance.get("image"), explicit, inherited)
        if family is not None:
            made.append(family)
            if family.value is not None:
                level.context = {"templateFamily": family.value, **level.context}
    cloud_type = level.top.get("cloudType")
    ce_cloud_type = None if ce_level is None else ce_level.top.get("cloudType")
    drive = choices.config_drive(cloud_type)
    if drive is not None and choices.config_drive(ce_cloud_type) is None:
        made.append(drive)
        level.instance["createOptions"] = {"ex_config_drive": True}
    elif drive is None and cloud_type is not None and choices.config_drive(ce_cloud_type):
        made.append(
            choices.Choice(
                "instance.createOptions.ex_config_drive",
                None,
                f"this queue's CloudType {cloud_type!r} is not OpenStack, but it inherits the "
                "CE's ex_config_drive: set instance.createOptions for it by hand",
                certain=False,
            )
        )
    made += choices.explain_instance(level.instance)
    for choice in made:
        report(choice)


def _differences(queue: dict[str, Any], ce: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in queue.items() if ce.get(k) != v}


def _queue_spec(name: str, converted: _Options, ce_level: _Options) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "replicas": 0}
    spec.update(_differences(converted.top, ce_level.top))
    for block in ("driver", "instance", "context"):
        changed = _differences(getattr(converted, block), getattr(ce_level, block))
        if changed:
            spec[block] = changed
    inherited = {k: v for k, v in ce_level.limits.items() if k not in converted.not_inherited}
    limits = {**inherited, **converted.limits}
    if limits:
        spec["limits"] = limits
    return spec


def _pool_spec(ce: CloudCE, ce_level: _Options, secret_name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"ce": ce.host, **ce_level.top}
    if ce_level.driver:
        spec["driver"] = ce_level.driver
    spec["credentialsSecret"] = {"name": secret_name}
    if ce_level.instance:
        spec["instance"] = ce_level.instance
    if ce_level.context:
        spec["context"] = ce_level.context
    return spec


def convert_ce(
    ce: CloudCE,
    *,
    pool_name: str,
    namespace: str | None = None,
    auth: ini.CloudAuthFile | None = None,
    source: str | None = None,
    template_family: str | None = None,
) -> Conversion:
    """One pool and one credentials Secret for ``ce``; see the module docstring.

    ``template_family``: ``el9`` or ``centos7`` for every queue, instead of reading the
    family from the image names (``--template-family``).
    """
    findings: list[Finding] = []

    def explain(queue: str | None) -> Callable[[choices.Choice], None]:
        def report(choice: choices.Choice) -> None:
            level = Level.INFO if choice.certain else Level.WARNING
            findings.append(Finding(ce.host, choice.field, choice.reason, level, queue))

        return report

    ce_level = _convert_options(ce.options, ce.host, None, findings)
    _apply_choices(ce_level, None, template_family, explain(None))
    secret_name = f"{pool_name}-credentials"
    spec = _pool_spec(ce, ce_level, secret_name)
    if ce.queues:
        taken: set[str] = set()
        queues = []
        for dirac_name, options in ce.queues.items():
            name = _unique(kube_name(dirac_name), taken)
            if name != dirac_name:
                findings.append(
                    Finding(
                        ce.host,
                        "queue name",
                        f"{dirac_name!r} is named {name!r} (Kubernetes names)",
                        Level.INFO,
                        dirac_name,
                    )
                )
            converted = _convert_options(options, ce.host, dirac_name, findings)
            _apply_choices(converted, ce_level, template_family, explain(dirac_name))
            queues.append(_queue_spec(name, converted, ce_level))
        spec["queues"] = queues
    else:
        spec["replicas"] = 0
        if ce_level.limits:
            spec["limits"] = ce_level.limits
    findings.append(
        Finding(
            ce.host,
            "replicas",
            "0 for every queue: DIRAC submitted on demand, a pool runs the number it is "
            "told, and applying the manifest must not start VMs before its Secrets exist",
            Level.INFO,
        )
    )
    findings.append(
        Finding(
            ce.host,
            "pilot",
            "DIRAC's SiteDirector made the pilot wrapper; put yours in a Secret "
            "and set spec.pilot.executableSecret {name, key}",
            Level.INFO,
        )
    )
    findings.append(_site_director_finding(ce))
    metadata = _metadata(pool_name, namespace, ce, source)
    pool = {
        "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
        "kind": constants.KIND,
        "metadata": metadata,
        "spec": spec,
    }
    secret, has_values = _secret(ce, secret_name, namespace, auth, findings)
    conversion = Conversion(ce, pool, secret, findings, has_values)
    findings += validate_pool(pool, ce.host)
    return conversion


def _site_director_finding(ce: CloudCE) -> Finding:
    """SiteDirector and CloudPilot must never both start pilots for the CE: say how to stop
    SiteDirector (docs/dirac.md, "Taking the CE out of SiteDirector")."""
    return Finding(
        ce.host,
        "SiteDirector",
        f"before applying the pool, take {ce.host} out of SiteDirector, or both will start "
        f"pilots for its queues: remove it from the SiteDirector agents' CEs option (or drop "
        f"the Cloud CEType from their CETypes), or remove Resources/Sites/{ce.grid}/{ce.site}"
        f"/CEs/{ce.host} from the CS; with DiracX, spec.dirac.site: {ce.site} registers the "
        "pool's pilots instead (docs/dirac.md)",
        Level.WARNING,
    )


def _metadata(name: str, namespace: str | None, ce: CloudCE, source: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    annotations = {
        f"{constants.API_GROUP}/dirac-site": ce.site,
        f"{constants.API_GROUP}/dirac-ce": ce.host,
    }
    if source:
        annotations[f"{constants.API_GROUP}/imported-from"] = source
    metadata["annotations"] = annotations
    return metadata


PLACEHOLDER_KEY = "<user name or access key id>"
PLACEHOLDER_SECRET = "<password or secret key, or PROXY for the pilot proxy>"  # noqa: S105


def _secret(
    ce: CloudCE,
    name: str,
    namespace: str | None,
    auth: ini.CloudAuthFile | None,
    findings: list[Finding],
) -> tuple[dict[str, Any], bool]:
    """The Secret: this CE's entry of ``cloud.auth`` (flattened: the CE's own section with
    what it inherits from DEFAULT), or a template with placeholders."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}
    entry = None
    if auth is not None:
        try:
            entry = ini.select_entry(auth, ce.host)
        except CloudAuthError as exc:
            findings.append(Finding(ce.host, "cloud.auth", f"{exc}; the Secret is a template"))
    if entry is None:
        if auth is None:
            findings.append(
                Finding(
                    ce.host,
                    "cloud.auth",
                    "no --auth file given: the Secret is a template, fill in key and secret",
                    Level.INFO,
                )
            )
        secret["stringData"] = {"key": PLACEHOLDER_KEY, "secret": PLACEHOLDER_SECRET}
        return secret, False
    if entry.uses_proxy:
        findings.append(
            Finding(
                ce.host,
                "cloud.auth",
                "secret is PROXY: the pilot proxy "
                "(spec.pilot.proxySecret, or the one bundled in the pilot "
                "executable) is written to a private file",
                Level.INFO,
            )
        )
    findings.append(
        Finding(
            ce.host,
            "cloud.auth",
            f"the Secret holds the [{ce.host}] entry DIRAC would have used (with what it "
            "inherits from DEFAULT), as a cloud.auth ini: key and secret are the driver's "
            "first two arguments",
            Level.INFO,
        )
    )
    secret["stringData"] = {"cloud.auth": ini.render_entry(ce.host, entry.key, entry.secret)}
    return secret, True


def validate_pool(pool: Mapping[str, Any], ce: str) -> list[Finding]:
    """The operator's own checks (the same it applies to a pool in the cluster)."""
    try:
        spec = parse_spec(dict(pool["spec"]))
        effective_queues(spec, namespace="default", pool_name=pool["metadata"]["name"])
    except (ValueError, ConfigError) as exc:
        return [
            Finding(
                ce, "pool", f"the pool is incomplete: {describe_validation_error(exc)}", Level.ERROR
            )
        ]
    return []


def convert(
    cfg: CFG,
    *,
    ce: str | None = None,
    namespace: str | None = None,
    auth: ini.CloudAuthFile | None = None,
    source: str | None = None,
    template_family: str | None = None,
) -> list[Conversion]:
    """Every cloud CE of ``cfg`` (or the one named ``ce``), converted."""
    found = find_cloud_ces(cfg)
    if not found:
        raise DiracConfigError("no CE with CEType = Cloud under Resources/Sites/<grid>/<site>/CEs")
    if ce is not None:
        chosen = [c for c in found if c.host == ce]
        if not chosen:
            names = ", ".join(sorted(c.host for c in found))
            raise DiracConfigError(f"no cloud CE named {ce!r} (cloud CEs: {names})")
        found = chosen
    taken: set[str] = set()
    return [
        convert_ce(
            c,
            pool_name=_unique(kube_name(c.host), taken),
            namespace=namespace,
            auth=auth,
            source=source,
            template_family=template_family,
        )
        for c in found
    ]


# -- output -----------------------------------------------------------------------------------


def _comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ``cloud.auth`` ini) as readable literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(document: Mapping[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def render_yaml(conversions: Iterable[Conversion], *, header: Iterable[str] = ()) -> str:
    """Multi-document YAML, each Secret before its pool, findings as comments."""
    documents = []
    for conversion in conversions:
        secret_note = (
            ["Holds real credentials from cloud.auth: keep this file private."]
            if conversion.secret_has_values
            else ["A template: fill in the credentials before applying."]
        )
        documents.append(_comment(secret_note) + _dump(conversion.secret))
        notes = [str(f) for f in conversion.findings]
        documents.append(
            _comment([f"DIRAC CE {conversion.ce.host} ({conversion.ce.site})", *notes])
            + _dump(conversion.pool)
        )
    return _comment(header) + "".join(f"---\n{doc}" for doc in documents)
