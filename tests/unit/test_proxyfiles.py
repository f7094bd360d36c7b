"""The private proxy files behind ``secret = PROXY``: modes, sharing, rewriting, removal."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudpilot.credentials.errors import ProxyFileError
from cloudpilot.credentials.proxyfiles import ProxyFileStore, default_base

PEM = b"-----BEGIN CERTIFICATE-----\nproxy-one\n-----END CERTIFICATE-----\n"
PEM2 = b"-----BEGIN CERTIFICATE-----\nproxy-two\n-----END CERTIFICATE-----\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProxyFileStore]:
    created = ProxyFileStore(tmp_path / "proxies", remove_at_exit=False)
    yield created
    created.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_default_base_is_under_the_temporary_directory() -> None:
    assert default_base().name == "cloudpilot-proxies"
    assert ProxyFileStore(remove_at_exit=False).directory is None  # nothing touched yet


def test_file_is_private_in_private_directories(store: ProxyFileStore) -> None:
    path = store.write("ns/pool", "creds", "ns/pilot:proxy", PEM)
    assert path.read_bytes() == PEM
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(store.base) == 0o700
    assert path.parent.parent == store.base
    assert "pilot" in path.name  # readable name: namespace and Secret are not secret


def test_rewritten_only_when_content_changes(store: ProxyFileStore) -> None:
    path = store.write("ns/pool", "creds", "src", PEM)
    inode = path.stat().st_ino
    assert store.write("ns/pool", "creds", "src", PEM) == path
    assert path.stat().st_ino == inode  # untouched
    assert store.write("ns/pool", "creds", "src", PEM2) == path
    assert path.read_bytes() == PEM2
    assert path.stat().st_ino != inode  # replaced atomically by rename
    assert mode(path) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_rewritten_when_deleted_behind_our_back(store: ProxyFileStore) -> None:
    path = store.write("o", "p", "src", PEM)
    path.unlink()
    assert store.write("o", "p", "src", PEM).read_bytes() == PEM


def test_one_file_per_source_shared_and_reference_counted(store: ProxyFileStore) -> None:
    a = store.write("ns/pool-a", "creds", "ns/pilot:proxy", PEM)
    b = store.write("ns/pool-b", "creds", "ns/pilot:proxy", PEM)
    other = store.write("ns/pool-c", "creds", "ns/other:proxy", PEM)
    assert a == b != other
    store.release("ns/pool-a")
    assert a.exists()  # pool-b still uses it
    store.release("ns/pool-b", "creds")
    assert not a.exists()
    assert other.exists()


def test_switching_source_releases_the_old_file(store: ProxyFileStore) -> None:
    old = store.write("ns/pool", "creds", "ns/old:proxy", PEM)
    new = store.write("ns/pool", "creds", "ns/new:proxy", PEM2)
    assert new.exists() and not old.exists()


def test_release_by_purpose_keeps_other_purposes(store: ProxyFileStore) -> None:
    one = store.write("ns/pool", "secret-one", "src-1", PEM)
    two = store.write("ns/pool", "secret-two", "src-2", PEM2)
    store.release("ns/pool", "secret-one")
    assert not one.exists() and two.exists()
    assert store.users() == {("ns/pool", "secret-two"): "src-2"}


def test_close_removes_everything(store: ProxyFileStore) -> None:
    path = store.write("o", "p", "src", PEM)
    directory = path.parent
    store.close()
    assert not directory.exists()
    assert store.base.exists()  # the shared base stays
    store.close()  # idempotent


def test_provider_writes_lazily(store: ProxyFileStore) -> None:
    provider = store.provider("o", "p", "src", PEM)
    assert store.path_of("src") is None
    assert Path(provider()).read_bytes() == PEM


def test_refuses_a_symlinked_base(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "proxies"
    link.symlink_to(target)
    store = ProxyFileStore(link, remove_at_exit=False)
    with pytest.raises(ProxyFileError, match="not a plain directory"):
        store.write("o", "p", "src", PEM)
    assert list(target.iterdir()) == []


def test_a_loose_base_is_tightened(tmp_path: Path) -> None:
    base = tmp_path / "proxies"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    store = ProxyFileStore(base, remove_at_exit=False)
    store.write("o", "p", "src", PEM)
    assert mode(base) == 0o700
    store.close()


def test_stale_directories_of_dead_processes_are_swept(tmp_path: Path) -> None:
    base = tmp_path / "proxies"
    base.mkdir(mode=0o700)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = base / f"pid-{dead.stdout.strip()}-abc"
    stale.mkdir()
    (stale / "old.pem").write_bytes(PEM)
    earlier_life = base / f"pid-{os.getpid()}-old"  # a restarted container's pid 1
    earlier_life.mkdir()
    neighbour = ProxyFileStore(base, remove_at_exit=False)  # alive, same process: kept
    kept = neighbour.write("o", "p", "src", PEM).parent
    store = ProxyFileStore(base, remove_at_exit=False)
    store.write("o", "p", "src", PEM)
    assert not stale.exists()
    assert not earlier_life.exists()
    assert kept.exists()
    neighbour.close()
    store.close()


def test_removed_at_interpreter_exit(tmp_path: Path) -> None:
    base = tmp_path / "proxies"
    code = (
        "from cloudpilot.credentials.proxyfiles import ProxyFileStore\n"
        f"s = ProxyFileStore({str(base)!r})\n"
        "print(s.write('o', 'p', 'src', b'pem'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    written = Path(done.stdout.strip())
    assert written.parent.parent == base
    assert not written.exists()
    assert not written.parent.exists()
