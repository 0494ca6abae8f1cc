"""Where the registry keeps its versions: a local directory or an object store.

One small interface, ``VersionStore``, two adapters chosen by the root:

* ``LocalVersionStore`` (a path): a version is sealed by renaming its complete staging
  directory into ``versions/`` (a name another publisher took makes the rename fail: the
  next number is tried); CURRENT is replaced with ``os.replace`` under an exclusive
  ``flock`` after checking it is still what the caller read (one machine; not over NFS).
* ``ObjectVersionStore`` (``s3://bucket/prefix``): a version number is claimed by creating
  ``versions/<v>/.claim`` with ``If-None-Match: *`` (a taken number: the next is tried), the
  artifacts are uploaded, the manifest last (a version without manifest is incomplete and
  never listed nor loaded); CURRENT is written with ``If-None-Match: *`` (first version) or
  ``If-Match: <ETag read>``. Loading downloads a version into a local cache: each file into
  a temporary directory, every size and sha256 checked against the manifest, then one
  rename; a copy that fails a check is deleted and never loaded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from decision_service.storage.location import cache_key, default_cache_dir
from decision_service.storage.objects import S3Objects

MANIFEST = "manifest.json"
CLAIM = ".claim"
VERSION_RE = re.compile(r"^v(\d{4,})$")
_MAX_NAME_ATTEMPTS = 1_000


class RegistryError(RuntimeError):
    """The registry or one of its versions is missing, incomplete or corrupt."""


class CurrentMovedError(RegistryError):
    """Another publisher moved CURRENT first: this version is published but not current.

    ``winner``: the version CURRENT names now (None if it was removed); ``version``: the one
    that lost."""

    def __init__(self, message: str, winner: str | None, version: str) -> None:
        super().__init__(message)
        self.winner = winner
        self.version = version


@dataclass(frozen=True)
class Pointer:
    """What CURRENT names and a tag of the exact object read (S3 ETag; local inode+mtime)."""

    name: str
    tag: str


class VersionStore(Protocol):
    """Versions and the CURRENT pointer of a registry, per use case."""

    location: str  # the root as given (messages)

    def staging_dir(self, use_case: str) -> Path:
        """A fresh local directory to write a candidate version's files into."""
        ...

    def seal(self, use_case: str, staging: Path, manifest_for: Callable[[str], bytes]) -> tuple[str, Path]:
        """Publishes ``staging`` under the next free version name, the manifest
        (``manifest_for(name)``) last. Returns (name, local directory of the version).
        ``staging`` is consumed. On failure: RegistryError / OSError; no complete version."""
        ...

    def read_pointer(self, use_case: str, pointer: str = "CURRENT") -> Pointer | None:
        """CURRENT (or another pointer file of the use case, e.g. ROLLOUT: ``name`` is then its
        text), or None when it was never written. On failure: OSError."""
        ...

    def swap_pointer(
        self, use_case: str, name: str, expected: Pointer | None, pointer: str = "CURRENT"
    ) -> Pointer | None:
        """Points CURRENT (or ``pointer``) at ``name`` in one conditional write, only if it is
        still ``expected`` (None: still absent). Returns the new pointer, or None when the
        condition failed (another writer won). On failure: OSError."""
        ...

    def names(self, use_case: str) -> list[str]:
        """The complete versions (manifest written), sorted."""
        ...

    def has_manifest(self, use_case: str, name: str) -> bool:
        """True when version ``name`` is complete."""
        ...

    def open(self, use_case: str, name: str) -> tuple[Path, dict[str, Any]]:
        """A local directory holding version ``name``'s files, and its manifest.
        On failure: RegistryError (no manifest: incomplete; corrupt manifest; a file that
        fails its size or checksum on download); StorageError (an OSError) when the store
        cannot be read: a transient failure, worth a retry."""
        ...


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``path`` through a temporary file and ``os.replace``; leaves no temp behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted
        tmp.unlink(missing_ok=True)
        raise


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{where}: corrupt manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise RegistryError(f"{where}: corrupt manifest (not a JSON object)")
    return manifest


def _text(data: bytes, where: str) -> str:
    """A pointer file's text. On failure: RegistryError naming it (not UTF-8: corrupt)."""
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise RegistryError(f"{where} is not UTF-8 text (corrupt): {data[:16]!r}") from None


