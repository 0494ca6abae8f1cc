"""Where the registry and the logs live: a local directory or an object store (``s3://``).

* ``location``: a root URI -> a pyarrow filesystem and path; listing and mirroring files
  (the offline readers' side: DuckDB reads local files).
* ``objects``: the few object-store calls the model registry needs, conditional writes
  included (S3 ``If-None-Match: *`` / ``If-Match``).

Endpoint and credentials come from the usual AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``...), read by both
pyarrow and boto3. This package imports nothing else of decision_service.
"""

from decision_service.storage.location import filesystem, is_remote, list_files, mirror_files

__all__ = ["filesystem", "is_remote", "list_files", "mirror_files"]
