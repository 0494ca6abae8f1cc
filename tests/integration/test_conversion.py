"""Conversion scoring (the third use case) through the real gRPC server over a private Redis
holding the tiny world's features: the answer, validation, degradations, the exact logged row,
outcome attribution, the training set from the logs, retrain + publish gate, hot reload."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.features.conversion import PROFILE_COLUMNS, REQUEST_COLUMNS
from decision_service.features.definitions import USER
from decision_service.models.registry import ModelRegistry
from decision_service.server.app import RunningServer
from offline.features.materialize import load_serving_state, materialize
from offline.loop.retrain_conversion import (
    ConversionRetrainConfig,
    build_conversion_training_set,
    retrain_conversion,
)
from offline.loop.training_set import LabelWindow
from offline.training.train_conversion import ConversionTrainConfig
from offline.use_cases.base import Workspace
from offline.use_cases.conversion import CONVERSION
from tests.integration.conftest import start

TARGET, SKIP, UNSPECIFIED = (
    pb.CONVERSION_ACTION_TARGET,
    pb.CONVERSION_ACTION_SKIP,
    pb.CONVERSION_ACTION_UNSPECIFIED,
)


@dataclass
class Served:
    world_dir: Path
    registry: Path
    logs: Path
    redis: LocalRedis
    running: RunningServer
    stub: pb_grpc.DecisionServiceStub
    user_ids: np.ndarray
    users: np.ndarray  # the snapshot's USER rows


@pytest.fixture(scope="module")
def served(tiny_bootstrap, loop_thread, tmp_path_factory) -> Iterator[Served]:
    world_dir, rec_registry, _ = tiny_bootstrap
    root = tmp_path_factory.mktemp("conversion")
    registry = root / "registry"
    shutil.copytree(rec_registry, registry)
    with LocalRedis() as redis_server:
        materialize(world_dir, redis_server.url, history_root=root / "history")
        CONVERSION.bootstrap(Workspace(root, registry, redis_server.url, world_dir, "tiny", threads=1))
        logs = root / "logs"
        running = start(
            loop_thread, registry, redis_server.url, log_dir=str(logs), model_reload_interval_s=0.2
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        snap, _ = load_serving_state(world_dir)
        try:
            yield Served(
                world_dir,
                registry,
                logs,
                redis_server,
                running,
                pb_grpc.DecisionServiceStub(channel),
                snap.user_ids,
                snap.users,
            )
        finally:
            channel.close()
            loop_thread.run(running.stop(0.5))


def score(stub, **fields):
    return stub.GetDecision(pb.GetDecisionRequest(conversion=pb.ConversionRequest(**fields)), timeout=3.0)


def active_user(s: Served) -> str:
    events = s.users[:, USER.slot("u_events_30d")]
    return str(s.user_ids[int(np.argmax(events))])


CHECKOUT = dict(
    context=pb.RequestContext(surface="checkout", device="ios"),
    cart_items=3,
    cart_value=120.0,
    session_page_views=12,
    session_seconds=500.0,
)


def test_a_score_is_a_calibrated_probability_with_ordered_reasons(served):
    reply = score(served.stub, user_id=active_user(served), **CHECKOUT)
    c = reply.conversion
    assert reply.WhichOneof("result") == "conversion"
    assert reply.model_version == ModelRegistry(served.registry).current_name("conversion")
    assert list(reply.degraded) == []
    assert 0.0 < c.probability < 1.0 and 0.0 < c.base_rate < 1.0
    assert c.action == UNSPECIFIED and c.threshold == 0.0  # no threshold configured
    assert 1 <= len(c.reasons) <= 3
    contributions = [abs(r.contribution) for r in c.reasons]
    assert contributions == sorted(contributions, reverse=True)
    assert all(r.code and r.feature in PROFILE_COLUMNS + REQUEST_COLUMNS and r.description for r in c.reasons)
    browsing = score(
        served.stub,
        user_id=active_user(served),
        context=pb.RequestContext(surface="home"),
        session_page_views=1,
        session_seconds=10,
    )
    assert browsing.conversion.probability < c.probability  # the request features matter


def test_a_threshold_turns_the_probability_into_an_action(served):
    user = active_user(served)
    p = score(served.stub, user_id=user, **CHECKOUT).conversion.probability
    low = score(served.stub, user_id=user, threshold=max(0.0, p - 0.05), **CHECKOUT).conversion
    high = score(served.stub, user_id=user, threshold=min(1.0, p + 0.05), **CHECKOUT).conversion
    assert (low.action, high.action) == (TARGET, SKIP)
    assert math.isclose(low.threshold, max(0.0, p - 0.05), rel_tol=1e-6)


def test_an_unknown_user_is_scored_on_defaults_and_flagged(served):
    reply = score(served.stub, user_id="never-seen-42", **CHECKOUT)
    assert [(d.stage, d.reason) for d in reply.degraded] == [("user_context", "unknown_user")]
    assert 0.0 < reply.conversion.probability < 1.0


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"user_id": ""}, "conversion.user_id"),
        ({"cart_items": -1}, "conversion.cart_items"),
        ({"session_page_views": -3}, "conversion.session_page_views"),
        ({"cart_value": float("nan")}, "conversion.cart_value"),
        ({"cart_value": -0.01}, "conversion.cart_value"),
        ({"session_seconds": float("inf")}, "conversion.session_seconds"),
        ({"threshold": 1.5}, "conversion.threshold"),
        ({"threshold": float("nan")}, "conversion.threshold"),
        ({"context": pb.RequestContext(locale="not a locale!")}, "conversion.context.locale"),
        ({"user_id": "u\x00x"}, "conversion.user_id"),
    ],
)
def test_kind_bad_input_is_invalid_argument_naming_the_field(served, fields, field):
    values = {"user_id": active_user(served), **fields}
    with pytest.raises(grpc.RpcError) as err:
        score(served.stub, **values)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field), err.value.details()


def test_the_logged_row_is_exactly_what_was_scored_and_outcomes_attribute(served):
    user = active_user(served)
    reply = score(served.stub, user_id=user, **CHECKOUT)
    now = Timestamp()
    now.GetCurrentTime()
    ack = served.stub.RecordOutcome(
        pb.RecordOutcomeRequest(
            outcomes=[
                pb.Outcome(decision_id=reply.decision_id, type="converted", value=120.0, occurred_at=now)
            ]
        ),
        timeout=3,
    )
    assert ack.accepted == 1 and ack.acks[0].decision_known
    served.running.collect.decision_logs["conversion"].flush()
    served.running.collect.outcome_log.flush()
    files = sorted((served.logs / "decisions" / "use_case=conversion").rglob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["decision_id"] == reply.decision_id]
    assert len(rows) == 1
    row = rows[0]
    assert row["use_case"] == "conversion" and row["user_id"] == user and row["scored"]
    assert math.isclose(row["probability"], reply.conversion.probability, rel_tol=1e-6)
    names = list(row["feature_names"])
    assert set(names) <= set(PROFILE_COLUMNS + REQUEST_COLUMNS) and len(row["features"]) == len(names)
    served_profile = served.users[list(served.user_ids).index(user)]
    for name, value in zip(names, row["features"], strict=True):
        if name in PROFILE_COLUMNS:
            assert value == pytest.approx(served_profile[USER.slot(name)], rel=1e-6), name
    assert row["features"][names.index("c_cart_items")] == 3.0
    table, report = build_conversion_training_set(
        served.logs,
        None,
        LabelWindow("converted", ("converted",), 3600.0),
        as_of_ms=int(time.time() * 1000) + 7_200_000,
    )
    labelled = {
        r["decision_id"]: r["converted"] for r in table.select(["decision_id", "converted"]).to_pylist()
    }
    assert labelled[reply.decision_id] is True
    assert report.rows == table.num_rows >= 1


def test_kind_store_outage_degrades_to_profile_defaults_never_fails(served, loop_thread, tmp_path):
    with LocalRedis() as doomed:
        running = start(loop_thread, served.registry, doomed.url, log_dir=str(tmp_path))
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stub = pb_grpc.DecisionServiceStub(channel)
        try:
            assert score(stub, user_id="u0000001", **CHECKOUT).conversion.probability > 0
            doomed.stop()
            reply = score(stub, user_id="u0000001", **CHECKOUT)
            flags = {(d.stage, d.reason) for d in reply.degraded}
            assert ("features", "store_unavailable") in flags or ("features", "store_timeout") in flags, flags
            assert 0.0 < reply.conversion.probability < 1.0
        finally:
            channel.close()
            loop_thread.run(running.stop(0.5))


def test_the_loop_learns_from_its_logs_and_the_server_hot_reloads(served):
    """decide -> collect -> organize -> learn -> publish gate -> hot reload, on simulated sessions."""
    from offline.simulation.conversion import conversion_probability, sample_sessions
    from offline.simulation.world import load_truth
    from offline.use_cases.conversion import request_of

    truth = load_truth(served.world_dir)
    rng = np.random.default_rng(5)
    sessions = sample_sessions(truth, 600, rng)
    converted = rng.random(len(sessions)) < conversion_probability(truth, sessions)
    outcomes = []
    for i in range(len(sessions)):
        reply = served.stub.GetDecision(
            request_of(str(served.user_ids[sessions.user[i]]), sessions, i), timeout=3
        )
        if converted[i]:
            outcomes.append(
                pb.Outcome(
                    decision_id=reply.decision_id,
                    type="converted",
                    occurred_at=Timestamp(seconds=int(time.time())),
                )
            )
    served.stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=outcomes), timeout=5)
    served.running.collect.decision_logs["conversion"].flush()
    served.running.collect.outcome_log.flush()
    table, report = build_conversion_training_set(
        served.logs,
        None,
        LabelWindow("converted", ("converted",), 1.0),
        as_of_ms=int(time.time() * 1000) + 5_000,
    )
    assert report.rows >= 600 and report.positives["converted"] >= converted.sum() * 0.9
    before = ModelRegistry(served.registry).current_name("conversion")
    result = retrain_conversion(
        table, served.registry, ConversionRetrainConfig(auc_tolerance=1.0, log_loss_tolerance=1.0)
    )
    assert result.published, result.summary()
    assert set(result.candidate) >= {"auc", "log_loss"} and set(result.current) >= {"auc", "log_loss"}
    assert result.version != before
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if score(served.stub, user_id="probe").model_version == result.version:
            break
        time.sleep(0.1)
    assert score(served.stub, user_id="probe").model_version == result.version
    # the gate refuses a candidate that is worse on the same held-out rows: hour of day only
    weak = ConversionRetrainConfig(train=replace(ConversionTrainConfig(), columns=("c_hour_of_day",)))
    refused = retrain_conversion(table, served.registry, weak)
    assert not refused.published and refused.version is None, refused.summary()
    assert "auc" in refused.reason and refused.candidate["auc"] < refused.current["auc"]
    assert ModelRegistry(served.registry).current_name("conversion") == result.version


@pytest.mark.parametrize("kind", ["chargeback", "click", "confirmed_fraud"])
def test_kind_an_outcome_of_another_use_case_is_refused_before_any_effect(served, kind):
    """A fraud chargeback (or a recommendation click) sent for a conversion decision would
    apply another use case's effect to it (block-list, chargeback counters, seen set) and
    pollute two training sets: INVALID_ARGUMENT naming the field, nothing applied or logged."""
    from decision_service.features import redis_store
    from decision_service.features.definitions import FRAUD_USER

    user = active_user(served)
    reply = score(served.stub, user_id=user, **CHECKOUT)
    fields = {"item_id": "i9999999"} if kind == "click" else {}
    bad = pb.Outcome(decision_id=reply.decision_id, type=kind, occurred_at=Timestamp(seconds=int(time.time())),
                     **fields)
    good = pb.Outcome(decision_id=reply.decision_id, type="converted", occurred_at=Timestamp(seconds=int(time.time())))
    with pytest.raises(grpc.RpcError) as err:
        served.stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=[good, bad]), timeout=3)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("outcomes[1].type"), err.value.details()
    assert "conversion decision" in err.value.details()
    client = served.redis.client()
    try:
        assert not client.exists(redis_store.feature_key(FRAUD_USER, user))
        assert not client.exists(redis_store.seen_key(user)) or client.zscore(redis_store.seen_key(user), "i9999999") is None
    finally:
        client.close()
    served.running.collect.outcome_log.flush()
    logged = [r for f in (served.logs / "outcomes").rglob("*.parquet")
              for r in pq.read_table(f, columns=["decision_id"]).to_pylist()]
    assert reply.decision_id not in {r["decision_id"] for r in logged}