def _next_number(names: list[str]) -> int:
    return max((int(m.group(1)) for n in names if (m := VERSION_RE.match(n))), default=0) + 1


class LocalVersionStore:
    """The registry in a local directory (the layout of models/registry.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def staging_dir(self, use_case: str) -> Path:
        base = self.root / use_case
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=base))

    def seal(self, use_case: str, staging: Path, manifest_for: Callable[[str], bytes]) -> tuple[str, Path]:
        versions = self.root / use_case / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        for _ in range(_MAX_NAME_ATTEMPTS):
            name = f"v{_next_number([p.name for p in versions.iterdir()]):04d}"
            write_atomic(staging / MANIFEST, manifest_for(name))
            try:
                os.rename(staging, versions / name)
            except OSError as exc:  # another publisher took the name between listing and rename
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return name, versions / name
        raise RegistryError(f"{use_case}: no free version name after {_MAX_NAME_ATTEMPTS} attempts")

    def read_pointer(self, use_case: str, pointer: str = "CURRENT") -> Pointer | None:
        try:
            with open(self.root / use_case / pointer, "rb") as f:
                st = os.fstat(f.fileno())
                return Pointer(_text(f.read(), f"{use_case}/{pointer}"), f"{st.st_ino}:{st.st_mtime_ns}")
        except FileNotFoundError:
            return None

    def swap_pointer(
        self, use_case: str, name: str, expected: Pointer | None, pointer: str = "CURRENT"
    ) -> Pointer | None:
        base = self.root / use_case
        base.mkdir(parents=True, exist_ok=True)
        with open(base / f".{pointer}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            now = self.read_pointer(use_case, pointer)
            if (now.tag if now else None) != (expected.tag if expected else None):
                return None
            write_atomic(base / pointer, (name + "\n").encode())
            return self.read_pointer(use_case, pointer)

    def names(self, use_case: str) -> list[str]:
        versions = self.root / use_case / "versions"
        if not versions.is_dir():
            return []
        return sorted(p.name for p in versions.iterdir() if VERSION_RE.match(p.name))

    def has_manifest(self, use_case: str, name: str) -> bool:
        return (self.root / use_case / "versions" / name / MANIFEST).is_file()

    def open(self, use_case: str, name: str) -> tuple[Path, dict[str, Any]]:
        path = self.root / use_case / "versions" / name
        try:
            data = (path / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise RegistryError(f"{use_case}/{name}: no manifest at {path}") from None
        return path, _parse_manifest(data, f"{use_case}/{name}")


class ObjectVersionStore:
    """The registry on an object store (``s3://bucket/prefix``), with a local cache of the
    versions this process loaded or published (``cache_dir``, default
    $DS_STORAGE_CACHE_DIR/registry or ``<tmp>/decision-service-cache/registry``).

    The cache keeps the ``cache_versions`` most recently used versions per use case (0: all);
    older copies are deleted when another version is opened. A loaded version keeps working
    after its copy is deleted (its artifacts are in memory, or mapped: POSIX keeps an unlinked
    file's pages), and keeping at least 2 never deletes the serving one during a swap."""

    def __init__(
        self, uri: str, cache_dir: str | os.PathLike[str] | None = None, cache_versions: int = 3
    ) -> None:
        self.objects = S3Objects(uri)
        self.location = self.objects.uri
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "registry"
        self.cache = base / cache_key(self.location)
        self.cache_versions = cache_versions

    def _local(self, use_case: str) -> Path:
        path = self.cache / use_case
        path.mkdir(parents=True, exist_ok=True)
        return path

    def staging_dir(self, use_case: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self._local(use_case)))

    def seal(self, use_case: str, staging: Path, manifest_for: Callable[[str], bytes]) -> tuple[str, Path]:
        versions = f"{use_case}/versions"
        number = _next_number(self.objects.list(versions))
        claim = json.dumps({"host": os.uname().nodename, "pid": os.getpid()}).encode()
        for _ in range(_MAX_NAME_ATTEMPTS):
            name = f"v{number:04d}"
            if self.objects.create(f"{versions}/{name}/{CLAIM}", claim) is not None:
                break
            number = max(number + 1, _next_number(self.objects.list(versions)))
        else:
            raise RegistryError(f"{use_case}: no free version name after {_MAX_NAME_ATTEMPTS} attempts")
        manifest = manifest_for(name)
        files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != MANIFEST)
        for path in files:
            self.objects.upload(f"{versions}/{name}/{path.name}", path)
        written = self.objects.create(f"{versions}/{name}/{MANIFEST}", manifest) is not None
        if not written and self.objects.read(f"{versions}/{name}/{MANIFEST}") != manifest:  # not our retry
            raise RegistryError(f"{use_case}/{name}: another publisher wrote its manifest (claim ignored)")
        write_atomic(staging / MANIFEST, manifest)
        return name, self._install(use_case, name, staging)

    def _install(self, use_case: str, name: str, ready: Path) -> Path:
        """Renames a verified local copy into the cache; a copy already there is kept."""
        target = self._local(use_case) / name
        try:
            os.rename(ready, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(ready, ignore_errors=True)  # another loader of this process or host won
        self._used(use_case, target)
        return target

    def _used(self, use_case: str, target: Path) -> None:
        """Marks ``target`` most recently used, then deletes the copies beyond the newest
        ``cache_versions`` (renamed aside first: a reader never sees a half-deleted copy)."""
        os.utime(target)
        if self.cache_versions <= 0:
            return
        base = self._local(use_case)
        copies = []
        for p in base.iterdir():
            if p != target and VERSION_RE.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    copies.append((p.stat().st_mtime_ns, p))
        copies.sort(reverse=True)
        for _, old in copies[max(self.cache_versions - 1, 0) :]:
            aside = base / f".stale-{old.name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(old, aside)
            except OSError:  # another process pruned it first
                continue
            shutil.rmtree(aside, ignore_errors=True)

    def read_pointer(self, use_case: str, pointer: str = "CURRENT") -> Pointer | None:
        got = self.objects.read_tagged(f"{use_case}/{pointer}")
        if got is None:
            return None
        return Pointer(_text(got.data, f"{use_case}/{pointer}"), got.tag)

    def swap_pointer(
        self, use_case: str, name: str, expected: Pointer | None, pointer: str = "CURRENT"
    ) -> Pointer | None:
        data = (name + "\n").encode()
        key = f"{use_case}/{pointer}"
        if expected is None:
            tag = self.objects.create(key, data)
        else:
            tag = self.objects.replace(key, data, expected.tag)
        return None if tag is None else Pointer(name, tag)

    def names(self, use_case: str) -> list[str]:
        listed = self.objects.list(f"{use_case}/versions", recursive=True)
        done = {p.split("/", 1)[0] for p in listed if p.endswith(f"/{MANIFEST}") and p.count("/") == 1}
        return sorted(n for n in done if VERSION_RE.match(n))

    def has_manifest(self, use_case: str, name: str) -> bool:
        return name in self.names(use_case)

    def open(self, use_case: str, name: str) -> tuple[Path, dict[str, Any]]:
        where = f"{use_case}/{name}"
        key = f"{use_case}/versions/{name}"
        data = self.objects.read(f"{key}/{MANIFEST}")
        if data is None:
            raise RegistryError(
                f"{where}: no manifest at {self.objects.where(key)} (incomplete: a publisher is "
                "still uploading it, or died)"
            )
        manifest = _parse_manifest(data, where)
        target = self._local(use_case) / name
        with contextlib.suppress(FileNotFoundError):
            if (target / MANIFEST).read_bytes() == data:  # verified when it was renamed in
                self._used(use_case, target)
                return target, manifest
            stale = target.with_name(f".stale-{name}-{os.getpid()}")  # the store was reset: re-fetch
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=self._local(use_case)))
        try:
            for file, meta in manifest.get("files", {}).items():
                if "/" in file or file in ("", ".", "..", MANIFEST):
                    raise RegistryError(f"{where}: manifest lists an invalid file name {file!r}")
                local = tmp / file
                self.objects.download(f"{key}/{file}", local)  # StorageError: transient, names the file
                if local.stat().st_size != meta["bytes"]:
                    raise RegistryError(
                        f"{where}: {file} has the wrong size ({local.stat().st_size} bytes, "
                        f"manifest {meta['bytes']}) in {self.objects.where(key)}"
                    )
                if sha256(local) != meta["sha256"]:
                    raise RegistryError(f"{where}: {file} fails its checksum in {self.objects.where(key)}")
            write_atomic(tmp / MANIFEST, data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._install(use_case, name, tmp), manifest
