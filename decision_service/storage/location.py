"""Root URIs: a local directory or an object store, listed and mirrored to local disk.

A root is a local path or any URI pyarrow's filesystems understand (``s3://bucket/prefix``;
endpoint and credentials from the AWS environment variables, or pyarrow's URI query options
such as ``?endpoint_override=...``). Offline readers list a log with ``list_files`` and hand
DuckDB local copies from ``mirror_files``: log files are immutable once written (uniquely
named, put whole), so a copy whose size matches the listing is that file.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fnmatch
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

# where mirror_files keeps local copies of remote files unless told otherwise
CACHE_ENV = "DS_STORAGE_CACHE_DIR"
_COPY_BLOCK_BYTES = 1 << 20


class StorageError(OSError):
    """A remote file could not be listed or copied (names the file and the reason)."""


@dataclass(frozen=True)
class FileEntry:
    """A listed file: ``path`` is a local path, or a full URI (``s3://bucket/key``) when the
    root is remote; ``key`` the path inside the root's filesystem; ``size`` in bytes."""

    path: str
    key: str
    size: int


def is_remote(root: str | os.PathLike[str]) -> bool:
    """True for a URI with a scheme other than ``file://`` (``s3://...``)."""
    text = os.fspath(root)
    return "://" in text and not text.startswith("file://")


def filesystem(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``root`` and the path inside it (no trailing slash).

    On failure: pyarrow's error (e.g. ArrowInvalid for an unknown scheme)."""
    text = os.fspath(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(text)


def default_cache_dir() -> Path:
    """$DS_STORAGE_CACHE_DIR, else ``<tmp>/decision-service-cache``."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "decision-service-cache")


def list_files(root: str | os.PathLike[str], pattern: str) -> list[FileEntry]:
    """The files under ``root`` whose path relative to it matches ``pattern``, sorted.

    ``pattern``: '/'-separated components with shell wildcards, matched component by
    component (``decisions/use_case=x/date=*/hour=*/*.parquet``); ``*`` never crosses a '/'.
    A missing root or prefix lists nothing.
    On failure: StorageError naming the root (unreachable endpoint, access denied)."""
    fs, base = filesystem(root)
    parts = pattern.strip("/").split("/")
    fixed = 0
    while fixed < len(parts) - 1 and not any(c in parts[fixed] for c in "*?["):
        fixed += 1
    start = "/".join([base, *parts[:fixed]])
    rest = parts[fixed:]
    try:
        infos = fs.get_file_info(pafs.FileSelector(start, allow_not_found=True, recursive=len(rest) > 1))
    except OSError as exc:
        raise StorageError(f"cannot list {os.fspath(root)}/{'/'.join(parts[:fixed])}: {exc}") from exc
    prefix = _uri_prefix(root)
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(start) :].lstrip("/").split("/")
        if len(rel) == len(rest) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, rest, strict=True)):
            out.append(FileEntry(prefix + info.path, info.path, int(info.size or 0)))
    return sorted(out, key=lambda e: e.path)


def mirror_files(
    root: str | os.PathLike[str],
    entries: list[FileEntry],
    cache_dir: str | os.PathLike[str] | None = None,
    threads: int = 8,
) -> list[Path]:
    """Local copies of files ``list_files(root, ...)`` listed, in the same order: a local file
    is itself, a remote one
    is downloaded once into ``cache_dir`` (default ``default_cache_dir()``), under a hidden
    temporary name renamed into place when its size matches the listing. A cached copy of
    the listed size is reused. ``threads``: parallel downloads.

    On failure: StorageError naming the file (unreadable, or a size other than listed); no
    partial copy is left."""
    if not is_remote(root):
        return [Path(e.path) for e in entries]
    fs, _ = filesystem(root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    targets: list[Path] = []
    todo: list[tuple[FileEntry, Path]] = []
    for entry in entries:
        scheme = entry.path.split("://", 1)[0]
        target = cache / "files" / scheme / entry.key
        targets.append(target)
        try:
            if target.stat().st_size == entry.size:
                continue
        except FileNotFoundError:
            pass
        todo.append((entry, target))
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(todo)))) as pool:
            for future in [pool.submit(_download, fs, e, t) for e, t in todo]:
                future.result()
    return targets


def _download(fs: pafs.FileSystem, entry: FileEntry, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        copy_to_local(fs, entry.key, tmp)
        size = tmp.stat().st_size
        if size != entry.size:
            raise StorageError(f"{entry.path}: downloaded {size} bytes, listed {entry.size}")
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"cannot download {entry.path}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def copy_to_local(fs: pafs.FileSystem, path: str, local: Path) -> None:
    """Streams ``path`` of ``fs`` into the local file ``local`` (created or truncated)."""
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        while block := src.read(_COPY_BLOCK_BYTES):
            dst.write(block)


def cache_key(root: str) -> str:
    """A short stable directory name for a root URI (caches of several roots side by side)."""
    return hashlib.sha1(root.rstrip("/").encode(), usedforsecurity=False).hexdigest()[:16]


def _uri_prefix(root: str | os.PathLike[str]) -> str:
    text = os.fspath(root)
    if is_remote(text):
        return text.split("://", 1)[0] + "://"
    return ""
