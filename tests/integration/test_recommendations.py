"""GetDecision over real gRPC, real Redis, the tiny world's FAISS index and LightGBM model."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.features.definitions import CATEGORIES
from decision_service.features.redis_store import layout_of
from decision_service.server.servicer import DEBUG_TIMINGS_HEADER, TIMINGS_TRAILER


def recommend(stub, user_id, num_items=10, timeout=5.0, **fields):
    request = pb.GetDecisionRequest(
        request_id="t-1",
        recommendation=pb.RecommendationRequest(user_id=user_id, num_items=num_items, **fields),
    )
    return stub.GetDecision(request, timeout=timeout)


def active_users(world, n):
    counts = np.bincount(world.event_user, minlength=world.n_users)
    return [str(world.user_ids[i]) for i in np.argsort(-counts)[:n]]


def test_health_is_serving_and_reflection_lists_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest(service="decision.v1.DecisionService")).status != (
        health_pb2.HealthCheckResponse.SERVING
    ):
        assert time.monotonic() < deadline, "never became SERVING"
        time.sleep(0.05)
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "decision.v1.DecisionService" in names


def test_known_user_gets_a_ranked_personalised_list(stub, served_world):
    user = active_users(served_world.world, 1)[0]
    reply = recommend(stub, user, num_items=10)
    items = reply.recommendation.items
    assert len(items) == 10
    assert [i.rank for i in items] == list(range(1, 11))
    assert reply.model_version == served_world.version
    assert list(reply.degraded) == []
    assert len(reply.decision_id) == 32 and reply.request_id == "t-1"
    assert len({i.item_id for i in items}) == 10
    assert {i.source for i in items} <= {pb.CANDIDATE_SOURCE_ANN, pb.CANDIDATE_SOURCE_POPULAR}
    assert any(i.source == pb.CANDIDATE_SOURCE_ANN for i in items)
    assert all(i.category in CATEGORIES for i in items)


def test_answers_never_contain_seen_or_out_of_stock_items(stub, served_world):
    world = served_world.world
    client = served_world.redis.client()
    seen_key = layout_of(client).seen_key  # standalone or the cluster's hash-tagged names
    out_of_stock = {str(world.item_ids[i]) for i in np.flatnonzero(world.item_stock <= 0)}
    assert out_of_stock, "the tiny world should have out-of-stock items"
    for user in active_users(world, 25):
        seen = {s.decode() for s in client.zrange(seen_key(user), 0, -1)}
        assert seen, f"{user} should have history in Redis"
        served = {i.item_id for i in recommend(stub, user, num_items=30).recommendation.items}
        assert not served & seen
        assert not served & out_of_stock


def test_exclusions_and_category_allow_list_are_honoured(stub, served_world):
    user = active_users(served_world.world, 3)[2]
    first = [i.item_id for i in recommend(stub, user, num_items=10).recommendation.items]
    excluded = first[:3]
    second = [
        i.item_id for i in recommend(stub, user, num_items=10, exclude_item_ids=excluded).recommendation.items
    ]
    assert not set(second) & set(excluded)
    assert len(second) == 10
    narrow = recommend(stub, user, num_items=8, allowed_categories=["books", "toys"]).recommendation.items
    assert len(narrow) == 8
    assert {i.category for i in narrow} <= {"books", "toys"}


def test_unknown_user_gets_popular_fallback_flagged_degraded(stub):
    reply = recommend(stub, "never-seen-user", num_items=5)
    assert [(d.stage, d.reason) for d in reply.degraded] == [("user_context", "unknown_user")]
    assert len(reply.recommendation.items) == 5
    assert {i.source for i in reply.recommendation.items} == {pb.CANDIDATE_SOURCE_POPULAR}


def test_stage_timings_are_reported_on_request(stub, served_world):
    user = active_users(served_world.world, 1)[0]
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=5))
    _, call = stub.GetDecision.with_call(request, timeout=5, metadata=((DEBUG_TIMINGS_HEADER, "1"),))
    trailer = dict(call.trailing_metadata())[TIMINGS_TRAILER]
    stages = dict(part.split("=") for part in trailer.split(";"))
    assert {"user_state", "ann", "popular", "previously_seen", "features", "lightgbm"} <= set(stages)


@pytest.mark.parametrize(
    ("recommendation", "field"),
    [
        ({"user_id": "", "num_items": 5}, "recommendation.user_id"),
        ({"user_id": "u1", "num_items": 0}, "recommendation.num_items"),
        ({"user_id": "u1", "num_items": 100_000}, "recommendation.num_items"),
        (
            {"user_id": "u1", "num_items": 5, "exclude_item_ids": ["x"] * 5000},
            "recommendation.exclude_item_ids",
        ),
        (
            {"user_id": "u1", "num_items": 5, "allowed_categories": ["nope"]},
            "recommendation.allowed_categories[0]",
        ),
        (
            {"user_id": "u1", "num_items": 5, "context": pb.RequestContext(locale="??")},
            "recommendation.context.locale",
        ),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(stub, recommendation, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDecision(
            pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(**recommendation)), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")


def test_missing_use_case_and_unserved_calls_get_clear_statuses(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDecision(pb.GetDecisionRequest(request_id="x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "use_case" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordOutcome(pb.RecordOutcomeRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("outcomes:")
