"""Test X.509 material made with ``cryptography``: a CA, user certificates, and proxies.

Proxies come as DIRAC dumps them (``X509Chain.dumpAllToString``): the proxy certificate,
its private key, then the rest of the chain. Keys are EC P-256 by default (fast to make);
``rsa=True`` gives the RSA keys real grid proxies have.

Kinds: RFC 3820 (``proxyCertInfo`` extension), legacy Globus (``CN=proxy``), and broken
ones: expired, expiring soon, not yet valid, wrong issuer order, bad signature, mismatched
key, missing key, missing user certificate.
"""

from __future__ import annotations

import base64
import bz2
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

PROXY_CERT_INFO = ObjectIdentifier("1.3.6.1.5.5.7.1.14")
# ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage id-ppl-inheritAll } }
INHERIT_ALL_POLICY = bytes.fromhex("300c300a06082b06010505071501")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(*, rsa_key: bool = False) -> PrivateKey:
    if rsa_key:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(o, v)]) for o, v in parts])


def extend(base: x509.Name, cn: str) -> x509.Name:
    """``base`` plus one ``CN`` RDN: how a proxy's subject is made from its issuer's."""
    return x509.Name(
        [*base.rdns, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, cn)])]
    )


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    signer: PrivateKey,
    *,
    not_before: datetime,
    not_after: datetime,
    serial: int,
    ca: bool = False,
    proxy_info: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if proxy_info:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(PROXY_CERT_INFO, INHERIT_ALL_POLICY), critical=True
        )
    return builder.sign(signer, hashes.SHA256())


def make_ca(now: datetime | None = None) -> Issued:
    now = now or datetime.now(UTC)
    key = new_key()
    subject = name((NameOID.COUNTRY_NAME, "XX"), (NameOID.ORGANIZATION_NAME, "CloudPilot Test CA"))
    cert = _cert(
        subject,
        subject,
        key.public_key(),
        key,
        not_before=now - timedelta(days=30),
        not_after=now + timedelta(days=3650),
        serial=1,
        ca=True,
    )
    return Issued(cert, key)


def make_user(
    ca: Issued,
    cn: str = "Pilot Robot",
    *,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(days=365),
    rsa_key: bool = False,
) -> Issued:
    now = now or datetime.now(UTC)
    key = new_key(rsa_key=rsa_key)
    subject = name(
        (NameOID.DOMAIN_COMPONENT, "org"),
        (NameOID.DOMAIN_COMPONENT, "cloudpilot"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Robots"),
        (NameOID.COMMON_NAME, cn),
    )
    cert = _cert(
        subject,
        ca.subject,
        key.public_key(),
        ca.key,
        not_before=now - timedelta(days=1),
        not_after=now + lifetime,
        serial=1000,
    )
    return Issued(cert, key)


def make_proxy(
    issuer: Issued,
    *,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(hours=24),
    not_before: datetime | None = None,
    legacy: bool = False,
    cn: str | None = None,
    rsa_key: bool = False,
    signer: PrivateKey | None = None,
) -> Issued:
    """A proxy of ``issuer`` (a user certificate or another proxy).

    ``signer`` signs with another key than the issuer's (a forged or broken chain).
    """
    now = now or datetime.now(UTC)
    key = new_key(rsa_key=rsa_key)
    serial = 424242
    if cn is None:
        cn = "proxy" if legacy else str(serial)
    cert = _cert(
        extend(issuer.subject, cn),
        issuer.subject,
        key.public_key(),
        signer or issuer.key,
        not_before=not_before or now - timedelta(minutes=5),
        not_after=now + lifetime,
        serial=serial,
        proxy_info=not legacy,
    )
    return Issued(cert, key)


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def dump(
    proxy: Issued, *chain: Issued, key: PrivateKey | None = None, with_key: bool = True
) -> bytes:
    """DIRAC's proxy file layout: proxy certificate, its key, then the issuers."""
    out = pem_cert(proxy.cert)
    if with_key:
        out += pem_key(key or proxy.key)
    for issued in chain:
        out += pem_cert(issued.cert)
    return out


def bundle_in_wrapper(proxy_pem: bytes, other_files: dict[str, bytes] | None = None) -> bytes:
    """A pilot wrapper carrying files the way DIRAC's ``pilotWrapperScript`` does."""
    files = {**(other_files or {}), "proxy": proxy_pem}
    body = ["#!/bin/bash", "/usr/bin/env python3 << EOF", "import base64, bz2, os"]
    for file_name, content in files.items():
        encoded = base64.b64encode(bz2.compress(content)).decode()
        body += [
            f"with open('{file_name}', 'wb') as fd:",
            f"  fd.write(bz2.decompress(base64.b64decode(b'{encoded}')))",
        ]
    body += ["os.system('python3 dirac-pilot.py')", "EOF", ""]
    return "\n".join(body).encode()


class ProxyFactory:
    """One CA and one user, and proxies of that user on demand (tests share one)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)
        self.ca = make_ca(self.now)
        self.user = make_user(self.ca, now=self.now)

    def rfc(self, lifetime: timedelta = timedelta(hours=24), **kwargs: object) -> bytes:
        proxy = make_proxy(self.user, now=self.now, lifetime=lifetime, **kwargs)  # type: ignore[arg-type]
        return dump(proxy, self.user)

    def legacy(self, lifetime: timedelta = timedelta(hours=24)) -> bytes:
        return dump(make_proxy(self.user, now=self.now, lifetime=lifetime, legacy=True), self.user)

    def expired(self) -> bytes:
        return self.rfc(lifetime=timedelta(hours=-1), not_before=self.now - timedelta(hours=13))

    def expiring(self, left: timedelta = timedelta(hours=1)) -> bytes:
        return self.rfc(lifetime=left)

    def not_yet_valid(self) -> bytes:
        return self.rfc(not_before=self.now + timedelta(hours=1))

    def broken_signature(self) -> bytes:
        proxy = make_proxy(self.user, now=self.now, signer=new_key())
        return dump(proxy, self.user)

    def wrong_order(self) -> bytes:
        """A second-level proxy whose issuer (the first proxy) is missing from the chain."""
        first = make_proxy(self.user, now=self.now)
        second = make_proxy(first, now=self.now)
        return dump(second, self.user)

    def key_mismatch(self) -> bytes:
        return dump(make_proxy(self.user, now=self.now), self.user, key=new_key())

    def without_key(self) -> bytes:
        return dump(make_proxy(self.user, now=self.now), self.user, with_key=False)

    def without_user(self) -> bytes:
        return dump(make_proxy(self.user, now=self.now))

    def chained(self) -> bytes:
        """A proxy of a proxy, with the whole chain: valid."""
        first = make_proxy(self.user, now=self.now)
        second = make_proxy(first, now=self.now, lifetime=timedelta(hours=12))
        return dump(second, first, self.user)
