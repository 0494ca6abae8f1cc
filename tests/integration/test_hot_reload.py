"""Hot reload: a published version is picked up under load without losing a request; a
corrupt or unservable version is refused, loudly, and the old one keeps serving."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import grpc
import lightgbm as lgb
import numpy as np
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.definitions import REGISTRY
from decision_service.models.recommendation_artifacts import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    ITEMS_FILE,
    MODEL_FILE,
)
from decision_service.models.registry import ModelRegistry
from tests.integration.conftest import start


def model_with(features: list[str]) -> lgb.Booster:
    x = np.random.default_rng(0).random((200, len(features)))
    return lgb.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(x, x[:, 0], feature_name=features),
        num_boost_round=3,
    )


def publish_raw(registry: ModelRegistry, model: lgb.Booster, make_current: bool = True) -> str:
    """Publishes ``model`` with the current version's index and catalog, no checks at all."""
    base = registry.current("recommendation")
    staging = registry.staging_dir("recommendation")
    for name in (INDEX_FILE, EMBEDDINGS_FILE, ITEMS_FILE):
        shutil.copy2(base.file(name), staging / name)
    model.save_model(str(staging / MODEL_FILE))
    manifest = {"feature_registry_version": REGISTRY.version}
    return registry.publish("recommendation", staging, manifest, make_current=make_current).name


class Load:
    """Background threads sending GetDecision continuously; records versions and errors."""

    def __init__(self, port: int, users: list[str], threads: int = 2) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.DecisionServiceStub(self.channel)
        self.users, self.stop, self.lock = users, threading.Event(), threading.Lock()
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, seed: int) -> None:
        i = seed
        while not self.stop.is_set():
            request = pb.GetDecisionRequest(
                recommendation=pb.RecommendationRequest(user_id=self.users[i % len(self.users)], num_items=10)
            )
            i += 1
            try:
                reply = self.stub.GetDecision(request, timeout=5)
                ok = len(reply.recommendation.items) == 10 and not reply.degraded
                with self.lock:
                    self.versions.append(reply.model_version)
                    if not ok:
                        self.errors.append(f"bad answer {reply.degraded}")
            except grpc.RpcError as exc:
                with self.lock:
                    self.errors.append(f"{exc.code()}: {exc.details()}")

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.channel.close()

    def wait_for(self, version: str, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.versions[-20:].count(version) >= 10:
                    return True
            time.sleep(0.05)
        return False


def test_hot_reload_under_load_loses_nothing_and_refuses_bad_versions(
    served_world, loop_thread, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    registry_root = tmp_path / "registry"
    shutil.copytree(served_world.registry_root, registry_root)  # never touch the shared one
    registry = ModelRegistry(registry_root)
    first = registry.current_name("recommendation")
    running = start(
        loop_thread,
        registry_root,
        served_world.redis.url,
        model_reload_interval_s=0.05,
        request_budget_ms=5_000,  # about reloads, not latency on a busy 2-core machine
    )
    counts = np.bincount(served_world.world.event_user, minlength=served_world.world.n_users)
    users = [str(served_world.world.user_ids[i]) for i in np.argsort(-counts)[:50]]
    caplog.set_level(logging.INFO, logger="decision_service.models.reload")
    try:
        with Load(running.port, users) as load:
            assert load.wait_for(first)
            # 1. A good new version: swapped in while requests keep flowing.
            good = publish_raw(registry, model_with(["x_emb_cosine", "i_popularity_pct"]))
            assert load.wait_for(good), "the new version was not picked up"

            # 2. A corrupt file (fails its checksum): refused, the good one keeps serving.
            corrupt = publish_raw(registry, model_with(["x_emb_dot"]), make_current=False)
            model_file = registry.get("recommendation", corrupt).file(MODEL_FILE)
            model_file.write_text(model_file.read_text()[:200])  # e.g. a truncated copy
            registry.set_current("recommendation", corrupt)
            # 3. A model asking for a feature the registry cannot serve.
            time.sleep(0.3)
            unservable = publish_raw(registry, model_with(["x_emb_dot", "i_not_declared"]))
            time.sleep(0.5)
            with load.lock:
                n_before = len(load.versions)
            time.sleep(0.3)
            with load.lock:
                after = load.versions[n_before:]
        assert after and set(after) == {good}
        assert not load.errors, load.errors[:5]
        assert len(load.versions) > 50
        assert running.models.get().version == good
        refused = running.reloader.stats.refused
        assert any(r.startswith(f"{corrupt}:") and "model.txt" in r for r in refused), refused
        assert any(r.startswith(f"{unservable}:") and "i_not_declared" in r for r in refused), refused
        assert f"REFUSED recommendation model {unservable}" in caplog.text
    finally:
        loop_thread.run(running.stop(1.0))
