"""Shared fixtures: a tiny bootstrapped world (no Redis needed) and a private Redis server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.local_s3 import LocalS3
from decision_service.models.registry import ModelVersion

# Compiling trees (DS_SCORER=auto with lleaves installed) takes seconds per new model version:
# tests score with LightGBM unless they ask otherwise (tests/unit/test_tree_predictor.py).
os.environ.setdefault("DS_SCORER", "lightgbm")
# The suite tests the product on the synthetic example project (whatever DS_PROJECT the shell
# has): set before anything imports decision_service.features.definitions.
os.environ["DS_PROJECT"] = str(Path(__file__).resolve().parents[1] / "examples" / "synthetic")

SCALE_SKIP_REASON = (
    "the scale suite (the Spark engine) runs in `make test-scale`, which installs PySpark and "
    "needs Java 17; set DS_SCALE=1 to run it here"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`scale` / `spark` tests are skipped, with the reason, unless DS_SCALE=1 (make test-scale)."""
    if os.environ.get("DS_SCALE") == "1":
        return
    skip = pytest.mark.skip(reason=SCALE_SKIP_REASON)
    for item in items:
        if "scale" in item.keywords or "spark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated "tiny" preset world (~1,500 users, 2,000 items, ~47k events)."""
    from offline.simulation.world import generate_world, preset

    out = tmp_path_factory.mktemp("tiny") / "world"
    generate_world(preset("tiny"), out)
    return out


@pytest.fixture(scope="session")
def tiny_bootstrap(
    tiny_world_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, ModelVersion]:
    """(world_dir, registry_root, published ModelVersion) of the tiny world; no Redis.

    The serving state (features + embeddings at world now) is saved under
    ``world_dir/serving``; ``offline.features.materialize.materialize_world(world_dir, url)`` loads
    it into a Redis in a second or so.
    """
    from offline.runs.bootstrap import bootstrap

    registry_root = tmp_path_factory.mktemp("tiny_registry")
    version = bootstrap(tiny_world_dir, registry_root)
    return tiny_world_dir, registry_root, version


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server this test session started (and stops); never a shared one.

    A missing redis-server is an error, not a skip: `make test` installs it.
    """
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client of the session's private server, emptied before each test (we own it)."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_fraud_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelVersion]:
    """(fraud world dir, registry root, published fraud ModelVersion) of the tiny payments world.

    One training thread: OpenMP fan-out on a busy 2-core machine spins instead of working.
    """
    from offline.runs.bootstrap_fraud import bootstrap_fraud
    from offline.simulation.fraud_world import fraud_preset, generate_fraud_world
    from offline.training.train_fraud import FraudTrainConfig

    world_dir = tmp_path_factory.mktemp("fraud_tiny") / "world"
    generate_fraud_world(fraud_preset("tiny"), world_dir)
    registry_root = tmp_path_factory.mktemp("fraud_registry")
    version = bootstrap_fraud(world_dir, registry_root, config=FraudTrainConfig(threads=1))
    return world_dir, registry_root, version


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """moto's S3-compatible server, in this process on a free loopback port (stopped at the end)."""
    with LocalS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """``s3://<a fresh bucket>`` on the session's server; the AWS variables point pyarrow and
    boto3 at it and $DS_STORAGE_CACHE_DIR at a fresh directory for this test."""
    import uuid

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DS_STORAGE_CACHE_DIR", str(tmp_path / "storage-cache"))
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return f"s3://{name}"
