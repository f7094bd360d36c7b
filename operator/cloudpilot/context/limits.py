"""How much user data each cloud accepts, and whether gzip makes it fit.

Each provider measures its limit differently: EC2 counts the raw bytes (before the base64
of the API call), OpenStack and Azure count the base64 text, GCE counts the metadata value
as text (which cannot hold gzip's binary output). The seed sent 23.5 KB to EC2, whose limit
is 16 KB, and learnt it from the API error; here the decision is made before any call.

cloud-init decompresses gzip user data transparently, so gzip is used only when the plain
data does not fit: plain user data stays readable in the cloud console and in
``cloudpilot render``.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from enum import StrEnum

from cloudpilot.context.errors import UserDataError


class Provider(StrEnum):
    EC2 = "ec2"
    OPENSTACK = "openstack"
    GCE = "gce"
    AZURE = "azure"
    OTHER = "other"


@dataclass(frozen=True)
class SizeLimit:
    """One cloud's user-data limit and how it is measured."""

    provider: Provider
    limit: int
    after_base64: bool
    """The limit applies to the base64 text of the data (OpenStack, Azure)."""
    gzip_allowed: bool
    """The transport carries binary data, so gzip output can be sent (not GCE metadata)."""
    overridden: bool = False

    def measure(self, payload: bytes) -> int:
        """The size the cloud compares with :attr:`limit`."""
        return base64_length(len(payload)) if self.after_base64 else len(payload)

    def fits(self, payload: bytes) -> bool:
        return self.measure(payload) <= self.limit

    def describe(self) -> str:
        """``EC2 accepts 16,384 bytes`` (``... after base64`` where that is the measure)."""
        name = _DISPLAY[self.provider]
        unit = " after base64" if self.after_base64 else ""
        source = " (context.userDataLimit)" if self.overridden else ""
        return f"{name} accepts {self.limit:,} bytes{unit}{source}"


_DISPLAY = {
    Provider.EC2: "EC2",
    Provider.OPENSTACK: "OpenStack",
    Provider.GCE: "GCE",
    Provider.AZURE: "Azure",
    Provider.OTHER: "this cloud",
}

LIMITS: dict[Provider, SizeLimit] = {
    # RunInstances UserData: 16 KiB of raw data, before the API's base64.
    Provider.EC2: SizeLimit(Provider.EC2, 16_384, after_base64=False, gzip_allowed=True),
    # Nova: user_data is a base64 string of at most 65,535 characters.
    Provider.OPENSTACK: SizeLimit(Provider.OPENSTACK, 65_535, after_base64=True, gzip_allowed=True),
    # Compute Engine: 256 KiB for all metadata values together; values are text.
    Provider.GCE: SizeLimit(Provider.GCE, 262_144, after_base64=False, gzip_allowed=False),
    # Azure customData: 64 KiB of binary, i.e. 87,380 characters of base64.
    Provider.AZURE: SizeLimit(Provider.AZURE, 87_380, after_base64=True, gzip_allowed=True),
    # Unknown clouds: EC2's limit, the smallest of the known ones, until the spec says more.
    Provider.OTHER: SizeLimit(Provider.OTHER, 16_384, after_base64=False, gzip_allowed=True),
}


def base64_length(size: int) -> int:
    """Length of the padded base64 text of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def provider_for(cloud_type: str) -> Provider:
    """The provider family of a ``cloudType``: a libcloud Provider name (any case) or a
    driver class path (``mysite.drivers.PatchedEC2NodeDriver`` is EC2)."""
    text = cloud_type.lower()
    for needle, provider in (
        ("openstack", Provider.OPENSTACK),
        ("ec2", Provider.EC2),
        ("gce", Provider.GCE),
        ("google", Provider.GCE),
        ("azure", Provider.AZURE),
    ):
        if needle in text:
            return provider
    return Provider.OTHER


def size_limit(cloud_type: str, override: int | None = None) -> SizeLimit:
    """The limit for a queue: the provider's, or ``context.userDataLimit`` measured the
    provider's way (raw bytes for EC2, GCE and unknown clouds; base64 text otherwise)."""
    known = LIMITS[provider_for(cloud_type)]
    if override is None:
        return known
    return SizeLimit(known.provider, override, known.after_base64, known.gzip_allowed, True)


@dataclass(frozen=True)
class Fitted:
    """The bytes to send, and why they are gzipped or not."""

    payload: bytes
    raw_size: int
    compressed: bool
    limit: SizeLimit
    plain_measure: int
    gzip_measure: int | None
    """The gzipped size as the cloud measures it, when gzip was tried."""

    @property
    def sent_size(self) -> int:
        return len(self.payload)

    def summary(self) -> str:
        """One line for logs and ``cloudpilot render``: sizes and the decision."""
        unit = " after base64" if self.limit.after_base64 else ""
        plain = f"{self.plain_measure:,} bytes{unit}"
        if not self.compressed:
            return f"plain: {plain}; {self.limit.describe()}"
        return f"gzip: {self.gzip_measure:,} bytes{unit} ({plain} plain); {self.limit.describe()}"


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no timestamp): the same input always gives the same payload."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def fit(plain: bytes, limit: SizeLimit, *, template: str) -> Fitted:
    """Plain if it fits, else gzip if that fits; otherwise :class:`UserDataError`."""
    plain_measure = limit.measure(plain)
    if plain_measure <= limit.limit:
        return Fitted(plain, len(plain), False, limit, plain_measure, None)
    unit = " after base64" if limit.after_base64 else ""
    if not limit.gzip_allowed:
        raise UserDataError(
            f"user data of {template} is {plain_measure:,} bytes{unit}; {limit.describe()} "
            "and cannot take gzip (its metadata is text)"
        )
    packed = gzip_bytes(plain)
    packed_measure = limit.measure(packed)
    if packed_measure <= limit.limit:
        return Fitted(packed, len(plain), True, limit, plain_measure, packed_measure)
    raise UserDataError(
        f"user data of {template} is {packed_measure:,} bytes{unit} after gzip "
        f"({plain_measure:,} plain); {limit.describe()}"
    )


def decode_payload(payload: bytes) -> bytes:
    """The user data as cloud-init sees it: gunzipped when it is gzip."""
    if payload[:2] == b"\x1f\x8b":
        return gzip.decompress(payload)
    return payload


def transport_base64(payload: bytes) -> str:
    """The base64 text an API call carries (what clouds echo back in errors)."""
    return base64.b64encode(payload).decode("ascii")
