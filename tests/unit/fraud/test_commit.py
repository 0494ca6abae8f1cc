"""CommitDecision: the decision record is stored once per transaction id and the payment is
counted exactly once (one atomic script), on a private Redis."""

import asyncio

import numpy as np
import pytest

from decision_service.domain.decision import Degradation
from decision_service.domain.fraud import FiredRule, FraudAction, FraudDecision, Reason
from decision_service.features.redis_store import (
    MAX_WINDOW_MS,
    RedisBulkWrites,
    RedisFeatureReads,
    RedisStateWrites,
    record_key,
    user_devices_key,
    velocity_key,
)
from decision_service.stages.committers.commit_decision import CommitDecision, decode_record, encode_record
from decision_service.stages.hydrators.transaction_context import LoadTransactionContext
from tests.unit.fraud.conftest import DAY_MS, OCCURRED_MS, make_state, run_with_client

TTL_S = 3_600


def decision(decision_id="d-1", action=FraudAction.REVIEW) -> FraudDecision:
    return FraudDecision(
        decision_id=decision_id,
        request_id="r1",
        model_version="v-fraud-toy",
        decided_at_ms=OCCURRED_MS + 5,
        action=action,
        risk_score=47,
        fraud_probability=0.4731,
        fired_rules=[FiredRule("THRESHOLD_REVIEW", "risk score 47 >= review threshold 40")],
        reasons=[
            Reason("NEW_DEVICE", "r_new_device", 0.8123, "first transaction of this user on this device")
        ],
        degraded=[Degradation("neighbours", "index_error")],
    )


def commit(redis_server, *states_and_records):
    """Commits each (state, record) in turn; returns what each call answered."""

    async def body(client):
        stage = CommitDecision(RedisStateWrites(client, 1_000), TTL_S)
        return [await stage.commit(s, r) for s, r in states_and_records]

    return run_with_client(redis_server.url, body)


def record_of(state, decision_id="d-1"):
    return encode_record(state.request.transaction.fingerprint(), decision(decision_id))


def test_first_commit_stores_the_record_and_counts_the_payment(fraud_artifacts, redis_client, redis_server):
    state = make_state(fraud_artifacts, amount_eur=25.5)
    record = record_of(state)
    assert commit(redis_server, (state, record)) == [None]
    assert redis_client.get(record_key("t-1")) == record
    assert 0 < redis_client.pttl(record_key("t-1")) <= TTL_S * 1000
    assert redis_client.zrange(velocity_key("user", "u1"), 0, -1, withscores=True) == [
        (b"t-1|25.5000", OCCURRED_MS)
    ]
    assert redis_client.zrange(velocity_key("device", "d1"), 0, -1, withscores=True) == [
        (b"t-1|25.5000", OCCURRED_MS)
    ]
    assert redis_client.zscore(user_devices_key("u1"), "d1") == OCCURRED_MS
    assert 0 < redis_client.pttl(velocity_key("user", "u1")) <= MAX_WINDOW_MS + 3_600_000


def test_a_retry_gets_the_first_record_and_is_not_counted_again(fraud_artifacts, redis_client, redis_server):
    state = make_state(fraud_artifacts)
    first, second = record_of(state, "d-1"), record_of(state, "d-2")
    redis_client.config_resetstat()
    answers = commit(redis_server, (state, first), (state, second), (state, second))
    assert answers == [None, first, first]
    assert redis_client.get(record_key("t-1")) == first
    assert redis_client.zcard(velocity_key("user", "u1")) == 1
    assert redis_client.zcard(velocity_key("device", "d1")) == 1
    # user velocity + device velocity + user's devices, once: retries never reach a ZADD
    assert redis_client.info("commandstats")["cmdstat_zadd"]["calls"] == 3


def test_same_id_with_a_different_payload_is_detectable(fraud_artifacts, redis_client, redis_server):
    original = make_state(fraud_artifacts, amount_eur=25.0)
    changed = make_state(fraud_artifacts, amount_eur=26.0)
    assert original.request.transaction.fingerprint() != changed.request.transaction.fingerprint()
    answers = commit(redis_server, (original, record_of(original)), (changed, record_of(changed, "d-2")))
    assert answers[0] is None
    recorded_fp, recorded = decode_record(answers[1], "r2")
    assert (
        recorded_fp == original.request.transaction.fingerprint() != changed.request.transaction.fingerprint()
    )
    assert recorded.decision_id == "d-1"
    # the changed payload was not counted
    assert redis_client.zrange(velocity_key("user", "u1"), 0, -1) == [b"t-1|25.0000"]


