"""A queue's user data, from spec to the bytes the cloud gets: read, render, check, fit.

Rendered once per queue per reconcile, never per VM: every VM of a batch (EC2
``MinCount/MaxCount``) gets the same bytes and derives its own pilot stamp from its instance
id at boot (see ``naming.pilot_stamp`` and ``templates/pilot-stamp.sh.j2``). Renderings
are also cached by the hash of their inputs, so a steady pool re-renders only when its
template, Secret or spec changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cloudpilot.context.errors import MissingPilotExecutableError, UserDataError
from cloudpilot.context.limits import (
    Fitted,
    SizeLimit,
    decode_payload,
    fit,
    size_limit,
)
from cloudpilot.context.templating import (
    TemplateSource,
    builtin,
    render_source,
    site_template,
    uses_variable,
)
from cloudpilot.context.validation import check_user_data
from cloudpilot.context.variables import template_variables
from cloudpilot.models.queues import QueueConfig
from cloudpilot.models.spec import SecretKeyRef

SecretReader = Callable[[str, str], Awaitable[dict[str, bytes]]]
ConfigMapReader = Callable[[str, str], Awaitable[dict[str, str]]]

CACHE_SIZE = 64
"""Renderings kept: a few per queue is plenty; each holds a copy of the user data."""


@dataclass(frozen=True)
class RenderedUserData:
    """What a queue's VMs get, and what to mask wherever it might be echoed."""

    payload: bytes
    """The bytes to send: gzip when that was needed to fit (cloud-init gunzips it)."""
    raw_size: int
    """Size of the rendered user data before gzip."""
    sent_size: int
    """``len(payload)``, before the base64 of the API call."""
    compressed: bool
    secret_values: list[str] = field(repr=False)
    """The pilot wrapper, the proxy and the payload's base64: register them with
    :mod:`cloudpilot.redaction` so clouds that echo the request do not leak them."""
    template: str = ""
    """How the template is named in messages (``built-in template el9.yaml.j2`` ...)."""
    limit: SizeLimit | None = None
    summary: str = ""
    """Sizes and the gzip decision, one line, safe to log."""
    digest: str = ""
    """sha256 of the payload: tells renderings apart without showing them."""

    def __repr__(self) -> str:  # never print the payload
        return (
            f"RenderedUserData(template={self.template!r}, raw_size={self.raw_size}, "
            f"sent_size={self.sent_size}, compressed={self.compressed}, digest={self.digest[:12]})"
        )

    @property
    def text(self) -> str:
        """The user data as cloud-init reads it (decompressed). Holds secrets."""
        return decode_payload(self.payload).decode("utf-8")


_cache: OrderedDict[str, RenderedUserData] = OrderedDict()


def clear_cache() -> None:
    _cache.clear()


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserDataError(f"{what} is not UTF-8 text") from None


async def build_user_data(
    queue: QueueConfig,
    *,
    namespace: str,
    pool: str,
    read_secret: SecretReader,
    read_configmap: ConfigMapReader,
) -> RenderedUserData:
    """Read the queue's pilot Secrets and template, render, check and fit the user data.

    Raises :class:`UserDataError` (a ``ConfigError``) for a broken template, invalid output
    or data too big for the cloud; a missing Secret, ConfigMap or key raises the readers'
    own ``ConfigError``. No message quotes secret content.
    """
    executable = await _secret_text(queue.executable_secret, namespace, read_secret)
    proxy = await _secret_text(queue.proxy_secret, namespace, read_secret)
    if queue.template is not None:
        data = await read_configmap(namespace, queue.template.name)
        if queue.template.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise UserDataError(
                f"ConfigMap {namespace}/{queue.template.name} has no key "
                f"{queue.template.key!r} (keys: {keys})"
            )
        source = site_template(
            namespace, queue.template.name, queue.template.key, data[queue.template.key]
        )
    else:
        source = builtin_for(queue)
    if executable is None and uses_variable(source, "pilot_executable"):
        raise MissingPilotExecutableError(
            f"no pilot executable: spec.pilot.executableSecret is not set, and "
            f"{source.description} starts one (pilot_executable); name the Secret holding "
            "the pilot wrapper, or use a template that starts the pilot itself"
        )
    return prepare_user_data(
        queue,
        source,
        namespace=namespace,
        pool=pool,
        pilot_executable=executable,
        pilot_proxy=proxy,
    )


async def _secret_text(
    ref: SecretKeyRef | None, namespace: str, read_secret: SecretReader
) -> str | None:
    if ref is None:
        return None
    name, key = ref.name, ref.key
    data = await read_secret(namespace, name)
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise UserDataError(f"Secret {namespace}/{name} has no key {key!r} (keys: {keys})")
    return _decode(data[key], f"Secret {namespace}/{name} key {key}")


def builtin_for(queue: QueueConfig) -> TemplateSource:
    """The built-in template of the queue's image family (``context.templateFamily``)."""
    return builtin(f"{queue.template_family}.yaml.j2")


def prepare_user_data(
    queue: QueueConfig,
    source: TemplateSource,
    *,
    namespace: str,
    pool: str,
    pilot_executable: str | None,
    pilot_proxy: str | None = None,
) -> RenderedUserData:
    """The synchronous core of :func:`build_user_data` (also used by ``cloudpilot render``),
    cached by the hash of everything that goes into the result."""
    limit = size_limit(queue.account.cloud_type, queue.user_data_limit)
    variables = template_variables(
        queue,
        namespace=namespace,
        pool=pool,
        pilot_executable=pilot_executable,
        pilot_proxy=pilot_proxy,
    )
    key = _cache_key(source, variables, limit)
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    secrets = [s for s in (pilot_executable, pilot_proxy) if s]
    plain = render_source(source, variables, secrets=secrets)
    check_user_data(plain, template=source.description)
    fitted = fit(plain, limit, template=source.description)
    result = _result(fitted, source, secrets)
    _cache[key] = result
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _result(fitted: Fitted, source: TemplateSource, secrets: list[str]) -> RenderedUserData:
    return RenderedUserData(
        payload=fitted.payload,
        raw_size=fitted.raw_size,
        sent_size=fitted.sent_size,
        compressed=fitted.compressed,
        # The payload's own base64 is not registered: redaction masks every long base64
        # run, and a copy per pool cost 100 KB of operator memory each at 1,000 pools.
        secret_values=list(secrets),
        template=source.description,
        limit=fitted.limit,
        summary=fitted.summary(),
        digest=hashlib.sha256(fitted.payload).hexdigest(),
    )


def _cache_key(source: TemplateSource, variables: dict[str, object], limit: SizeLimit) -> str:
    blob = json.dumps(
        [source.name, source.text, variables, limit.provider, limit.limit, limit.after_base64],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()
