"""A real server (in-process grpc.aio on port 0) over the tiny world's published artifacts
and a private redis-server holding the tiny world's materialized features."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ServiceConfig
from decision_service.devtools.local_redis import LocalRedis
from decision_service.server.app import RunningServer, start_server
from offline.features.materialize import materialize
from offline.simulation.world import World


class LoopThread:
    """An asyncio loop on a background thread, for running the aio server beside sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 60.0):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"{coro.__qualname__} did not finish in {timeout} s; tasks:\n{self._tasks()}") from None

    def _tasks(self) -> str:
        """Where every task of the loop is waiting: a hang's report, instead of a bare timeout."""
        import io

        async def dump() -> str:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.print_stack(limit=12, file=out)
            return out.getvalue()

        return asyncio.run_coroutine_threadsafe(dump(), self.loop).result(5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class ServedWorld:
    world: World
    registry_root: Path
    version: str
    redis: LocalRedis
    world_dir: Path | None = None


@pytest.fixture(scope="session")
def served_world(tiny_bootstrap, redis_server) -> ServedWorld:
    world_dir, registry_root, version = tiny_bootstrap
    materialize(world_dir, redis_server.url)
    return ServedWorld(World.load(world_dir), Path(registry_root), version.name, redis_server, world_dir=Path(world_dir))


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def start(loop_thread: LoopThread, registry_root: Path, redis_url: str, **overrides) -> RunningServer:
    """A server on port 0; its logs go to a fresh temporary directory unless ``log_dir`` is given."""
    overrides.setdefault("log_dir", tempfile.mkdtemp(prefix="ds-logs-"))
    overrides.setdefault("scorer", "lightgbm")  # compiling trees is benchmarked, not tested, here
    config = ServiceConfig(
        port=0, registry_dir=registry_root, redis_url=redis_url, ann_candidates=100, **overrides
    )
    return loop_thread.run(start_server(config))


@pytest.fixture(scope="session")
def server(served_world, loop_thread) -> Iterator[RunningServer]:
    running = start(loop_thread, served_world.registry_root, served_world.redis.url)
    yield running
    loop_thread.run(running.stop(1.0))


@pytest.fixture(scope="session")
def channel(server) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def stub(channel) -> pb_grpc.DecisionServiceStub:
    return pb_grpc.DecisionServiceStub(channel)


def publish_fraud_version(rec_registry: Path | str, fraud_version) -> None:  # type: ignore[no-untyped-def]
    """Copies the tiny fraud model version into the recommendation registry and makes it
    CURRENT there (a server needs both use cases' versions in one registry); idempotent."""
    from decision_service.models.fraud_artifacts import FRAUD
    from decision_service.models.registry import ModelRegistry

    target = Path(rec_registry) / FRAUD / "versions" / fraud_version.name
    if not target.exists():
        shutil.copytree(fraud_version.path, target)
        ModelRegistry(rec_registry).set_current(FRAUD, fraud_version.name)
