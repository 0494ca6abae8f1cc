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
from google.protobuf.timestamp_pb2 import Timestamp

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
            deadline = time.monotonic() + 20  # at least a few answers, however busy the machine
            while time.monotonic() < deadline:
                time.sleep(0.1)
                with load.lock:
                    after = load.versions[n_before:]
                if len(after) >= 5:
                    break
        assert after and set(after) == {good}
        assert not load.errors, load.errors[:5]
        assert len(load.versions) > 50
        assert running.served["recommendation"].models.get().version == good
        refused = running.reloader.stats.refused
        assert any(r.startswith(f"{corrupt}:") and "model.txt" in r for r in refused), refused
        assert any(r.startswith(f"{unservable}:") and "i_not_declared" in r for r in refused), refused
        assert f"REFUSED recommendation model {unservable}" in caplog.text
    finally:
        loop_thread.run(running.stop(1.0))


def publish_fraud_copy(
    registry: ModelRegistry, base, model: lgb.Booster | None = None, truncate: str | None = None
) -> str:
    """A fraud version with ``base``'s files (and ``model`` instead of its model, if given;
    the file ``truncate`` cut short BEFORE publishing, so no reload can see it whole)."""
    from decision_service.models.fraud_artifacts import FRAUD

    staging = registry.staging_dir(FRAUD)
    for f in base.path.iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy2(f, staging / f.name)
    if model is not None:
        model.save_model(str(staging / "model.txt"))
    if truncate is not None:
        (staging / truncate).write_bytes((staging / truncate).read_bytes()[:1000])
    manifest = {k: v for k, v in base.manifest.items() if k not in ("files", "published_at")}
    return registry.publish(FRAUD, staging, manifest).name


def test_fraud_versions_hot_reload_and_bad_ones_are_refused(
    served_world, tiny_fraud_bootstrap, loop_thread, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from decision_service.models.fraud_artifacts import FRAUD

    _, _, fraud_base = tiny_fraud_bootstrap
    registry_root = tmp_path / "registry"
    shutil.copytree(served_world.registry_root, registry_root)
    target = registry_root / FRAUD / "versions" / fraud_base.name
    if not target.exists():  # other modules' fixtures may have added it to the shared registry
        shutil.copytree(fraud_base.path, target)
    registry = ModelRegistry(registry_root)
    registry.set_current(FRAUD, fraud_base.name)
    running = start(loop_thread, registry_root, served_world.redis.url, model_reload_interval_s=0.05,
                    request_budget_ms=5_000)
    caplog.set_level(logging.INFO, logger="decision_service.models.reload")
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.DecisionServiceStub(channel)
    counter = iter(range(10**6))

    def fraud_version() -> str:
        now = Timestamp()
        now.GetCurrentTime()
        request = pb.FraudCheckRequest(
            transaction_id=f"hr-{time.time_ns()}-{next(counter)}", user_id="u0000001", merchant_id="m00001",
            amount_minor=2500, currency="EUR", country="DE", occurred_at=now,
        )
        reply = stub.GetDecision(pb.GetDecisionRequest(fraud_check=request), timeout=5)
        assert reply.HasField("fraud")
        return reply.model_version

    def wait_for(version: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if fraud_version() == version:
                return True
            time.sleep(0.05)
        return False

    try:
        assert running.reloader.use_cases == ("recommendation", FRAUD)
        assert fraud_version() == fraud_base.name
        good = publish_fraud_copy(registry, registry.current(FRAUD))
        assert wait_for(good), "the new fraud version was not picked up"

        corrupt = publish_fraud_copy(registry, registry.current(FRAUD), truncate="neighbours.faiss")
        time.sleep(0.4)
        columns = ["r_amount_log", "f_not_declared"]
        unservable = publish_fraud_copy(registry, registry.get(FRAUD, good), model_with(columns))
        time.sleep(0.4)
        assert {fraud_version() for _ in range(5)} == {good}
        refused = running.reloader.stats.refused_by_use_case[FRAUD]
        assert any(r.startswith(f"{corrupt}:") and "neighbours.faiss" in r for r in refused), refused
        assert any(r.startswith(f"{unservable}:") and "f_not_declared" in r for r in refused), refused
        assert f"REFUSED fraud model {unservable}" in caplog.text
        assert running.reloader.stats.swaps_by_use_case == {FRAUD: 1}
    finally:
        channel.close()
        loop_thread.run(running.stop(1.0))
