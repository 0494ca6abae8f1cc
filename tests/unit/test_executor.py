"""The executor's failure policy, against a real (private) Redis and injected faults."""

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from decision_service.config import ServiceConfig
from decision_service.devtools.local_redis import free_port
from decision_service.domain.recommendation import CandidateSource, RecommendationRequest
from decision_service.features import redis_store
from decision_service.features.definitions import ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import RedisFeatureReads
from decision_service.use_cases.recommendation.executor import RecommendationExecutor
from decision_service.use_cases.recommendation.pipeline import recommendation_pipeline
from tests.unit.conftest import N_ITEMS

CONFIG = ServiceConfig(ann_candidates=20, popular_candidates=5, popular_fallback_candidates=30)


def seed_store(client, artifacts, stock=None):
    ids = list(artifacts.catalog.item_ids)
    items = np.tile(ITEM.defaults, (N_ITEMS, 1))
    items[:, ITEM.slot("i_stock")] = 10 if stock is None else stock
    items[:, ITEM.slot("i_category")] = artifacts.catalog.categories
    redis_store.RedisBulkWrites(client).write_group(ITEM, ids, items)
    redis_store.RedisBulkWrites(client).write_group(USER, ["u1"], USER.defaults[None, :])
    emb = np.asarray(artifacts.item_embeddings[3])[None, :] * 2
    redis_store.RedisBulkWrites(client).write_group(USER_EMBEDDING, ["u1"], emb)


def run(artifacts, url, user_id="u1", budget_s=1.0, num_items=5, mutate=None, **fields):
    async def go():
        client = MultiplexedRedis(url, timeout_s=0.5, connect_timeout_s=0.2)
        try:
            pipeline = recommendation_pipeline(CONFIG, RedisFeatureReads(client, 100, 100))
            if mutate:
                pipeline = mutate(pipeline)
            executor = RecommendationExecutor(pipeline, lambda _: artifacts)
            request = RecommendationRequest("r", user_id, num_items, **fields)
            return await executor.run(request, budget_s)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_known_user_gets_ann_candidates_scored_without_degradation(toy_artifacts, redis_client, redis_server):
    seed_store(redis_client, toy_artifacts)
    decision = run(toy_artifacts, redis_server.url)
    assert decision.degraded == []
    assert len(decision.items) == 5 and [i.rank for i in decision.items] == [1, 2, 3, 4, 5]
    assert any(i.source == CandidateSource.ANN for i in decision.items)
    assert decision.model_version == "v-toy"
    assert {"user_state", "ann", "popular", "features", "lightgbm"} <= set(decision.stage_ms)


def test_unknown_user_gets_popular_fallback_flagged(toy_artifacts, redis_client, redis_server):
    seed_store(redis_client, toy_artifacts)
    decision = run(toy_artifacts, redis_server.url, user_id="nobody")
    assert [(d.stage, d.reason) for d in decision.degraded] == [("user_context", "unknown_user")]
    assert {i.source for i in decision.items} == {CandidateSource.POPULAR}
    assert len(decision.items) == 5


def test_out_of_stock_items_are_never_served(toy_artifacts, redis_client, redis_server):
    stock = np.where(np.arange(N_ITEMS) % 2 == 0, 0, 5)
    seed_store(redis_client, toy_artifacts, stock=stock)
    decision = run(toy_artifacts, redis_server.url, num_items=20)
    assert decision.items and all(int(i.item_id[1:]) % 2 == 1 for i in decision.items)


def test_redis_down_degrades_within_the_deadline(toy_artifacts):
    start = time.perf_counter()
    decision = run(toy_artifacts, f"redis://127.0.0.1:{free_port()}/0", budget_s=0.5)
    elapsed = time.perf_counter() - start
    reasons = {(d.stage, d.reason) for d in decision.degraded}
    assert ("user_context", "store_unavailable") in reasons
    assert ("features", "store_unavailable") in reasons
    assert ("scoring", "features_unavailable") in reasons
    assert len(decision.items) == 5  # popular fallback, retrieval order
    assert elapsed < 2.0


def test_paused_redis_answers_within_budget(toy_artifacts, redis_client, redis_server):
    seed_store(redis_client, toy_artifacts)
    redis_client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    try:
        start = time.perf_counter()
        decision = run(toy_artifacts, redis_server.url, budget_s=0.1)
        elapsed = time.perf_counter() - start
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    assert ("user_context", "deadline_exceeded") in {(d.stage, d.reason) for d in decision.degraded}
    assert len(decision.items) == 5
    assert elapsed < 1.0  # budget 0.1 s; generous bound for a noisy machine, far below the pause


def test_broken_model_falls_back_to_retrieval_order(toy_artifacts, redis_client, redis_server):
    seed_store(redis_client, toy_artifacts)

    class Broken:
        name = "lightgbm"

        def score(self, state):
            raise RuntimeError("model exploded")

    decision = run(toy_artifacts, redis_server.url, mutate=lambda p: replace(p, scorer=Broken()))
    assert ("scoring", "model_error") in {(d.stage, d.reason) for d in decision.degraded}
    assert len(decision.items) == 5


def test_fail_closed_filter_error_fails_the_request(toy_artifacts, redis_client, redis_server):
    seed_store(redis_client, toy_artifacts)

    class Broken:
        name = "request_exclusions"
        fail_open = False

        def keep(self, state):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(toy_artifacts, redis_server.url, mutate=lambda p: replace(p, filters=(Broken(),)))
