"""The retrain job on an object-store registry (moto's S3 server, started by the tests): it
reads CURRENT from the bucket, gates against it, publishes the new version to the bucket and
moves CURRENT there; another machine then loads exactly what was published."""

from __future__ import annotations

from decision_service.models.registry import ModelRegistry
from offline.loop.retrain import retrain
from tests.integration.test_hot_reload_s3 import upload_current
from tests.offline.test_retrain import CFG, logged_slates


def test_retrain_publishes_to_an_s3_registry(tiny_bootstrap, s3_bucket, tmp_path):
    _, shared_registry, _ = tiny_bootstrap
    root = f"{s3_bucket}/registry"
    base = upload_current(shared_registry, ModelRegistry(root, cache_dir=tmp_path / "seed"))

    result = retrain(logged_slates(600), root, CFG, force=True)
    assert result.published and result.version == "v0002"

    replica = ModelRegistry(root, cache_dir=tmp_path / "replica")
    assert replica.versions("recommendation") == [base, "v0002"]
    version = replica.current("recommendation")
    assert version.name == "v0002" and version.manifest["parent_version"] == base
    version.verify()  # every file as the manifest says, downloaded to this machine's cache
    assert version.path.is_relative_to(tmp_path / "replica")
