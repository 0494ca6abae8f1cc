"""Kind: non-finite values pass as healthy, fraud read paths: stored profiles decode INVALID
(defaults, status logged), request-time features that overflow and neighbour queries with a
NaN / inf are replaced by declared defaults, flagged in ``degraded``, never searched."""

import asyncio

import numpy as np
import pytest

from decision_service.config import ServiceConfig
from decision_service.domain.features import FeatureStatus
from decision_service.domain.fraud import FraudCheckRequest
from decision_service.features import redis_store
from decision_service.features.definitions import (
    DEVICE,
    FRAUD_NEIGHBOUR_COLUMNS,
    FRAUD_NEIGHBOURS,
    FRAUD_USER,
    MERCHANT,
    REGISTRY,
)
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import RedisFeatureReads, RedisStateWrites
from decision_service.stages.hydrators.neighbour_fraud_rate import InvalidNeighbourQuery, NeighbourFraudRate
from decision_service.use_cases.fraud.executor import FraudExecutor
from decision_service.use_cases.fraud.pipeline import fraud_pipeline, policy_config
from tests.unit.fraud.conftest import COLUMNS, OCCURRED_MS, flat_neighbours, make_state, row_with, transaction


def test_kind_non_finite_fraud_profile_reads_invalid(redis_client, redis_server, monkeypatch):
    monkeypatch.setattr(redis_store, "now_ms", lambda: OCCURRED_MS + 1_000)
    profile = FRAUD_USER.defaults[None, :] + 1.0
    profile[0, 2] = np.nan
    redis_store.RedisBulkWrites(redis_client).write_group(FRAUD_USER, ["u1"], profile, event_ms=OCCURRED_MS)
    redis_store.RedisBulkWrites(redis_client).write_group(MERCHANT, ["m1"], MERCHANT.defaults[None, :], event_ms=OCCURRED_MS)
    redis_store.RedisBulkWrites(redis_client).write_group(
        DEVICE, ["d1"], np.full((1, DEVICE.width), np.inf, np.float32), event_ms=OCCURRED_MS
    )

    async def go():
        client = MultiplexedRedis(redis_server.url)
        try:
            return await RedisFeatureReads(client, 100, 100).read_payment_context("t-1", "u1", "m1", "d1", "", "", OCCURRED_MS)
        finally:
            await client.aclose()

    ctx = asyncio.run(go())
    assert int(ctx.user.status[0]) == FeatureStatus.INVALID
    np.testing.assert_array_equal(ctx.user.values[0], FRAUD_USER.defaults)
    assert int(ctx.merchant.status[0]) == FeatureStatus.PRESENT
    assert int(ctx.device.status[0]) == FeatureStatus.INVALID


def test_kind_non_finite_fraud_executor_flags_groups_and_scores_finite_row(
    fraud_artifacts, redis_client, redis_server, monkeypatch
):
    monkeypatch.setattr(redis_store, "now_ms", lambda: OCCURRED_MS + 1_000)
    profile = FRAUD_USER.defaults[None, :].copy()
    profile[0, FRAUD_USER.slot("fu_amount_std_log")] = 0.25
    profile[0, FRAUD_USER.slot("fu_amount_mean_log")] = -3.4e38  # finite; the z-score overflows
    redis_store.RedisBulkWrites(redis_client).write_group(FRAUD_USER, ["u1"], profile, event_ms=OCCURRED_MS)
    bad_merchant = MERCHANT.defaults[None, :].copy()
    bad_merchant[0, 0] = np.nan
    redis_store.RedisBulkWrites(redis_client).write_group(MERCHANT, ["m1"], bad_merchant, event_ms=OCCURRED_MS)
    seen = {}

    async def go():
        client = MultiplexedRedis(redis_server.url)
        try:
            pipeline = fraud_pipeline(
                RedisFeatureReads(client, 100, 100), RedisStateWrites(client, 100), policy_config(ServiceConfig()), 60
            )
            executor = FraudExecutor(pipeline, lambda _: fraud_artifacts)
            original = pipeline.scorer.score

            def spy(state):
                seen["row"] = state.row.copy()
                return original(state)

            object.__setattr__(pipeline.scorer, "score", spy)
            return await executor.run(FraudCheckRequest("r1", transaction()), 1.0)
        finally:
            await client.aclose()

    decision = asyncio.run(go())
    reasons = {(d.stage, d.reason) for d in decision.degraded}
    assert ("features", "merchant_invalid") in reasons  # stored, decoded INVALID
    assert ("features", "fraud_request_invalid") in reasons  # request-time arithmetic overflowed
    assert np.isfinite(seen["row"]).all()
    assert np.isfinite(decision.fraud_probability)
    z = COLUMNS.index("r_amount_z_user")
    assert seen["row"][0, z] == REGISTRY.features_by_column["r_amount_z_user"].default


def test_kind_non_finite_neighbour_query_is_never_searched(fraud_artifacts):
    dims = len(FRAUD_NEIGHBOUR_COLUMNS)
    index = flat_neighbours(np.eye(dims, dtype=np.float32)[:4], [1, 1, 1, 1], 2)
    space = np.zeros((3, dims), np.float32)
    space[1, 0] = np.nan
    space[2, 1] = 3e38  # finite; standardized by a tiny std it overflows
    index = type(index)(index.index, index.labels, index.mean, np.full(dims, 1e-3, np.float32), index.k)
    got = index.query(space)
    defaults = np.array([f.default for f in FRAUD_NEIGHBOURS.features], np.float32)
    assert got[0, 0] == 1.0  # searched: every neighbour is fraud
    np.testing.assert_array_equal(got[1], defaults)
    np.testing.assert_array_equal(got[2], defaults)
    assert index.usable(space).tolist() == [True, False, False]


def test_kind_non_finite_neighbour_stage_serves_defaults_and_says_so(fraud_artifacts):
    row = row_with()
    row[0, COLUMNS.index(FRAUD_NEIGHBOUR_COLUMNS[0])] = np.nan
    state = make_state(fraud_artifacts, row=row)
    with pytest.raises(InvalidNeighbourQuery):
        NeighbourFraudRate().fill(state, row)
    for f in FRAUD_NEIGHBOURS.features:
        if f.name in COLUMNS:
            assert row[0, COLUMNS.index(f.name)] == f.default
