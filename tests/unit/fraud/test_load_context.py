"""LoadTransactionContext: profiles, velocity, device-seen, block lists and the idempotency
record of a payment, in ONE round trip to a private Redis."""

import numpy as np
import pytest

from decision_service.devtools.local_redis import free_port
from decision_service.domain.features import FeatureStatus
from decision_service.features import redis_store
from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT
from decision_service.features.redis_store import (
    RedisBulkWrites,
    RedisFeatureReads,
    add_to_block_list,
    record_key,
)
from decision_service.stages.hydrators.transaction_context import LoadTransactionContext
from tests.unit.fraud.conftest import DAY_MS, HOUR_MS, OCCURRED_MS, make_state, run_with_client

MIN_MS = 60_000


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """Profile freshness is judged against this instant, not the wall clock."""
    monkeypatch.setattr(redis_store, "now_ms", lambda: OCCURRED_MS + 1_000)


def seed(client):
    redis_store.RedisBulkWrites(client).write_group(
        FRAUD_USER, ["u1"], FRAUD_USER.defaults[None, :] + 7.0, event_ms=OCCURRED_MS - HOUR_MS
    )
    redis_store.RedisBulkWrites(client).write_group(
        MERCHANT, ["m1"], MERCHANT.defaults[None, :] + 3.0, event_ms=OCCURRED_MS - HOUR_MS
    )
    # the device profile is 3 days old: stale (max age 2 days) -> defaults
    redis_store.RedisBulkWrites(client).write_group(
        DEVICE, ["d1"], DEVICE.defaults[None, :] + 5.0, event_ms=OCCURRED_MS - 3 * DAY_MS
    )
    RedisBulkWrites(client).write_velocity_events(
        "user",
        ["u1"] * 5,
        ["a", "b", "c", "t-1", "future"],
        np.array([10.0, 20.0, 30.0, 99.0, 50.0]),
        # 5 min, 2 h, 25 h before; the transaction itself; 1 min after
        np.array(
            [
                OCCURRED_MS - 5 * MIN_MS,
                OCCURRED_MS - 2 * HOUR_MS,
                OCCURRED_MS - 25 * HOUR_MS,
                OCCURRED_MS,
                OCCURRED_MS + MIN_MS,
            ]
        ),
    )
    RedisBulkWrites(client).write_velocity_events(
        "device", ["d1"], ["e"], np.array([12.5]), np.array([OCCURRED_MS - 10 * MIN_MS])
    )
    RedisBulkWrites(client).write_user_devices(["u1"], ["d1"], np.array([OCCURRED_MS - DAY_MS]))
    add_to_block_list(client, "ip", "81.2.69.160")
    add_to_block_list(client, "instrument", "c1")
    add_to_block_list(client, "device", "d-other")


def load(redis_server, state, max_events=1_000):
    async def body(client):
        await client.execute("PING")  # connect before counting
        before = client.writes
        stage = LoadTransactionContext(RedisFeatureReads(client, 100, max_events))
        ctx = await stage.load(state)
        return ctx, client.writes - before

    return run_with_client(redis_server.url, body)


def test_reads_everything_in_one_round_trip(fraud_artifacts, redis_client, redis_server):
    seed(redis_client)
    redis_client.set(record_key("t-1"), b"recorded")
    redis_client.config_resetstat()
    ctx, writes = load(redis_server, make_state(fraud_artifacts))

    assert writes == 1
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert stats["cmdstat_zrevrangebyscore"]["calls"] == 2  # user and device velocity
    assert stats["cmdstat_zscore"]["calls"] == 1  # device seen by the user
    assert stats["cmdstat_sismember"]["calls"] == 3  # device, ip, instrument block lists
    assert stats["cmdstat_get"]["calls"] == 1  # idempotency record

    assert np.array_equal(ctx.user.values[0], FRAUD_USER.defaults + 7.0)
    assert ctx.user.status.tolist() == [FeatureStatus.PRESENT]
    assert np.array_equal(ctx.merchant.values[0], MERCHANT.defaults + 3.0)
    assert ctx.device.status.tolist() == [FeatureStatus.STALE]
    assert np.array_equal(ctx.device.values[0], DEVICE.defaults)
    # own id and the later payment are dropped; the 25 h old one is outside every window
    times, amounts = ctx.user_events
    assert sorted(times.tolist()) == [OCCURRED_MS - 2 * HOUR_MS, OCCURRED_MS - 5 * MIN_MS]
    assert sorted(amounts.tolist()) == [10.0, 20.0]
    assert ctx.device_events[0].tolist() == [OCCURRED_MS - 10 * MIN_MS]
    assert ctx.device_events[1].tolist() == [12.5]
    assert ctx.device_known is True
    assert ctx.blocked == frozenset({"ip", "instrument"})
    assert ctx.previous_record == b"recorded"


