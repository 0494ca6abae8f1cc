"""Kind: non-finite values pass as healthy. Every read path (stored groups of both use cases,
the user's query vector, cross and request-time features, neighbour queries) serves the
declared default for a NaN / inf, says INVALID, and never queries an index with it."""

import asyncio

import numpy as np
import pytest

from decision_service.config import ServiceConfig
from decision_service.domain.features import FeatureStatus, usable_query_vector
from decision_service.domain.recommendation import RecommendationRequest
from decision_service.features import packed, redis_store
from decision_service.features.definitions import EMBEDDING_DIM, ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import RedisFeatureReads
from decision_service.stages.base import RecommendationState
from decision_service.stages.hydrators.user_state import LoadUserState
from decision_service.stages.sources.ann import AnnCandidates, InvalidQueryVector
from decision_service.use_cases.recommendation.executor import RecommendationExecutor
from decision_service.use_cases.recommendation.pipeline import recommendation_pipeline
from tests.unit.conftest import N_ITEMS, make_state

BAD = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("bad", BAD)
def test_kind_non_finite_stored_value_decodes_invalid_with_defaults(bad):
    now = redis_store.now_ms()
    values = np.arange(3 * ITEM.width, dtype=np.float32).reshape(3, ITEM.width)
    values[1, ITEM.slot("i_price")] = bad
    got = packed.decode(ITEM, packed.encode(ITEM, values, now), now)
    assert got.status.tolist() == [FeatureStatus.PRESENT, FeatureStatus.INVALID, FeatureStatus.PRESENT]
    np.testing.assert_array_equal(got.values[1], ITEM.defaults)
    np.testing.assert_array_equal(got.values[2], values[2])
    # the slow path (a missing value in the batch) judges it the same way
    got = packed.decode(ITEM, [*packed.encode(ITEM, values, now), None], now)
    assert got.status.tolist()[1] == FeatureStatus.INVALID


@pytest.mark.parametrize("vector", [np.full(4, np.nan), [1.0, np.inf, 0, 0], np.zeros(4), np.full(4, 3e38)])
def test_kind_non_finite_query_vector_is_not_usable(vector):
    assert not usable_query_vector(np.asarray(vector, np.float32))
    assert usable_query_vector(np.ones(4, np.float32))


def test_kind_non_finite_ann_source_never_queries_the_index(toy_artifacts):
    v = np.ones(EMBEDDING_DIM, np.float32)
    v[3] = np.nan
    with pytest.raises(InvalidQueryVector):
        AnnCandidates(10).retrieve(make_state(toy_artifacts, embedding=v))
    with pytest.raises(InvalidQueryVector):
        AnnCandidates(10).retrieve(make_state(toy_artifacts, embedding=np.zeros(EMBEDDING_DIM, np.float32)))


def _load_user(url: str, user_id: str, artifacts):
    async def go():
        client = MultiplexedRedis(url)
        try:
            request = RecommendationRequest("r", user_id, 5)
            state = RecommendationState(request, artifacts)  # artifacts: the catalog maps seen ids
            return await LoadUserState(RedisFeatureReads(client, 100, 100)).load(state)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["nan", "inf", "zero"])
def test_kind_non_finite_user_embedding_loads_invalid(kind, redis_client, redis_server, toy_artifacts):
    v = np.ones((1, EMBEDDING_DIM), np.float32)
    v[0, 7] = {"nan": np.nan, "inf": np.inf, "zero": 0.0}[kind]
    if kind == "zero":
        v[:] = 0.0
    redis_store.RedisBulkWrites(redis_client).write_group(USER_EMBEDDING, ["u1"], v)
    user = _load_user(redis_server.url, "u1", toy_artifacts)
    assert user.embedding is None and user.embedding_status == FeatureStatus.INVALID


def _recommend(artifacts, url, num_items=5):
    async def go():
        client = MultiplexedRedis(url, timeout_s=0.5, connect_timeout_s=0.2)
        try:
            config = ServiceConfig(ann_candidates=20, popular_candidates=5, popular_fallback_candidates=30)
            executor = RecommendationExecutor(
                recommendation_pipeline(config, RedisFeatureReads(client, 100, 100)), lambda _: artifacts
            )
            return await executor.run(RecommendationRequest("r", "u1", num_items), 1.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_kind_non_finite_recommendation_groups_are_flagged_and_cross_stays_finite(
    toy_artifacts, redis_client, redis_server
):
    ids = list(toy_artifacts.catalog.item_ids)
    items = np.tile(ITEM.defaults, (N_ITEMS, 1))
    items[:, ITEM.slot("i_stock")] = 10
    items[0, ITEM.slot("i_price")] = np.nan  # the most popular item
    redis_store.RedisBulkWrites(redis_client).write_group(ITEM, ids, items)
    user = USER.defaults[None, :].copy()
    user[0, USER.slot("u_avg_price")] = np.inf
    redis_store.RedisBulkWrites(redis_client).write_group(USER, ["u1"], user)
    emb = np.asarray(toy_artifacts.item_embeddings[3])[None, :].copy()
    emb[0, 0] = np.nan
    redis_store.RedisBulkWrites(redis_client).write_group(USER_EMBEDDING, ["u1"], emb)
    decision = _recommend(toy_artifacts, redis_server.url)
    reasons = [(d.stage, d.reason) for d in decision.degraded]
    assert ("user_context", "embedding_invalid") in reasons
    assert ("features", "user_invalid") in reasons
    assert ("features", "items_invalid") in reasons
    assert len(decision.items) == 5 and all(np.isfinite(i.score) for i in decision.items)


def test_kind_non_finite_cross_feature_overflow_serves_defaults(toy_artifacts, redis_client, redis_server):
    ids = list(toy_artifacts.catalog.item_ids)
    items = np.tile(ITEM.defaults, (N_ITEMS, 1))
    items[:, ITEM.slot("i_stock")] = 10
    items[:, ITEM.slot("i_price")] = 3e38  # finite, but price / avg overflows float32
    redis_store.RedisBulkWrites(redis_client).write_group(ITEM, ids, items)
    user = USER.defaults[None, :].copy()
    user[0, USER.slot("u_avg_price")] = 1e-3
    redis_store.RedisBulkWrites(redis_client).write_group(USER, ["u1"], user)
    redis_store.RedisBulkWrites(redis_client).write_group(
        USER_EMBEDDING, ["u1"], np.asarray(toy_artifacts.item_embeddings[3])[None, :]
    )
    decision = _recommend(toy_artifacts, redis_server.url)
    assert ("features", "user_item_invalid") in [(d.stage, d.reason) for d in decision.degraded]
    assert all(np.isfinite(i.score) for i in decision.items)
