"""Private files for the pilot proxy behind ``secret = PROXY``.

libcloud's OpenStack VOMS authentication takes the *path* of a proxy file as its secret,
as DIRAC's FedCloud sites use it, so the proxy must exist on disk. It is the most sensitive
thing the operator holds (it lets anyone act as the VO's pilots), hence:

* one directory per store, created ``0700`` by ``mkdtemp`` inside a base directory that is
  itself ``0700``, owned by the operator's uid and not a symlink (else nothing is written);
  the base defaults to ``<tmp>/cloudpilot-proxies`` (the pod's root file system is
  read-only, its ``/tmp`` a private writable volume);
* files written ``0600`` through ``O_EXCL | O_NOFOLLOW`` to a temporary name, then renamed
  over the old one, so a driver reading the file sees the old proxy or the new, never half;
* one file per proxy *source* (``namespace/secret:key``), shared by the pools that use it,
  so pools on one cloud account get one path and one driver; rewritten only when the
  content changes;
* reference counted by user (pool and purpose): a file goes when its last user releases
  it (pool deleted, Secret no longer says ``PROXY``), and everything goes at exit;
* directories left by an earlier process that died (a container restart keeps ``/tmp``)
  are removed when a store starts writing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudpilot import redaction
from cloudpilot.credentials.errors import ProxyFileError

DEFAULT_DIRECTORY_NAME = "cloudpilot-proxies"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_LIVE: set[Path] = set()
"""Directories of the stores alive in this process (tests run several side by side)."""


def default_base() -> Path:
    return Path(tempfile.gettempdir()) / DEFAULT_DIRECTORY_NAME


def _file_name(source: str) -> str:
    """Readable (namespace and Secret names are not secret) and unique (a digest)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', source)[:60]}-{digest}.pem"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class _File:
    path: Path
    digest: str


class ProxyFileStore:
    """The proxy files of one operator process. Thread-safe; touches the disk lazily."""

    def __init__(self, base: Path | str | None = None, *, remove_at_exit: bool = True) -> None:
        self.base = Path(base) if base is not None else default_base()
        self._lock = threading.Lock()
        self._directory: Path | None = None
        self._files: dict[str, _File] = {}
        self._users: dict[tuple[str, str], str] = {}
        if remove_at_exit:
            atexit.register(self.close)

    # -- public -----------------------------------------------------------------------------

    @property
    def directory(self) -> Path | None:
        """This store's private directory, once something was written."""
        return self._directory

    def write(self, owner: str, purpose: str, source: str, pem: bytes) -> Path:
        """Make sure ``source``'s proxy file holds ``pem``; ``owner`` (the pool, ``ns/name``)
        uses it for ``purpose`` (e.g. the credentials Secret's name). Returns its path.

        A user that switches to another source releases its previous one.
        """
        with self._lock:
            directory = self._ensure_directory()
            digest = hashlib.sha256(pem).hexdigest()
            current = self._files.get(source)
            path = directory / _file_name(source)
            if current is None or current.digest != digest or not path.is_file():
                redaction.register(f"proxyfile:{source}", [pem])
                self._write_atomic(path, pem)
                self._files[source] = _File(path, digest)
            previous = self._users.get((owner, purpose))
            self._users[(owner, purpose)] = source
            if previous is not None and previous != source:
                self._collect(previous)
            return path

    def provider(self, owner: str, purpose: str, source: str, pem: bytes) -> Callable[[], str]:
        """A ``proxy_path_provider`` for :func:`~.resolve.credentials_from_secret`: the file
        is written only if the credentials actually say ``PROXY``."""
        return lambda: str(self.write(owner, purpose, source, pem))

    def release(self, owner: str, purpose: str | None = None) -> None:
        """``owner`` no longer uses a proxy file for ``purpose`` (for anything, if None);
        files left without users are deleted."""
        with self._lock:
            gone = [u for u in self._users if u[0] == owner and purpose in (None, u[1])]
            sources = {self._users.pop(u) for u in gone}
            for source in sources:
                self._collect(source)

    def path_of(self, source: str) -> Path | None:
        entry = self._files.get(source)
        return entry.path if entry else None

    def users(self) -> dict[tuple[str, str], str]:
        with self._lock:
            return dict(self._users)

    def close(self) -> None:
        """Delete every file and the private directory (idempotent; runs at exit)."""
        with self._lock:
            for source in list(self._files):
                self._remove(source)
            self._users.clear()
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                _LIVE.discard(self._directory)
                self._directory = None
        atexit.unregister(self.close)

    # -- private ----------------------------------------------------------------------------

    def _collect(self, source: str) -> None:
        if source not in self._users.values():
            self._remove(source)

    def _remove(self, source: str) -> None:
        entry = self._files.pop(source, None)
        if entry is not None:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
        redaction.forget(f"proxyfile:{source}")

    def _ensure_directory(self) -> Path:
        if self._directory is not None and self._directory.is_dir():
            return self._directory
        base = self.base
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                base.mkdir(mode=0o700)
            info = base.lstat()
        except OSError as exc:
            raise ProxyFileError(
                f"cannot create the proxy directory {base}: {exc.strerror}"
            ) from None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise ProxyFileError(f"{base} is not a plain directory: no proxy is written there")
        if info.st_uid != os.getuid():
            raise ProxyFileError(
                f"{base} belongs to uid {info.st_uid}, not to the operator (uid {os.getuid()}): "
                "no proxy is written there"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            base.chmod(0o700)
        self._sweep(base)
        self._directory = Path(tempfile.mkdtemp(prefix=f"pid-{os.getpid()}-", dir=base))
        _LIVE.add(self._directory)
        return self._directory

    @staticmethod
    def _sweep(base: Path) -> None:
        """Remove directories of dead processes, and of an earlier life of this pid (a
        restarted container's operator is pid 1 again) that no live store here owns."""
        for entry in base.iterdir():
            match = re.fullmatch(r"pid-(\d+)-.*", entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir() or entry in _LIVE:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)

    @staticmethod
    def _write_atomic(path: Path, pem: bytes) -> None:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(temporary, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(pem)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise ProxyFileError(f"cannot write the proxy file {path}: {exc.strerror}") from None
