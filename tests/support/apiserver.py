"""A real Kubernetes control plane for the end-to-end tests: etcd and kube-apiserver on
127.0.0.1, started the way controller-runtime's envtest does.

What it gives a test, and the emulator cannot: schema validation and CEL rules at admission,
pruning of unknown fields, the status subresource kept apart from the main resource, RBAC
for ServiceAccount tokens, real Leases, watches that expire (410 Gone) and API priority and
fairness (429). There is no controller manager: namespaces never finish terminating and
nothing is garbage-collected, so the tests clean up after themselves (see
:func:`tests.support.stack.running_stack`), and everything goes with etcd's data directory.

Binaries: ``kube-apiserver`` from ``CLOUDPILOT_KUBE_APISERVER`` or the cache that
``.ci/build-kube-apiserver.sh`` fills (``~/.cache/cloudpilot-e2e/bin``); ``etcd`` from
``CLOUDPILOT_ETCD`` or ``PATH`` (Debian's ``etcd-server``; ``.ci/install-etcd.sh``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "ControlPlane",
    "ControlPlaneMissing",
    "Identity",
    "etcd_binary",
    "kube_apiserver_binary",
]

CACHE = Path(os.environ.get("CLOUDPILOT_E2E_CACHE", Path.home() / ".cache" / "cloudpilot-e2e"))
HOST = "127.0.0.1"


class ControlPlaneMissing(RuntimeError):
    """A binary the control plane needs is not installed (the message says how to get it)."""


def kube_apiserver_binary() -> Path:
    path = Path(os.environ.get("CLOUDPILOT_KUBE_APISERVER", CACHE / "bin" / "kube-apiserver"))
    if not os.access(path, os.X_OK):
        raise ControlPlaneMissing(
            f"no kube-apiserver at {path}: run `bash .ci/build-kube-apiserver.sh` "
            "(builds it once from the Go module proxy, ~6 min) or set CLOUDPILOT_KUBE_APISERVER"
        )
    return path


def etcd_binary() -> Path:
    found = os.environ.get("CLOUDPILOT_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
    if not os.access(found, os.X_OK):
        raise ControlPlaneMissing(
            "no etcd: run `bash .ci/install-etcd.sh` (Debian's etcd-server) or set CLOUDPILOT_ETCD"
        )
    return Path(found)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Identity:
    """Who a kubeconfig speaks as: a client certificate (user and groups) or a bearer token."""

    kubeconfig: Path
    user: str
    cert_file: Path | None = None
    key_file: Path | None = None
    """The client certificate and key as files (for a raw TLS client), None for a token."""


class _Authority:
    """A throwaway certificate authority: the serving certificate and client certificates."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudpilot-test-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, organizations: Sequence[str] = (), *, server: bool = False
    ) -> tuple[bytes, bytes]:
        """A certificate and its key, both PEM: a client (user = CN, groups = O) or, with
        ``server``, the API server's own for 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address(HOST)),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem(key)


class ControlPlane:
    """etcd + kube-apiserver on loopback ports, in a temporary directory; stopped on exit.

    ``admin`` is a kubeconfig for ``system:masters``. :meth:`identity` writes more, for
    tests that need another user (RBAC, priority and fairness). :meth:`stop_apiserver` and
    :meth:`start_apiserver` take it down and bring it back on the same port and etcd, as an
    upgrade or a crash does.
    """

    def __init__(self, *, timeout: float = 90.0) -> None:
        self._apiserver_binary = kube_apiserver_binary()
        self._etcd_binary = etcd_binary()
        self.timeout = timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._authority = _Authority()

    # -- life ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the control plane is not running")
        return Path(self._tmp.name)

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def admin(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def __enter__(self) -> ControlPlane:
        # /dev/shm keeps etcd's fsyncs off the disk: a test cluster needs no durability.
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self._tmp = tempfile.TemporaryDirectory(prefix="cloudpilot-kube-", dir=base)
        try:
            self._write_pki()
            self._start_etcd()
            self.port = _free_port()
            self._start_apiserver()
            self.identity("admin", ["system:masters"], path=self.admin)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in (self._apiserver, self._etcd):
            _stop(process)
        self._apiserver = self._etcd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stop_apiserver(self) -> None:
        _stop(self._apiserver)
        self._apiserver = None

    def start_apiserver(self) -> None:
        self._start_apiserver()

    def compact_etcd(self, writes: int = 3) -> int:
        """Move etcd's revision on (keys outside the API server's ``/registry``) and compact
        its history up to now: every resourceVersion seen before is gone, so a watch resumed
        from one is answered 410 Gone. Returns the compacted revision."""
        import base64
        import json

        def call(path: str, body: dict[str, object]) -> dict[str, object]:
            request = urllib.request.Request(  # noqa: S310 (loopback etcd)
                f"{self.etcd_url}{path}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                result: dict[str, object] = json.loads(answer.read())
                return result

        revision = 0
        for index in range(writes):
            key = base64.b64encode(f"/cloudpilot-test/filler-{index}".encode()).decode()
            value = base64.b64encode(str(index).encode()).decode()
            header = call("/v3/kv/put", {"key": key, "value": value})["header"]
            revision = int(header["revision"])  # type: ignore[index]
        call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # -- identities ---------------------------------------------------------------------------

    def identity(
        self, user: str, groups: Sequence[str] = (), *, path: Path | None = None
    ) -> Identity:
        """A kubeconfig that authenticates as ``user`` in ``groups`` by client certificate."""
        cert, key = self._authority.issue(user, groups)
        stem = user.replace(":", "_")
        path = path or self.dir / f"{stem}.kubeconfig"
        self._write_kubeconfig(
            path, user, {"client-certificate-data": cert, "client-key-data": key}
        )
        cert_file, key_file = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        return Identity(kubeconfig=path, user=user, cert_file=cert_file, key_file=key_file)

    def token_identity(self, name: str, token: str) -> Identity:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
        path = self.dir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, name, {"token": token})
        return Identity(kubeconfig=path, user=name)

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, object]) -> None:
        import base64

        def encode(value: object) -> object:
            return base64.b64encode(value).decode() if isinstance(value, bytes) else value

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": encode(self._authority.cert_pem),
                    },
                }
            ],
            "users": [{"name": user, "user": {k: encode(v) for k, v in credentials.items()}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    # -- processes ----------------------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        (pki / "ca.crt").write_bytes(self._authority.cert_pem)
        cert, key = self._authority.issue("kube-apiserver", server=True)
        (pki / "apiserver.crt").write_bytes(cert)
        (pki / "apiserver.key").write_bytes(key)
        signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem(signer))
        (pki / "sa.pub").write_bytes(
            signer.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _start_etcd(self) -> None:
        client, peer = _free_port(), _free_port()
        self.etcd_url = f"http://{HOST}:{client}"
        self._etcd = self._spawn(
            "etcd",
            [
                str(self._etcd_binary),
                "--name=cloudpilot-test",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://{HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
                f"--initial-cluster=cloudpilot-test=http://{HOST}:{peer}",
                "--listen-metrics-urls=",
            ],
        )
        self._wait(f"{self.etcd_url}/health", self._etcd, "etcd", tls=False)

    def _start_apiserver(self) -> None:
        pki = self.dir / "pki"
        self._apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self._apiserver_binary),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={self.url}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # Only an address range to allocate Service IPs from; nothing is sent there.
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # No controller manager mints ServiceAccount token Secrets here; tokens
                # come from the TokenRequest API.
                "--disable-admission-plugins=ServiceAccount",
                # Compact often, so that a watch resumed from an old resourceVersion is
                # answered 410 Gone within seconds (test_apiserver_faults.py).
                "--etcd-compaction-interval=2s",
            ],
        )
        self._wait(f"{self.url}/readyz", self._apiserver, "kube-apiserver", tls=True)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait(self, url: str, process: subprocess.Popen[bytes], name: str, *, tls: bool) -> None:
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
            # /readyz is open to anyone (system:public-info-viewer); no client cert needed.
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)  # the polling period while the server starts
        raise TimeoutError(
            f"{name} not ready after {self.timeout:g}s ({last}):\n{self.log(name)[-3000:]}"
        )


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
