"""A model registry on a filesystem: immutable version directories and an atomic pointer.

Layout::

    <root>/<use case>/versions/<version>/manifest.json   + the version's artifact files
    <root>/<use case>/CURRENT                            name of the serving version

Publishing writes a complete version directory under a temporary name, renames it into
``versions/`` and then replaces ``CURRENT`` with ``os.replace``: a reader sees the old
version or the new one, never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(RuntimeError):
    """The registry or one of its versions is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class ModelVersion:
    use_case: str
    name: str
    path: Path
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
            if _sha256(path) != meta["sha256"]:
                raise RegistryError(f"{self.use_case}/{self.name}: {name} fails its checksum")


class ModelRegistry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def staging_dir(self, use_case: str) -> Path:
        """A fresh directory to write a candidate version into before ``publish``."""
        base = self.root / use_case
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=base))

    def publish(
        self,
        use_case: str,
        staging: Path,
        manifest: dict[str, Any],
        make_current: bool = True,
    ) -> ModelVersion:
        """Seals ``staging`` as the next version (manifest + checksums) and, by default,
        points CURRENT at it."""
        versions = self.root / use_case / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        name = self._next_name(versions)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(staging.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
        full = {
            **manifest,
            "use_case": use_case,
            "version": name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        _write_atomic(staging / MANIFEST, json.dumps(full, indent=2, sort_keys=True))
        os.rename(staging, versions / name)
        if make_current:
            self.set_current(use_case, name)
        return ModelVersion(use_case, name, versions / name, full)

    def set_current(self, use_case: str, name: str) -> None:
        if not (self.root / use_case / "versions" / name / MANIFEST).is_file():
            raise RegistryError(f"{use_case}: no published version {name!r}")
        _write_atomic(self.root / use_case / "CURRENT", name + "\n")

    def current_name(self, use_case: str) -> str:
        pointer = self.root / use_case / "CURRENT"
        try:
            return pointer.read_text().strip()
        except FileNotFoundError:
            raise RegistryError(
                f"no {use_case} model published under {self.root} (run the bootstrap job)"
            ) from None

    def current(self, use_case: str) -> ModelVersion:
        return self.get(use_case, self.current_name(use_case))

    def get(self, use_case: str, name: str) -> ModelVersion:
        path = self.root / use_case / "versions" / name
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise RegistryError(f"{use_case}/{name}: no manifest at {path}") from None
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{use_case}/{name}: corrupt manifest ({exc})") from None
        return ModelVersion(use_case, name, path, manifest)

    def versions(self, use_case: str) -> list[str]:
        versions = self.root / use_case / "versions"
        if not versions.is_dir():
            return []
        return sorted(p.name for p in versions.iterdir() if _VERSION_RE.match(p.name))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _next_name(versions: Path) -> str:
        numbers = [int(m.group(1)) for p in versions.iterdir() if (m := _VERSION_RE.match(p.name))]
        return f"v{max(numbers, default=0) + 1:04d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted: leave no partial temp behind
        tmp.unlink(missing_ok=True)
        raise
