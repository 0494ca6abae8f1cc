"""A Redis Cluster as the online store is refused loudly, never served silently.

Until the cluster-aware store (issue "Beyond one machine"), a cluster node's multi-key reads
fail with CROSSSLOT / MOVED; answering would degrade every decision while health said
SERVING. A real local cluster (3 primaries, `redis-cli --cluster create`) is started here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_service import project as projects
from decision_service.devtools.local_redis import LocalRedisCluster
from tests.integration.conftest import LoopThread, start

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(3) as c:
        yield c


def test_kind_silent_cluster_the_server_stays_not_serving_and_says_why(
    cluster: LocalRedisCluster, served_world, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="decision_service.server.app")
    running = start(loop_thread, served_world.registry_root, cluster.urls[0])
    try:
        deadline = time.monotonic() + 10
        while not running._readiness.done() and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        assert running._readiness.done()  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert any("is a Redis Cluster node" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        loop_thread.run(running.stop(1.0))


def test_kind_silent_cluster_offline_jobs_refuse_it_before_writing(
    cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    root = tmp_path / "shop"
    env = {k: v for k, v in os.environ.items() if k != projects.ENV}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "offline.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert run("init", str(root)).returncode == 0
    out = run("bootstrap", "--project", str(root), "--redis-url", cluster.urls[1])
    assert out.returncode == 1, out.stdout + out.stderr
    assert "is a Redis Cluster node (INFO cluster: cluster_enabled:1)" in out.stderr, out.stderr
    assert not (root / ".ds" / "registry").exists()
