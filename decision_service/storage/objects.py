"""The object-store calls the model registry needs, conditional writes included.

Bulk transfers (upload, download, listing) go through pyarrow's S3FileSystem; the three
calls that need an ETag go through boto3 (the optional ``s3`` extra), because pyarrow
exposes neither the ETag of what it read nor conditional PUTs:

* ``read_tagged``: GET returning the body and its ETag in one response;
* ``create``: PUT with ``If-None-Match: *`` (only if the key does not exist);
* ``replace``: PUT with ``If-Match: <etag>`` (only if the key is still what was read).

S3 evaluates the condition and the write atomically; a failed condition is HTTP 412
(PreconditionFailed). 409 (ConditionalRequestConflict: a concurrent conditional write to the
same key is in flight) is retried a few times, then reported as a lost race.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from decision_service.storage.location import StorageError, copy_to_local, filesystem

_CONFLICT_RETRIES = 5
_CONFLICT_BACKOFF_S = 0.05


@dataclass(frozen=True)
class Tagged:
    """An object's bytes and the ETag of exactly those bytes."""

    data: bytes
    tag: str


class S3Objects:
    """Keys under ``s3://bucket/prefix``; every ``key`` argument is relative to that root."""

    def __init__(self, uri: str) -> None:
        """``uri``: ``s3://bucket[/prefix]``. Endpoint, region and credentials: the AWS
        environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).

        On failure: StorageError for another scheme or a URI without a bucket."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError(f"not an s3://bucket/prefix URI: {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._fs, self._base = filesystem(self.uri)
        self._client: Any = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, key: str) -> str:
        return f"{self._base}/{key}"

    def where(self, key: str) -> str:
        """The full URI of ``key`` (for messages)."""
        return f"{self.uri}/{key}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use).

        On failure: StorageError saying to install the ``s3`` extra when boto3 is missing."""
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise StorageError(
                    "an s3:// model registry needs boto3 for its conditional writes: "
                    "pip install 'decision-service[s3]'"
                ) from None
            self._client = boto3.client("s3")
        return self._client

    # --- plain reads and writes (pyarrow)
    def read(self, key: str) -> bytes | None:
        """The object's bytes, None when it does not exist. On failure: StorageError."""
        try:
            with self._fs.open_input_stream(self._path(key)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.where(key)}: {exc}") from exc

    def upload(self, key: str, local: Path) -> None:
        """Puts the local file at ``key`` (overwrites). On failure: StorageError."""
        try:
            with open(local, "rb") as src, self._fs.open_output_stream(self._path(key)) as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except OSError as exc:
            raise StorageError(f"cannot upload {local} to {self.where(key)}: {exc}") from exc

    def download(self, key: str, local: Path) -> None:
        """Writes the object into the local file ``local``. On failure: StorageError
        (FileNotFoundError's message when the object does not exist)."""
        try:
            copy_to_local(self._fs, self._path(key), local)
        except OSError as exc:
            raise StorageError(f"cannot download {self.where(key)}: {exc}") from exc

    def list(self, key: str, recursive: bool = False) -> list[str]:
        """Paths relative to ``key`` of the files (and, non-recursive, folders) under it;
        an absent prefix lists nothing. On failure: StorageError."""
        start = self._path(key)
        try:
            infos = self._fs.get_file_info(
                pafs.FileSelector(start, allow_not_found=True, recursive=recursive)
            )
        except OSError as exc:
            raise StorageError(f"cannot list {self.where(key)}: {exc}") from exc
        return sorted(i.path[len(start) :].lstrip("/") for i in infos)

    # --- the tagged and conditional calls (boto3)
    def read_tagged(self, key: str) -> Tagged | None:
        """The object's bytes and ETag from one GET; None when it does not exist.

        On failure: StorageError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return Tagged(reply["Body"].read(), reply["ETag"])
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise StorageError(f"cannot read {self.where(key)}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read {self.where(key)}: {exc}") from exc

    def create(self, key: str, data: bytes) -> str | None:
        """Writes ``data`` only if ``key`` does not exist (``If-None-Match: *``).

        Returns the new ETag, or None when the key already exists (the race is lost).
        On failure: StorageError."""
        return self._put_if(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, tag: str) -> str | None:
        """Overwrites ``key`` only if its ETag is still ``tag`` (``If-Match``).

        Returns the new ETag, or None when the object changed or vanished since ``tag``
        was read (the race is lost). On failure: StorageError."""
        return self._put_if(key, data, IfMatch=tag)

    def _put_if(self, key: str, data: bytes, **condition: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                reply = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
                return str(reply["ETag"])
            except ClientError as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    return None
                if code in ("ConditionalRequestConflict", "409") and attempt < _CONFLICT_RETRIES:
                    time.sleep(_CONFLICT_BACKOFF_S * (attempt + 1))
                    continue
                if code in ("ConditionalRequestConflict", "409"):
                    return None
                raise StorageError(f"cannot write {self.where(key)}: {exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"cannot write {self.where(key)}: {exc}") from exc
        return None  # not reached: the loop returns or raises


def _code(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
