"""Outcomes while Redis is down: the caller is told (UNAVAILABLE), nothing is half-applied or
logged, and the retry after Redis is back applies the effect once (the card is blocked)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pyarrow.dataset as ds

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis, free_port
from decision_service.features import packed, redis_store
from decision_service.features.definitions import FRAUD_USER
from offline.features.fraud_features import FraudHistory
from offline.runs.bootstrap_fraud import materialize_fraud
from offline.simulation.fraud_world import FraudWorld
from tests.integration.conftest import publish_fraud_version, start
from tests.integration.test_fraud import APPROVE, DECLINE, decide, txn


def _chargebacks(client, user_id: str) -> float:
    user = packed.decode(FRAUD_USER, [client.get(redis_store.feature_key(FRAUD_USER, user_id))])
    return float(user.values[0, FRAUD_USER.slot("fu_chargebacks_90d")])


def test_kind_outcome_effects_unavailable_while_redis_is_down_then_applied_once_on_retry(
    tiny_bootstrap, tiny_fraud_bootstrap, loop_thread, tmp_path
):
    _, rec_registry, _ = tiny_bootstrap
    fraud_world_dir, _, fraud_version = tiny_fraud_bootstrap
    publish_fraud_version(rec_registry, fraud_version)
    world = FraudWorld.load(fraud_world_dir)
    history = FraudHistory(world)
    port = free_port()
    redis_server = LocalRedis(port=port).start()
    materialize_fraud(history, redis_server.url)
    running = start(loop_thread, Path(rec_registry), redis_server.url, log_dir=str(tmp_path))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.DecisionServiceStub(channel)
    try:
        payment = txn(world, 61, device_id="d-out-1", payment_instrument_id="card-outage-1")
        decision = decide(stub, payment)
        assert decision.fraud.action == APPROVE, decision
        chargeback = pb.RecordOutcomeRequest(
            outcomes=[pb.Outcome(decision_id=decision.decision_id, type="chargeback", value=25.0)]
        )

        redis_server.stop()  # Redis dies before the chargeback arrives
        try:
            stub.RecordOutcome(chargeback, timeout=5)
            raise AssertionError("a chargeback that could not be applied answered OK")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            assert "retry" in err.details()
        assert running.collect.recorder.state_update_errors >= 1

        redis_server = LocalRedis(port=port).start()  # back, empty, on the same port
        materialize_fraud(history, redis_server.url)
        client = redis_server.client()
        baseline = _chargebacks(client, payment.user_id)
        deadline = time.monotonic() + 15
        while True:  # the client retries UNAVAILABLE, as it should
            try:
                ack = stub.RecordOutcome(chargeback, timeout=5)
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                assert time.monotonic() < deadline, "the retry never succeeded after Redis came back"
                time.sleep(0.1)
        assert ack.acks[0].decision_known
        stub.RecordOutcome(chargeback, timeout=5)  # one more retry: still one chargeback
        assert _chargebacks(client, payment.user_id) == baseline + 1
        again = decide(stub, txn(world, 62, payment_instrument_id="card-outage-1"))
        assert again.fraud.action == DECLINE
        assert again.fraud.fired_rules[0].code == "BLOCKLIST_INSTRUMENT"
    finally:
        channel.close()
        loop_thread.run(running.stop(0.5))
        redis_server.stop()
    logged = ds.dataset(tmp_path / "outcomes", format="parquet", partitioning="hive").to_table().to_pylist()
    # the UNAVAILABLE call logged nothing; the two successful calls are at-least-once rows
    assert [o["type"] for o in logged] == ["chargeback", "chargeback"]
    assert all(o["decision_known"] for o in logged)
