"""Collect: every decision logged exactly as served; outcomes logged and acted on at once."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import grpc
import numpy as np
import pyarrow.dataset as ds
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.definitions import REGISTRY
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.models.registry import ModelRegistry
from tests.integration.conftest import start


def active_users(world, n, skip=0):
    counts = np.bincount(world.event_user, minlength=world.n_users)
    return [str(world.user_ids[i]) for i in np.argsort(-counts)[skip : skip + n]]


def recommend(stub, user, n=10):
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=n))
    return stub.GetDecision(request, timeout=5)


@pytest.fixture
def logged_server(served_world, loop_thread, tmp_path):
    running = start(
        loop_thread, served_world.registry_root, served_world.redis.url, log_dir=str(tmp_path / "logs")
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.DecisionServiceStub(channel), tmp_path / "logs"
    channel.close()
    loop_thread.run(running.stop(1.0))


def read_log(root: Path, name: str):
    return ds.dataset(root / name, format="parquet", partitioning="hive").to_table()


def test_n_decisions_give_n_records_with_the_exact_scored_features(served_world, logged_server, loop_thread):
    running, stub, logs = logged_server
    users = active_users(served_world.world, 12) + ["someone-new"]
    replies = {}
    for user in users:
        reply = recommend(stub, user)
        replies[reply.decision_id] = reply
    loop_thread.run(running.stop(1.0))  # graceful stop flushes everything

    table = read_log(logs, "decisions")
    assert table.num_rows == len(users)
    assert set(table.column("decision_id").to_pylist()) == set(replies)
    assert table.schema.metadata[b"registry_version"].decode() == REGISTRY.version
    rows = table.to_pylist()
    artifacts = RecommendationArtifacts.load(
        ModelRegistry(served_world.registry_root).current("recommendation")
    )
    for row in rows:
        reply = replies[row["decision_id"]]
        assert row["use_case"] == "recommendation" and row["model_version"] == reply.model_version
        served = {i.item_id: i.rank for i in reply.recommendation.items}
        logged_ranks = {iid: r for iid, r in zip(row["item_ids"], row["ranks"], strict=True) if r}
        assert logged_ranks == served
        # The model input rebuilt from the logged vectors gives back the logged scores.
        x = artifacts.assembler.assemble(
            np.asarray(row["user_features"], np.float32),
            np.asarray(row["item_features"], np.float32),
            np.asarray(row["cross_features"], np.float32),
        )
        if not row["degraded"]:
            np.testing.assert_allclose(artifacts.model.predict(x), row["scores"], rtol=1e-5, atol=1e-5)
        assert len(row["item_feature_status"]) == len(row["item_ids"])
    unknown = next(r for r in rows if r["user_id"] == "someone-new")
    assert unknown["degraded"] == [{"stage": "user_context", "reason": "unknown_user"}]
    assert unknown["user_feature_status"] == 1  # MISSING: defaults were served

    # DuckDB reads the same Hive-partitioned files.
    count = (
        duckdb.connect()
        .execute(
            f"select count(*), count(distinct decision_id) from read_parquet('{logs}/decisions/**/*.parquet', "
            "hive_partitioning = true) where use_case = 'recommendation'"
        )
        .fetchall()[0]
    )
    assert count == (len(users), len(users))


def test_a_click_removes_the_item_from_the_next_decision(served_world, logged_server, loop_thread):
    running, stub, logs = logged_server
    user = active_users(served_world.world, 1, skip=40)[0]
    first = recommend(stub, user)
    clicked = first.recommendation.items[0].item_id
    occurred = Timestamp()
    occurred.GetCurrentTime()
    ack = stub.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcomes=[
                pb.Outcome(
                    decision_id=first.decision_id, item_id=clicked, type="click", occurred_at=occurred
                ),
                pb.Outcome(decision_id="f" * 32, item_id="i0000001", type="impression"),
            ]
        ),
        timeout=5,
    )
    assert ack.accepted == 2
    assert [(a.index, a.decision_known) for a in ack.acks] == [(0, True), (1, False)]
    second = recommend(stub, user)
    assert clicked not in {i.item_id for i in second.recommendation.items}

    loop_thread.run(running.stop(1.0))
    outcomes = read_log(logs, "outcomes").to_pylist()
    assert len(outcomes) == 2
    click = next(o for o in outcomes if o["type"] == "click")
    assert click["decision_known"] and click["user_id"] == user and click["item_id"] == clicked
    assert click["use_case"] == "recommendation"
    stray = next(o for o in outcomes if o["type"] == "impression")
    assert stray["decision_known"] is False and stray["user_id"] is None


def test_kind_cross_replica_attribution_an_outcome_right_after_the_answer(
    served_world, logged_server, loop_thread
):
    """An outcome sent to another replica the moment GetDecision has answered (0 ms) is known
    there: the index write completes before the answer (it used to trail it by a 20 ms batch)."""
    running, stub, _ = logged_server
    # This checks ordering (the index write lands before the answer), not latency: the lookup
    # gets a deadline a busy 2-core CI machine meets (50 ms was missed once in ~10 full runs;
    # a lookup timeout is its own fault, tests/integration/test_outcome_outage.py).
    other = start(loop_thread, served_world.registry_root, served_world.redis.url, redis_timeout_ms=1000)
    try:
        users = active_users(served_world.world, 20, skip=60)
        with grpc.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            other_stub = pb_grpc.DecisionServiceStub(channel)
            known = []
            for user in users:
                decision = recommend(stub, user)
                item = decision.recommendation.items[0].item_id
                ack = other_stub.RecordOutcome(
                    pb.RecordOutcomeRequest(
                        outcomes=[pb.Outcome(decision_id=decision.decision_id, item_id=item, type="impression")]
                    ),
                    timeout=5,
                )
                known.append(ack.acks[0].decision_known)
        assert known == [True] * 20
        assert served_world.redis.client().ttl(f"dec:{decision.decision_id}") >= 24 * 3600  # purchase window
    finally:
        loop_thread.run(other.stop(1.0))


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        ({"decision_id": "nope", "type": "click", "item_id": "i1"}, "outcomes[0].decision_id"),
        ({"decision_id": "a" * 32, "type": "teleport", "item_id": "i1"}, "outcomes[0].type"),
        ({"decision_id": "a" * 32, "type": "click"}, "outcomes[0].item_id"),
        (
            {"decision_id": "a" * 32, "type": "purchase", "item_id": "i1", "value": float("nan")},
            "outcomes[0].value",
        ),
        (
            {
                "decision_id": "a" * 32,
                "type": "click",
                "item_id": "i1",
                "occurred_at": Timestamp(seconds=4_000_000_000),
            },
            "outcomes[0].occurred_at",
        ),
    ],
)
def test_malformed_outcomes_are_invalid_argument(stub, outcome, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=[pb.Outcome(**outcome)]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")


def test_a_full_log_queue_drops_and_counts_without_slowing_requests(served_world, loop_thread, tmp_path):
    running = start(
        loop_thread,
        served_world.registry_root,
        served_world.redis.url,
        log_dir=str(tmp_path),
        log_queue_size=3,
        log_flush_interval_s=60.0,
        log_max_rows_per_file=1,
    )
    writer = running.collect.decision_logs["recommendation"]
    real = writer._to_batch
    writer._to_batch = lambda records: (time.sleep(0.3), real(records))[1]  # a very slow disk
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            user = active_users(served_world.world, 1)[0]
            latencies = []
            for _ in range(30):
                t = time.perf_counter()
                recommend(stub, user)
                latencies.append(time.perf_counter() - t)
        assert writer.stats.dropped_queue_full >= 20
        assert writer.stats.submitted + writer.stats.dropped_queue_full == 30
        assert np.median(latencies) < 0.25  # the slow writer never sits on the request path
    finally:
        loop_thread.run(running.stop(1.0))


def test_kind_outcome_effects_unavailable_when_redis_is_down_and_nothing_logged(
    served_world, loop_thread, tmp_path
):
    """A click that cannot reach the seen set is UNAVAILABLE (retryable), not a silent OK; an
    outcome needing no Redis (known here, no effect) is still recorded."""
    from decision_service.devtools.local_redis import free_port

    running = start(
        loop_thread, served_world.registry_root, f"redis://127.0.0.1:{free_port()}/0", log_dir=str(tmp_path)
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            decision = recommend(stub, "u0000001")  # degraded, but served and remembered here
            assert any(d.stage == "remember_decision" for d in decision.degraded)  # told: not indexed
            item = decision.recommendation.items[0].item_id
            for outcomes in (
                [pb.Outcome(decision_id=decision.decision_id, item_id=item, type="click")],
                [pb.Outcome(decision_id="e" * 32, item_id=item, type="impression")],  # unknown here
            ):
                with pytest.raises(grpc.RpcError) as err:
                    stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=outcomes), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            ack = stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    outcomes=[pb.Outcome(decision_id=decision.decision_id, item_id=item, type="impression")]
                ),
                timeout=5,
            )
        assert [a.decision_known for a in ack.acks] == [True]
        assert running.collect.recorder.state_update_errors >= 1
    finally:
        loop_thread.run(running.stop(1.0))
    assert read_log(tmp_path, "outcomes").to_pylist()[0]["type"] == "impression"
    assert read_log(tmp_path, "outcomes").num_rows == 1
    assert read_log(tmp_path, "decisions").num_rows == 1


@pytest.mark.parametrize("stamp_s", [1.0, None], ids=["1970", "now"])
def test_kind_client_clock_does_not_move_the_seen_set(served_world, logged_server, loop_thread, stamp_s):
    """A click stamped at the epoch must still filter the item (it was trimmed at once when
    the seen set was scored by the client's occurred_at), and its score lies within
    [decision time, now] however the client clock is set."""
    from decision_service.features.redis_store import layout_of

    running, stub, _ = logged_server
    user = active_users(served_world.world, 1, skip=41)[0]
    before_ms = int(time.time() * 1000)
    first = recommend(stub, user)
    clicked = first.recommendation.items[0].item_id
    occurred = Timestamp()
    if stamp_s is None:
        occurred.GetCurrentTime()
    else:
        occurred.FromSeconds(int(stamp_s))
    stub.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcomes=[pb.Outcome(decision_id=first.decision_id, item_id=clicked, type="click", occurred_at=occurred)]
        ),
        timeout=5,
    )
    client = served_world.redis.client()
    score = client.zscore(layout_of(client).seen_key(user), clicked)
    assert score is not None and before_ms - 1000 <= score <= time.time() * 1000
    assert clicked not in {i.item_id for i in recommend(stub, user).recommendation.items}
