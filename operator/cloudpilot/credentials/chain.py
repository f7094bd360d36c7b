"""Read an X.509 proxy (PEM) with ``cryptography``: its chain, expiry and identity.

A pilot VM cannot renew its proxy (the VM is unreachable once booted), so a pilot started
with an expired or broken proxy boots, fails to talk to DIRAC and halts, at the cloud's
price. The operator therefore looks at the proxy before it starts pilots.

"Valid" here means a well-formed proxy chain, checked offline with no trust store:

* the first certificate is a proxy: RFC 3820 (``proxyCertInfo``, OID 1.3.6.1.5.5.7.1.14,
  or its pre-RFC draft OID), or a legacy Globus proxy (subject = issuer + ``CN=proxy``,
  ``CN=limited proxy`` or a numeric CN); each proxy's subject is its issuer's plus one CN;
* each certificate is issued and signed by the next one, down to the end-entity (user or
  robot) certificate, which must be present;
* the private key is present, unencrypted, and matches the first certificate.

Whether the end entity is trusted (CA, CRLs, VOMS attributes) is for DIRAC's services to
judge, and they will. Expiry is the earliest ``notAfter`` in the chain. The end entity's
subject DN is the identity shown in status: it is public (it is in every certificate).
Problems are described by position and DN only, never by content. Status and conditions
built from this are in :mod:`.proxy`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

PROXY_CERT_INFO = ObjectIdentifier("1.3.6.1.5.5.7.1.14")
PROXY_CERT_INFO_DRAFT = ObjectIdentifier("1.3.6.1.4.1.3536.1.222")
VOMS_ATTRIBUTES = ObjectIdentifier("1.3.6.1.4.1.8005.100.100.5")
LEGACY_PROXY_CNS = frozenset({"proxy", "limited proxy"})

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_SHORT_NAMES = {"1.2.840.113549.1.9.1": "emailAddress"}


class ProxyKind(StrEnum):
    RFC3820 = "RFC3820"
    DRAFT = "Draft"
    """The pre-RFC (GT3) proxyCertInfo OID."""
    LEGACY = "Legacy"
    """A Globus (GT2) proxy: no extension, recognised by its subject."""


@dataclass(frozen=True)
class ProxyInfo:
    """What status needs to know about a proxy; never its key or its bytes."""

    chain: tuple[x509.Certificate, ...] = ()
    kind: ProxyKind | None = None
    """The first certificate's proxy type, None if it is not a proxy."""
    not_before: datetime | None = None
    """The latest ``notBefore`` in the chain."""
    not_after: datetime | None = None
    """The earliest ``notAfter`` in the chain: when the proxy stops working."""
    identity: str | None = None
    """The end entity's subject DN, DIRAC-style (``/DC=org/O=x/CN=name``)."""
    has_private_key: bool = False
    key_matches: bool = False
    """One private key, and it belongs to the first certificate."""
    voms: bool = False
    """Whether a certificate carries VOMS attributes (FedCloud needs them)."""
    problems: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """A well-formed proxy chain (time is judged separately, see :mod:`.proxy`)."""
        return not self.problems

    @property
    def usable(self) -> bool:
        """A PEM certificate chain with the first certificate's own key: what TLS client
        authentication (VOMS, the pilot) needs at the very least. A chain that is usable
        but not a valid proxy may still work somewhere; one that is not usable never does."""
        return bool(self.chain) and self.key_matches


def dirac_dn(name: x509.Name) -> str:
    """``/DC=ch/DC=cern/CN=user``: the slash form DIRAC and the grid tools print."""
    parts = []
    for rdn in name.rdns:
        attributes = sorted(rdn, key=lambda a: a.oid.dotted_string)
        parts.append(
            "+".join(
                f"{_SHORT_NAMES.get(a.oid.dotted_string, a.rfc4514_attribute_name)}={a.value!s}"
                for a in attributes
            )
        )
    return "/" + "/".join(parts)


def _last_cn(name: x509.Name) -> str | None:
    if not name.rdns:
        return None
    attributes = list(name.rdns[-1])
    if len(attributes) == 1 and attributes[0].oid == NameOID.COMMON_NAME:
        return str(attributes[0].value)
    return None


def _extends_issuer(cert: x509.Certificate) -> bool:
    """RFC 3820 section 3.4: subject = issuer + exactly one CN."""
    subject = cert.subject.rdns
    return (
        len(subject) == len(cert.issuer.rdns) + 1
        and x509.Name(subject[:-1]) == cert.issuer
        and _last_cn(cert.subject) is not None
    )


