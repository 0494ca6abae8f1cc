"""A model registry: immutable versions and a CURRENT pointer, locally or on an object store.

Layout (under the root, a local directory or ``s3://bucket/prefix``)::

    <root>/<use case>/versions/<version>/manifest.json   + the version's artifact files
    <root>/<use case>/CURRENT                            name of the serving version

Publishing writes a complete version under the next free name, the manifest (sizes and
sha256 of every file) last, then moves CURRENT with one conditional write: it moves only if
CURRENT is still what this registry object last read or wrote for the use case (or, if it
never read it, what it was when ``publish`` began). Two publishers racing cannot both win:
the loser gets CurrentMovedError naming the version that won; its version stays published,
not current. Version names never collide either (see models/version_store.py). A reader sees
the old version or the new one, never a half-written one.

On an object store each loaded version is a local, checksum-verified copy (ModelVersion.path
is local either way), so the loaders read local files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decision_service.models.rollout import ROLLOUT_POINTER, Rollout, RolloutError
from decision_service.models.version_store import (
    MANIFEST,
    VERSION_RE,
    CurrentMovedError,
    LocalVersionStore,
    ObjectVersionStore,
    Pointer,
    RegistryError,
    VersionStore,
    sha256,
)
from decision_service.storage.location import is_remote

__all__ = [
    "MANIFEST",
    "CurrentMovedError",
    "ModelRegistry",
    "ModelVersion",
    "Pointer",
    "RegistryError",
    "Rollout",
    "RolloutError",
]


@dataclass(frozen=True)
class ModelVersion:
    use_case: str
    name: str
    path: Path  # a local directory (on an object store: the verified local copy)
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    def verify(self) -> None:
        """Checks every file listed in the manifest against its recorded size and sha256."""
        for name, meta in self.manifest.get("files", {}).items():
            path = self.path / name
            if not path.is_file():
                raise RegistryError(f"{self.use_case}/{self.name}: missing file {name}")
            if path.stat().st_size != meta["bytes"]:
                raise RegistryError(f"{self.use_case}/{self.name}: {name} has the wrong size")
            if sha256(path) != meta["sha256"]:
                raise RegistryError(f"{self.use_case}/{self.name}: {name} fails its checksum")


def _check_name(use_case: str, name: str) -> None:
    """A version name from a caller or a pointer file is a name, never a path.
    On failure: RegistryError."""
    if not VERSION_RE.fullmatch(name):
        raise RegistryError(f"{use_case}: {name!r} is not a version name (like v0004)")


class ModelRegistry:
    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        cache_versions: int = 3,
    ) -> None:
        """``root``: a local directory, or ``s3://bucket/prefix`` (endpoint and credentials
        from the AWS environment variables; needs the ``s3`` extra). ``cache_dir``: where an
        object-store registry keeps verified local copies of versions (default
        $DS_STORAGE_CACHE_DIR/registry or ``<tmp>/decision-service-cache/registry``), the
        ``cache_versions`` most recently used per use case (0: all)."""
        text = os.fspath(root)
        self._store: VersionStore
        if is_remote(text):
            self.root: Path | str = text.rstrip("/")
            self._store = ObjectVersionStore(text, cache_dir, cache_versions)
        else:
            self.root = Path(root)
            self._store = LocalVersionStore(self.root)
        self._seen: dict[str, Pointer | None] = {}
        self._seen_rollout: dict[str, Pointer | None] = {}

    def staging_dir(self, use_case: str) -> Path:
        """A fresh local directory to write a candidate version into before ``publish``."""
        return self._store.staging_dir(use_case)

    def publish(
        self,
        use_case: str,
        staging: Path,
        manifest: dict[str, Any],
        make_current: bool = True,
    ) -> ModelVersion:
        """Seals ``staging`` as the next version (manifest + checksums) and, by default,
        points CURRENT at it (conditionally: see the module docstring).

        On failure: CurrentMovedError when another publisher moved CURRENT first (the
        version is published, not current); RegistryError / OSError otherwise."""
        expected = self._seen[use_case] if use_case in self._seen else self._read(use_case)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(staging.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
        created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def manifest_for(name: str) -> bytes:
            full = {
                **manifest,
                "use_case": use_case,
                "version": name,
                "created_at": created_at,
                "files": files,
            }
            return json.dumps(full, indent=2, sort_keys=True).encode()

        name, path = self._store.seal(use_case, staging, manifest_for)
        version = ModelVersion(use_case, name, path, json.loads(manifest_for(name)))
        if make_current:
            self._swap(use_case, name, expected)
        return version

    def set_current(self, use_case: str, name: str) -> None:
        """Points CURRENT at a published version with one conditional write.

        On failure: RegistryError for an unknown or incomplete version; CurrentMovedError
        when CURRENT changed since this registry last read it."""
        _check_name(use_case, name)
        if not self._store.has_manifest(use_case, name):
            raise RegistryError(f"{use_case}: no published version {name!r}")
        expected = self._seen[use_case] if use_case in self._seen else self._read(use_case)
        self._swap(use_case, name, expected)

    def _read(self, use_case: str) -> Pointer | None:
        pointer = self._store.read_pointer(use_case)
        self._seen[use_case] = pointer
        return pointer

    def _swap(self, use_case: str, name: str, expected: Pointer | None) -> None:
        new = self._store.swap_pointer(use_case, name, expected)
        if new is not None:
            self._seen[use_case] = new
            return
        now = self._read(use_case)
        if now is not None and now.name == name:  # our own write, retried after a lost reply
            return
        winner = now.name if now else None
        raise CurrentMovedError(
            f"{use_case}: CURRENT moved to {winner or 'nothing'} (expected "
            f"{expected.name if expected else 'no version'}) while publishing {name}: another "
            f"publisher won; {name} is published but not current (compare it with {winner} and "
            "set_current to retry)",
            winner,
            name,
        )

    def rollout(self, use_case: str) -> Rollout:
        """The use case's ROLLOUT (models/rollout.py): its canary and shadow, or an empty one.

        On failure: RolloutError for a corrupt ROLLOUT file (naming it); OSError."""
        try:
            pointer = self._store.read_pointer(use_case, ROLLOUT_POINTER)
        except RegistryError as exc:  # not text
            raise RolloutError(str(exc)) from None
        self._seen_rollout[use_case] = pointer
        return Rollout.parse(pointer.name if pointer else None, f"{self.root}/{use_case}/{ROLLOUT_POINTER}")

    def set_rollout(self, use_case: str, rollout: Rollout) -> None:
        """Writes ROLLOUT with one conditional write (only if it is still what this registry
        last read; read it first with ``rollout``). Every version it names must be published.

        On failure: RegistryError for an unknown version (nothing written); CurrentMovedError
        when another writer changed ROLLOUT since it was read; OSError."""
        for arm, name in (("canary", rollout.canary), ("shadow", rollout.shadow)):
            if name is not None and not self._store.has_manifest(use_case, name):
                known = ", ".join(self.versions(use_case)[-5:]) or "none"
                raise RegistryError(
                    f"{use_case}: the rollout's {arm} {name!r} is not a published version (latest: {known})"
                )
        if use_case not in self._seen_rollout:
            self.rollout(use_case)
        expected = self._seen_rollout[use_case]
        new = self._store.swap_pointer(use_case, rollout.to_text(), expected, ROLLOUT_POINTER)
        if new is None:
            now = self._store.read_pointer(use_case, ROLLOUT_POINTER)
            self._seen_rollout[use_case] = now
            raise CurrentMovedError(
                f"{use_case}: ROLLOUT changed while it was being written (now: "
                f"{Rollout.parse(now.name if now else None).describe()}); read it again and retry",
                None,
                rollout.canary or rollout.shadow or "",
            )
        self._seen_rollout[use_case] = new

    def has_current(self, use_case: str) -> bool:
        """True when a version of ``use_case`` was ever made current. On failure: OSError."""
        return self._read(use_case) is not None

    def current_name(self, use_case: str) -> str:
        pointer = self._read(use_case)
        if pointer is None:
            raise RegistryError(f"no {use_case} model published under {self.root} (run the bootstrap job)")
        return pointer.name

    def current(self, use_case: str) -> ModelVersion:
        return self.get(use_case, self.current_name(use_case))

    def get(self, use_case: str, name: str) -> ModelVersion:
        """Version ``name`` as a local directory and its manifest (on an object store:
        downloaded once and verified against the manifest before it is returned).

        On failure: RegistryError (no manifest: missing or incomplete; corrupt manifest;
        a downloaded file that fails its size or checksum); StorageError (an OSError) when
        the object store cannot be read (transient: hot reload retries)."""
        _check_name(use_case, name)
        path, manifest = self._store.open(use_case, name)
        return ModelVersion(use_case, name, path, manifest)

    def versions(self, use_case: str) -> list[str]:
        """The complete versions of ``use_case``, oldest first."""
        return self._store.names(use_case)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)