def test_unknown_parties_get_defaults_and_nothing_is_blocked(fraud_artifacts, redis_client, redis_server):
    seed(redis_client)
    state = make_state(
        fraud_artifacts,
        user_id="u-new",
        merchant_id="m-new",
        device_id="d-new",
        transaction_id="t-9",
        ip_address="10.0.0.1",
        payment_instrument_id="c-new",
    )
    ctx, writes = load(redis_server, state)
    assert writes == 1
    assert ctx.user.status.tolist() == [FeatureStatus.MISSING]
    assert np.array_equal(ctx.user.values[0], FRAUD_USER.defaults)
    assert np.array_equal(ctx.merchant.values[0], MERCHANT.defaults)
    assert len(ctx.user_events[0]) == 0 and len(ctx.device_events[0]) == 0
    assert ctx.device_known is False
    assert ctx.blocked == frozenset()
    assert ctx.previous_record is None


def test_device_block_list_and_new_device_for_this_user(fraud_artifacts, redis_client, redis_server):
    seed(redis_client)
    ctx, _ = load(redis_server, make_state(fraud_artifacts, device_id="d-other", ip_address=""))
    assert ctx.blocked == frozenset({"device", "instrument"})
    assert ctx.device_known is False  # u1 never paid from d-other


def test_without_device_ip_or_instrument_those_reads_are_skipped(fraud_artifacts, redis_client, redis_server):
    seed(redis_client)
    redis_client.config_resetstat()
    state = make_state(fraud_artifacts, device_id="", ip_address="", payment_instrument_id="")
    ctx, writes = load(redis_server, state)
    assert writes == 1
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_zrevrangebyscore"]["calls"] == 1
    assert "cmdstat_zscore" not in stats and "cmdstat_sismember" not in stats
    assert ctx.device_known is False and ctx.blocked == frozenset()
    assert len(ctx.device_events[0]) == 0
    assert len(ctx.user_events[0]) == 2


def test_store_errors_propagate(fraud_artifacts):
    async def body(client):
        return await LoadTransactionContext(RedisFeatureReads(client, 100, 10)).load(make_state(fraud_artifacts))

    with pytest.raises(Exception, match="(?i)connect"):
        run_with_client(f"redis://127.0.0.1:{free_port()}/0", body, connect_timeout_s=0.2)


def test_velocity_limit_keeps_the_newest_events(fraud_artifacts, redis_client, redis_server):
    old = [OCCURRED_MS - 20 * HOUR_MS + i for i in range(3)]
    recent = [OCCURRED_MS - 2 * MIN_MS, OCCURRED_MS - MIN_MS]
    RedisBulkWrites(redis_client).write_velocity_events(
        "user", ["u1"] * 5, ["o1", "o2", "o3", "r1", "r2"], np.ones(5), np.array(old + recent)
    )
    ctx, _ = load(redis_server, make_state(fraud_artifacts), max_events=3)
    # reading at most 3 events, the two payments of the last 10 minutes must be among them
    assert set(recent) <= set(ctx.user_events[0].tolist())


@pytest.mark.parametrize("client_clock_offset_ms", [200_000, -900_000])
def test_kind_client_clock_does_not_move_the_read_window(
    fraud_artifacts, redis_client, redis_server, client_clock_offset_ms
):
    """The velocity read ends at the server's receive time: payments counted in the last
    10 minutes are read whatever ``occurred_at`` this request carries."""
    from dataclasses import replace

    received = OCCURRED_MS
    RedisBulkWrites(redis_client).write_velocity_events(
        "user", ["u1"] * 2, ["p1", "p2"], np.ones(2), np.array([received - MIN_MS, received - 1])
    )
    state = make_state(fraud_artifacts, occurred_at_ms=received + client_clock_offset_ms)
    state.request = replace(state.request, received_at_ms=received)
    ctx, _ = load(redis_server, state)
    assert sorted(ctx.user_events[0].tolist()) == [received - MIN_MS, received - 1]
