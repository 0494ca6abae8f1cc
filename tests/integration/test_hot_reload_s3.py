"""A server whose registry is on object storage (moto's S3 server, started by the tests):
it serves CURRENT from a verified local copy, hot-reloads a newly published version under
load without losing a request, and refuses a version whose object was corrupted in the store."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from decision_service.models.recommendation_artifacts import MODEL_FILE
from decision_service.models.registry import ModelRegistry
from tests.integration.conftest import start
from tests.integration.test_hot_reload import Load, model_with, publish_raw

USE_CASE = "recommendation"


def upload_current(local_root: Path, registry: ModelRegistry) -> str:
    """Publishes the local registry's CURRENT recommendation version into ``registry``."""
    base = ModelRegistry(local_root).current(USE_CASE)
    staging = registry.staging_dir(USE_CASE)
    for f in base.path.iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy2(f, staging / f.name)
    manifest = {k: v for k, v in base.manifest.items() if k not in ("files", "version", "created_at")}
    return registry.publish(USE_CASE, staging, manifest).name


def test_a_server_on_an_s3_registry_hot_reloads_and_refuses_a_corrupt_object(
    served_world, loop_thread, s3_bucket, s3_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = f"{s3_bucket}/registry"
    registry = ModelRegistry(root, cache_dir=tmp_path / "publisher-cache")
    first = upload_current(served_world.registry_root, registry)
    server_cache = tmp_path / "server-cache"
    running = start(
        loop_thread,
        root,
        served_world.redis.url,
        registry_cache_dir=server_cache,
        model_reload_interval_s=0.05,
        request_budget_ms=5_000,  # about reloads, not latency on a busy 2-core machine
    )
    counts = np.bincount(served_world.world.event_user, minlength=served_world.world.n_users)
    users = [str(served_world.world.user_ids[i]) for i in np.argsort(-counts)[:50]]
    caplog.set_level(logging.INFO, logger="decision_service.models.reload")
    try:
        with Load(running.port, users) as load:
            assert load.wait_for(first)
            assert any(server_cache.rglob(f"{first}/{MODEL_FILE}"))  # served from its verified local copy

            # a good new version, published by another machine: downloaded, verified, swapped in
            good = publish_raw(registry, model_with(["x_emb_cosine", "i_popularity_pct"]))
            assert load.wait_for(good), "the new version was not picked up from s3"
            assert any(server_cache.rglob(f"{good}/{MODEL_FILE}"))

            # a version whose model object is corrupted in the store after publishing
            corrupt = publish_raw(registry, model_with(["x_emb_dot"]), make_current=False)
            key = f"registry/{USE_CASE}/versions/{corrupt}/{MODEL_FILE}"
            bucket = s3_bucket.removeprefix("s3://")
            body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
            s3_server.client().put_object(Bucket=bucket, Key=key, Body=body[:200])
            registry.set_current(USE_CASE, corrupt)
            deadline = time.monotonic() + 20
            while not running.reloader.stats.refused and time.monotonic() < deadline:
                time.sleep(0.05)
            load.wait_for(good)  # a few more answers after the refusal
            with load.lock:
                recent = load.versions[-20:]
        assert set(recent) == {good}
        assert not load.errors, load.errors[:5]
        refused = running.reloader.stats.refused
        assert any(r.startswith(f"{corrupt}:") and MODEL_FILE in r for r in refused), refused
        assert not any(server_cache.rglob(f"{corrupt}/*"))  # the bad copy never reached the cache
        assert running.served[USE_CASE].models.get().version == good
    finally:
        loop_thread.run(running.stop(1.0))