def test_concurrent_duplicates_record_once(fraud_artifacts, redis_client, redis_server):
    state = make_state(fraud_artifacts)

    async def body(client):
        stage = CommitDecision(RedisStateWrites(client, 1_000), TTL_S)
        return await asyncio.gather(*(stage.commit(state, record_of(state, f"d-{i}")) for i in range(10)))

    answers = run_with_client(redis_server.url, body)
    winners = [i for i, a in enumerate(answers) if a is None]
    assert len(winners) == 1
    assert {a for a in answers if a is not None} == {record_of(state, f"d-{winners[0]}")}
    assert redis_client.zcard(velocity_key("user", "u1")) == 1


def test_without_a_device_only_the_user_is_counted(fraud_artifacts, redis_client, redis_server):
    state = make_state(fraud_artifacts, device_id="")
    assert commit(redis_server, (state, record_of(state))) == [None]
    assert redis_client.zcard(velocity_key("user", "u1")) == 1
    assert not redis_client.exists(velocity_key("device", "-"), user_devices_key("u1"))


def test_events_older_than_the_longest_window_are_trimmed(fraud_artifacts, redis_client, redis_server):
    RedisBulkWrites(redis_client).write_velocity_events(
        "user",
        ["u1", "u1"],
        ["old", "recent"],
        np.array([1.0, 2.0]),
        np.array([OCCURRED_MS - DAY_MS - 1, OCCURRED_MS - DAY_MS]),
    )
    state = make_state(fraud_artifacts)
    commit(redis_server, (state, record_of(state)))
    assert redis_client.zrange(velocity_key("user", "u1"), 0, -1) == [b"recent|2.0000", b"t-1|25.0000"]


def test_a_committed_payment_is_not_counted_in_its_own_retry(fraud_artifacts, redis_client, redis_server):
    state = make_state(fraud_artifacts)
    commit(redis_server, (state, record_of(state)))

    async def body(client):
        return await LoadTransactionContext(RedisFeatureReads(client, 100, 1_000)).load(state)

    ctx = run_with_client(redis_server.url, body)
    assert len(ctx.user_events[0]) == 0 and len(ctx.device_events[0]) == 0
    assert ctx.device_known is True
    assert ctx.previous_record == record_of(state)
    other = make_state(fraud_artifacts, transaction_id="t-2", occurred_at_ms=OCCURRED_MS + 1_000)

    async def body2(client):
        return await LoadTransactionContext(RedisFeatureReads(client, 100, 1_000)).load(other)

    ctx2 = run_with_client(redis_server.url, body2)
    assert ctx2.user_events[0].tolist() == [OCCURRED_MS] and ctx2.previous_record is None


def test_record_round_trip():
    d = decision()
    fp, back = decode_record(encode_record("fp-1", d), "r-new")
    assert fp == "fp-1"
    assert back.replayed is True and back.request_id == "r-new"
    for name in (
        "decision_id",
        "model_version",
        "decided_at_ms",
        "action",
        "risk_score",
        "fraud_probability",
        "fired_rules",
        "reasons",
        "degraded",
    ):
        assert getattr(back, name) == getattr(d, name), name


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"fp": "x"}',
        b'{"fp":"x","id":"d","model":"v","at":1,"action":9,"risk":1,"p":0,"rules":[],"reasons":[],"degraded":[]}',
    ],
)
def test_a_corrupt_record_is_a_value_error(raw):
    with pytest.raises(ValueError, match="corrupt decision record"):
        decode_record(raw, "r1")


def test_kind_client_clock_does_not_move_the_counted_time(fraud_artifacts, redis_client, redis_server):
    """A payment stamped 250 s ahead is counted (velocity sets, the user's device "last use")
    at the server's receive time, the instant its windows were read at."""
    from dataclasses import replace

    state = make_state(fraud_artifacts, transaction_id="t-ahead", occurred_at_ms=OCCURRED_MS + 250_000)
    state.request = replace(state.request, received_at_ms=OCCURRED_MS)
    assert commit(redis_server, (state, record_of(state))) == [None]
    assert redis_client.zscore(velocity_key("user", "u1"), b"t-ahead|25.0000") == OCCURRED_MS
    assert redis_client.zscore(velocity_key("device", "d1"), b"t-ahead|25.0000") == OCCURRED_MS
    assert redis_client.zscore(user_devices_key("u1"), "d1") == OCCURRED_MS
