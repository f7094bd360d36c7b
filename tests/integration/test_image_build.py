"""The operator image, really built (scripts/build-image.sh) and run the way the chart runs it.

Opt-in (CLOUDPILOT_IMAGE_BUILD=1): it needs root, buildah and debootstrap (Debian packages)
and a few minutes of CPU. With CLOUDPILOT_IMAGE_BUILD_LOCAL_BASE=1 the base image is made
from Debian packages (no container registry needed); CLOUDPILOT_IMAGE_BUILD_CA names a CA
bundle for the build stage's pip (a TLS-intercepting proxy in front of PyPI).

The built image is mounted and run as the chart runs it: user 10001, a read-only root
filesystem and a fresh /tmp; `cloudpilot render` of an example pool must work there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}

pytestmark = pytest.mark.skipif(
    os.environ.get("CLOUDPILOT_IMAGE_BUILD") != "1"
    or shutil.which("buildah") is None
    or os.geteuid() != 0,
    reason="opt-in: CLOUDPILOT_IMAGE_BUILD=1, as root, with buildah installed",
)


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=1800)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    args = ["bash", str(ROOT / "scripts" / "build-image.sh"), "--", "--quiet"]
    if os.environ.get("CLOUDPILOT_IMAGE_BUILD_LOCAL_BASE") == "1":
        args.insert(2, "--local-base")
    if os.environ.get("CLOUDPILOT_IMAGE_BUILD_CA"):
        args[2:2] = ["--ca-bundle", os.environ["CLOUDPILOT_IMAGE_BUILD_CA"]]
    ref = _run(*args).strip().splitlines()[-1]
    domain = ref.split("/")[0]
    qualified = "/" in ref and ("." in domain or ":" in domain or domain == "localhost")
    return ref if qualified else f"localhost/{ref}"  # how buildah names a short reference


@pytest.fixture
def rootfs(image: str) -> Iterator[Path]:
    container = _run("buildah", "from", image).strip()
    try:
        yield Path(_run("buildah", "mount", container).strip())
    finally:
        subprocess.run(["buildah", "umount", container], env=ENV, check=False)
        subprocess.run(["buildah", "rm", container], env=ENV, check=False)


def test_the_image_config_is_what_the_chart_expects(image: str) -> None:
    config = json.loads(_run("buildah", "inspect", "--type", "image", image))["OCIv1"]["config"]
    assert config["User"] == "10001:10001"  # numeric: runAsNonRoot can verify it
    assert config["Entrypoint"] == ["cloudpilot", "operator"]
    assert config["WorkingDir"] == "/tmp"
    assert "HOME=/tmp" in config["Env"]


def test_the_operator_runs_as_10001_on_a_read_only_root(rootfs: Path) -> None:
    pool = (ROOT / "examples" / "ec2-pool.yaml").read_text()
    script = f"""
set -e
mount --bind {rootfs} {rootfs}
mount -o remount,bind,ro {rootfs}
mount -t tmpfs -o size=64m tmpfs {rootfs}/tmp
cat > {rootfs}/tmp/pool.yaml <<'POOL'
{pool}
POOL
chroot --userspec=10001:10001 {rootfs} /usr/bin/env -i PATH=/opt/cloudpilot/bin:/usr/bin:/bin \
    HOME=/tmp PYTHONDONTWRITEBYTECODE=1 sh -c '
  cd /tmp
  if touch /opt/cloudpilot/x 2>/dev/null; then echo "root filesystem is writable"; exit 1; fi
  id -u
  cloudpilot operator --help > /dev/null
  cloudpilot render -f /tmp/pool.yaml
  python -c "import cloudpilot.kube.handlers, cloudpilot.cloud.gateway"
'
"""
    out = _run("unshare", "--mount", "sh", "-c", script)
    assert out.splitlines()[0] == "10001"
    assert "#cloud-config" in out
