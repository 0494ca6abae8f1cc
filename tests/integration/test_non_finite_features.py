"""Kind: non-finite values pass as healthy. A NaN / inf / zero user embedding or a NaN item
feature in real Redis is INVALID: the default is served, the status is logged, ``degraded``
names it, and the user still gets a full list (the ANN never queries with such a vector)."""

from __future__ import annotations

import grpc
import numpy as np
import pyarrow.dataset as ds
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.domain.features import FeatureStatus
from decision_service.features.definitions import EMBEDDING_DIM, ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_store import RedisBulkWrites, feature_key
from tests.integration.conftest import start


def recommend(stub, user_id, num_items=20):
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user_id, num_items=num_items))
    return stub.GetDecision(request, timeout=10)


def active_user(world):
    counts = np.bincount(world.event_user, minlength=world.n_users)
    return str(world.user_ids[int(np.argmax(counts))])


@pytest.fixture
def logged(served_world, loop_thread, tmp_path):
    running = start(loop_thread, served_world.registry_root, served_world.redis.url, log_dir=str(tmp_path / "logs"))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.DecisionServiceStub(channel), tmp_path / "logs"
    channel.close()
    loop_thread.run(running.stop(1.0))


def embedding(kind: str) -> np.ndarray:
    v = np.random.default_rng(3).normal(size=EMBEDDING_DIM).astype(np.float32)
    if kind == "nan":
        v[5] = np.nan
    elif kind == "inf":
        v[5] = np.inf
    elif kind == "zero":
        v[:] = 0.0
    return v


@pytest.mark.parametrize("kind", ["nan", "inf", "zero"])
def test_kind_non_finite_user_embedding_is_invalid_and_never_queries_the_index(
    kind, served_world, stub, loop_thread
):
    client = served_world.redis.client()
    donor = active_user(served_world.world)
    user = f"bad-embedding-{kind}"
    # a real profile (so only the embedding is bad) and a bad embedding, written as the pipeline would
    raw_profile = client.get(feature_key(USER, donor))
    assert raw_profile is not None
    client.set(feature_key(USER, user), raw_profile)
    RedisBulkWrites(client).write_group(USER_EMBEDDING, [user], embedding(kind)[None, :])

    reply = recommend(stub, user, num_items=20)
    assert [(d.stage, d.reason) for d in reply.degraded] == [("user_context", "embedding_invalid")]
    items = reply.recommendation.items
    assert len(items) == 20  # a full list, from the popular fallback
    assert {i.source for i in items} == {pb.CANDIDATE_SOURCE_POPULAR}
    assert all(np.isfinite(i.score) for i in items)


def test_kind_non_finite_item_feature_is_invalid_default_served_and_logged(served_world, logged, loop_thread):
    running, stub, logs = logged
    client = served_world.redis.client()
    user = "someone-new-nan-item"
    first = recommend(stub, user, num_items=10)
    assert [(d.stage, d.reason) for d in first.degraded] == [("user_context", "unknown_user")]
    victim = first.recommendation.items[0].item_id
    key = feature_key(ITEM, victim)
    original = client.get(key)
    assert original is not None
    poisoned = np.frombuffer(original[8:], np.float32).copy()
    poisoned[ITEM.slot("i_price")] = np.nan
    try:
        RedisBulkWrites(client).write_group(ITEM, [victim], poisoned[None, :])
        reply = recommend(stub, user, num_items=10)
    finally:
        client.set(key, original)
    assert ("features", "items_invalid") in {(d.stage, d.reason) for d in reply.degraded}
    assert len(reply.recommendation.items) == 10
    assert all(np.isfinite(i.score) for i in reply.recommendation.items)
    loop_thread.run(running.stop(1.0))  # graceful stop flushes the decision log

    rows = ds.dataset(logs / "decisions", format="parquet", partitioning="hive").to_table().to_pylist()
    row = next(r for r in rows if r["decision_id"] == reply.decision_id)
    at = row["item_ids"].index(victim)
    assert row["item_feature_status"][at] == FeatureStatus.INVALID
    np.testing.assert_array_equal(np.asarray(row["item_features"][at], np.float32), ITEM.defaults)
    assert np.isfinite(np.asarray(row["cross_features"], np.float32)).all()
    assert {"stage": "features", "reason": "items_invalid"} in row["degraded"]