def _extension_oids(cert: x509.Certificate) -> set[ObjectIdentifier]:
    try:
        return {ext.oid for ext in cert.extensions}
    except ValueError:  # a malformed or duplicated extension: judged by its subject alone
        return set()


def proxy_kind(cert: x509.Certificate) -> ProxyKind | None:
    """Which kind of proxy ``cert`` is, or None for an end-entity or CA certificate."""
    oids = _extension_oids(cert)
    if PROXY_CERT_INFO in oids:
        return ProxyKind.RFC3820
    if PROXY_CERT_INFO_DRAFT in oids:
        return ProxyKind.DRAFT
    cn = _last_cn(cert.subject)
    if _extends_issuer(cert) and cn is not None and (cn in LEGACY_PROXY_CNS or cn.isdigit()):
        return ProxyKind.LEGACY
    return None


def _same_key(key: object, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)  # type: ignore[attr-defined]
        theirs = cert.public_key().public_bytes(serialization.Encoding.DER, spki)
    except (AttributeError, ValueError, UnsupportedAlgorithm):
        return False
    return bool(mine == theirs)


def _load_blocks(pem: bytes) -> tuple[list[x509.Certificate], list[object], list[str]]:
    certificates: list[x509.Certificate] = []
    keys: list[object] = []
    problems: list[str] = []
    for match in _PEM_BLOCK.finditer(pem):
        label, block = match.group(1).decode(), match.group(0)
        if label == "CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                problems.append(f"certificate #{len(certificates) + 1} cannot be parsed")
        elif label.endswith("PRIVATE KEY"):
            if "ENCRYPTED" in label or b"ENCRYPTED" in block.split(b"\n\n", 1)[0]:
                problems.append("the private key is encrypted (a proxy key never is)")
                keys.append(None)
                continue
            try:
                keys.append(serialization.load_pem_private_key(block, password=None))
            except (ValueError, TypeError, UnsupportedAlgorithm):
                problems.append("the private key cannot be parsed")
                keys.append(None)
    return certificates, keys, problems


def _chain_problems(chain: list[x509.Certificate]) -> list[str]:
    problems = []
    for index, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        if child.issuer != parent.subject:
            problems.append(
                f"certificate #{index} ({dirac_dn(child.subject)}) is not issued by "
                f"certificate #{index + 1} ({dirac_dn(parent.subject)}): "
                "the chain must be in order, proxy first"
            )
            continue
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            problems.append(
                f"certificate #{index} is not signed by the key of certificate #{index + 1}"
            )
    return problems


def parse_proxy(pem: bytes | str) -> ProxyInfo:
    """Inspect a proxy file's content. Never raises for bad content: see ``problems``."""
    data = pem.encode() if isinstance(pem, str) else pem
    chain, keys, problems = _load_blocks(data)
    if not chain:
        return ProxyInfo(problems=(*problems, "no certificate found"))
    first = chain[0]
    kind = proxy_kind(first)
    kinds = [proxy_kind(cert) for cert in chain]
    if kind is None:
        problems.append(
            f"the first certificate ({dirac_dn(first.subject)}) is not a proxy: no "
            "proxyCertInfo extension, and its subject is not its issuer's plus one CN"
        )
    problems += [
        f"proxy #{i} ({dirac_dn(cert.subject)}) does not extend its issuer's subject by one CN"
        for i, (cert, k) in enumerate(zip(chain, kinds, strict=True), start=1)
        if k is not None and not _extends_issuer(cert)
    ]
    present = [k for k in keys if k is not None]
    key_matches = len(keys) == 1 and bool(present) and _same_key(present[0], first)
    if not keys:
        problems.append("no private key (a proxy file carries the proxy's own key)")
    elif len(keys) > 1:
        problems.append("more than one private key")
    elif present and not key_matches:
        problems.append("the private key does not match the first certificate")
    problems += _chain_problems(chain)
    end_entity = next((c for c, k in zip(chain, kinds, strict=True) if k is None), None)
    if kind is not None and end_entity is None:
        problems.append(
            "the end-entity (user) certificate is missing: the chain holds only proxies"
        )
    identity_name = end_entity.subject if end_entity is not None else chain[-1].issuer
    return ProxyInfo(
        chain=tuple(chain),
        kind=kind,
        not_before=max(c.not_valid_before_utc for c in chain),
        not_after=min(c.not_valid_after_utc for c in chain),
        identity=dirac_dn(identity_name),
        has_private_key=bool(present),
        key_matches=key_matches,
        voms=any(VOMS_ATTRIBUTES in _extension_oids(c) for c in chain),
        problems=tuple(dict.fromkeys(problems)),
    )
