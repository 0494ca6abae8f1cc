"""Collect for fraud: every fresh verdict logged with the exact model row; a chargeback
marks the user, the device and the card at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow.dataset as ds
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.features import packed, redis_store
from decision_service.features.definitions import DEVICE, FRAUD_USER
from decision_service.models.fraud_artifacts import FRAUD, FraudArtifacts
from decision_service.models.registry import ModelRegistry
from offline.features.fraud_features import FraudHistory
from offline.runs.bootstrap_fraud import materialize_fraud
from offline.simulation.fraud_world import FraudWorld
from tests.integration.conftest import publish_fraud_version, start
from tests.integration.test_fraud import DECLINE, decide, txn


@pytest.fixture(scope="module")
def fraud_logged(tiny_bootstrap, tiny_fraud_bootstrap, loop_thread, tmp_path_factory) -> Iterator[tuple]:
    _, rec_registry, _ = tiny_bootstrap
    fraud_world_dir, _, fraud_version = tiny_fraud_bootstrap
    publish_fraud_version(rec_registry, fraud_version)
    world = FraudWorld.load(fraud_world_dir)
    logs = tmp_path_factory.mktemp("fraud-logs")
    with LocalRedis() as redis_server:
        materialize_fraud(FraudHistory(world), redis_server.url)
        running = start(loop_thread, Path(rec_registry), redis_server.url, log_dir=str(logs))
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            yield world, pb_grpc.DecisionServiceStub(channel), running, redis_server, logs, Path(rec_registry)
        finally:
            channel.close()
            loop_thread.run(running.stop(0.5))


def test_fresh_verdicts_are_logged_once_with_the_scored_row(fraud_logged):
    world, stub, running, _, logs, registry = fraud_logged
    requests = [txn(world, u) for u in (11, 12, 13)]
    replies = [decide(stub, r) for r in requests]
    replay = decide(stub, requests[0])                      # idempotent retry: same decision
    assert replay.decision_id == replies[0].decision_id
    running.collect.decision_logs["fraud"].flush()
    rows = (
        ds.dataset(logs / "decisions", format="parquet", partitioning="hive")
        .to_table(filter=ds.field("use_case") == "fraud")
        .to_pylist()
    )
    assert sorted(r["decision_id"] for r in rows) == sorted(r.decision_id for r in replies)
    artifacts = FraudArtifacts.load(ModelRegistry(registry).current(FRAUD))
    for row in rows:
        reply = next(r for r in replies if r.decision_id == row["decision_id"])
        assert row["action"] == pb.FraudAction.Name(reply.fraud.action).removeprefix("FRAUD_ACTION_")
        assert row["risk_score"] == reply.fraud.risk_score
        assert row["feature_names"] == artifacts.assembler.columns
        probability = artifacts.model.predict(np.asarray([row["features"]], np.float32))[0]
        assert probability == pytest.approx(row["fraud_probability"], abs=1e-5)
        assert [r["code"] for r in row["reasons"]] == [r.code for r in reply.fraud.reasons]
        assert row["profile_status"] == [0, 0, 0] or not row["degraded"]


def test_a_chargeback_marks_user_device_and_card_for_the_next_check(fraud_logged):
    world, stub, running, redis_server, _, _ = fraud_logged
    client = redis_server.client()
    first = txn(world, 21, device_id="d-cb-1", payment_instrument_id="card-cb-1")
    decision = decide(stub, first)

    layout = redis_store.layout_of(client)  # standalone, or the cluster's hash-tagged names

    def chargebacks() -> tuple[float, float]:
        user = packed.decode(FRAUD_USER, [client.get(layout.feature_key(FRAUD_USER, first.user_id))])
        device = packed.decode(DEVICE, [client.get(layout.feature_key(DEVICE, "d-cb-1"))])
        return (
            float(user.values[0, FRAUD_USER.slot("fu_chargebacks_90d")]),
            float(device.values[0, DEVICE.slot("d_chargebacks_90d")]),
        )

    user_before, device_before = chargebacks()
    ack = stub.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcomes=[pb.Outcome(decision_id=decision.decision_id, type="chargeback", value=25.0)]
        ),
        timeout=5,
    )
    assert ack.acks[0].decision_known
    assert chargebacks() == (user_before + 1, device_before + 1)
    again = decide(stub, txn(world, 22, payment_instrument_id="card-cb-1"))
    assert again.fraud.action == DECLINE
    assert again.fraud.fired_rules[0].code == "BLOCKLIST_INSTRUMENT"


def _chargeback_counts(client, user_id: str, device_id: str) -> tuple[float, float]:
    layout = redis_store.layout_of(client)  # standalone, or the cluster's hash-tagged names
    user = packed.decode(FRAUD_USER, [client.get(layout.feature_key(FRAUD_USER, user_id))])
    device = packed.decode(DEVICE, [client.get(layout.feature_key(DEVICE, device_id))])
    return (
        float(user.values[0, FRAUD_USER.slot("fu_chargebacks_90d")]),
        float(device.values[0, DEVICE.slot("d_chargebacks_90d")]),
    )


def _outcomes(decision_id: str, *types: str) -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(
        outcomes=[pb.Outcome(decision_id=decision_id, type=t, value=25.0) for t in types]
    )


def test_kind_duplicate_outcome_effects_count_one_chargeback_per_payment(fraud_logged):
    """Three copies of a chargeback, a client retry and an analyst's confirmed_fraud for one
    payment: +1 chargeback for the user and the device, as offline counts (one per payment)."""
    world, stub, running, redis_server, _, _ = fraud_logged
    client = redis_server.client()
    first = txn(world, 31, device_id="d-dup-1", payment_instrument_id="card-dup-1")
    decision = decide(stub, first)
    before = _chargeback_counts(client, first.user_id, "d-dup-1")
    ack = stub.RecordOutcome(_outcomes(decision.decision_id, "chargeback", "chargeback", "chargeback"), timeout=5)
    assert [a.decision_known for a in ack.acks] == [True, True, True]
    stub.RecordOutcome(_outcomes(decision.decision_id, "chargeback"), timeout=5)  # the client's retry
    stub.RecordOutcome(_outcomes(decision.decision_id, "confirmed_fraud"), timeout=5)  # the analyst
    replay = decide(stub, first)  # a retried check answers the same decision...
    stub.RecordOutcome(_outcomes(replay.decision_id, "chargeback"), timeout=5)  # ...and changes nothing
    assert _chargeback_counts(client, first.user_id, "d-dup-1") == (before[0] + 1, before[1] + 1)
    assert client.sismember("block:instrument", "card-dup-1")
    # a different payment of the same user is a second chargeback
    second = decide(stub, txn(world, 31, device_id="d-dup-1", payment_instrument_id="card-dup-2"))
    stub.RecordOutcome(_outcomes(second.decision_id, "chargeback", "confirmed_fraud"), timeout=5)
    assert _chargeback_counts(client, first.user_id, "d-dup-1") == (before[0] + 2, before[1] + 2)


def test_kind_attribution_window_a_fresh_server_attributes_a_late_chargeback(fraud_logged, loop_thread):
    """Another server (no in-process memory of the decision, as after a restart) attributes
    the chargeback, and the index entry lives for the fraud label window (60 days), not 7."""
    world, stub, _, redis_server, _, registry = fraud_logged
    client = redis_server.client()
    decision = decide(stub, txn(world, 41, device_id="d-late-1", payment_instrument_id="card-late-1"))
    assert client.ttl(f"dec:{decision.decision_id}") >= 60 * 86_400
    fresh = start(loop_thread, registry, redis_server.url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
            fresh_stub = pb_grpc.DecisionServiceStub(channel)
            ack = fresh_stub.RecordOutcome(_outcomes(decision.decision_id, "chargeback"), timeout=5)
            assert ack.acks[0].decision_known
            again = decide(fresh_stub, txn(world, 42, payment_instrument_id="card-late-1"))
        assert again.fraud.action == DECLINE
        assert again.fraud.fired_rules[0].code == "BLOCKLIST_INSTRUMENT"
    finally:
        loop_thread.run(fresh.stop(0.5))


def test_kind_cross_replica_attribution_a_fraud_outcome_right_after_the_answer(fraud_logged, loop_thread):
    """An outcome sent to another replica the moment GetDecision has answered is known there."""
    world, stub, _, redis_server, _, registry = fraud_logged
    other = start(loop_thread, registry, redis_server.url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            other_stub = pb_grpc.DecisionServiceStub(channel)
            known = []
            for i in range(20):
                decision = decide(stub, txn(world, 50 + i))
                ack = other_stub.RecordOutcome(_outcomes(decision.decision_id, "confirmed_legit"), timeout=5)
                known.append(ack.acks[0].decision_known)
        assert known == [True] * 20
    finally:
        loop_thread.run(other.stop(0.5))
