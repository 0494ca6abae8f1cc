"""Safe rollout on a real server: a canary by stable hash (arms logged), a shadow that never
changes answers and logs its scores, promotion / rollback, and refusals of bad versions."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import grpc
import numpy as np
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ServiceConfig
from decision_service.devtools.local_redis import LocalRedis
from decision_service.models.recommendation_artifacts import MODEL_FILE
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.models.rollout import Rollout, RolloutError
from loadtests.bench_shadow import republish
from offline import rollout as ops
from offline.cli import main as cli
from tests.integration.conftest import start
from tests.integration.test_hot_reload import model_with, publish_raw

USE_CASE = "recommendation"


@pytest.fixture
def world(served_world, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "registry"
    shutil.copytree(served_world.registry_root, root)  # never touch the shared one
    registry = ModelRegistry(root)
    live = registry.current_name(USE_CASE)
    candidate = publish_raw(registry, model_with(["x_emb_cosine", "i_popularity_pct"]), make_current=False)
    users = [str(u) for u in served_world.world.user_ids[:300]]
    return root, registry, live, candidate, users


def ask(stub: pb_grpc.DecisionServiceStub, user: str) -> pb.GetDecisionResponse:
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=user, num_items=10))
    return stub.GetDecision(request, timeout=10)


def wait_until(check, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_canary_serves_a_stable_share_logs_its_arm_and_rolls_back_then_promotes(
    world, served_world, loop_thread
):  # type: ignore[no-untyped-def]
    root, registry, live, candidate, users = world
    config = ServiceConfig()
    ops.set_canary(registry, config, USE_CASE, candidate, 0.3)
    logs = Path(tempfile.mkdtemp(prefix="ds-logs-"))
    running = start(
        loop_thread,
        root,
        served_world.redis.url,
        model_reload_interval_s=0.05,
        log_dir=str(logs),
        log_flush_interval_s=0.2,
        request_budget_ms=5_000,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            seen = {u: ask(stub, u).model_version for u in users}
            again = {u: ask(stub, u).model_version for u in users}
            assert seen == again  # stable: a person sees one model
            share = sum(v == candidate for v in seen.values()) / len(users)
            assert set(seen.values()) == {live, candidate}
            assert 0.2 < share < 0.4, share  # 300 users at 30 %: sd 2.6 points

            ops.rollback(registry, USE_CASE)
            assert wait_until(lambda: running.served[USE_CASE].models.canary is None)
            assert {ask(stub, u).model_version for u in users[:60]} == {live}

            # the rule needs matured outcomes it does not have yet: promote refuses, nothing moves
            ops.set_canary(registry, config, USE_CASE, candidate, 0.5)
            with pytest.raises(ops.RolloutRefused, match="promotion rule says"):
                ops.promote(registry, config, USE_CASE, logs, now_ms=int(time.time() * 1000))
            assert registry.current_name(USE_CASE) == live
            applied = ops.promote(registry, config, USE_CASE, logs, force=True)
            assert applied.current == candidate and registry.rollout(USE_CASE).canary is None
            assert wait_until(lambda: {ask(stub, u).model_version for u in users[:30]} == {candidate})
    finally:
        loop_thread.run(running.stop(2.0))
    rows = duckdb.sql(
        f"select model_version, arm, count(*) n from read_parquet('{logs}/decisions/use_case={USE_CASE}/**/*.parquet') "
        "group by all order by all"
    ).fetchall()
    by = {(v, a): n for v, a, n in rows}
    assert set(by) <= {(live, "live"), (candidate, "canary"), (candidate, "live")}
    assert by[(live, "live")] > 0 and by[(candidate, "canary")] > 0 and by[(candidate, "live")] > 0


def test_shadow_never_changes_answers_and_logs_its_scores_next_to_the_served_ones(
    world, served_world, loop_thread
):  # type: ignore[no-untyped-def]
    root, registry, live, candidate, users = world
    logs = Path(tempfile.mkdtemp(prefix="ds-logs-"))
    running = start(
        loop_thread,
        root,
        served_world.redis.url,
        model_reload_interval_s=0.05,
        log_dir=str(logs),
        log_flush_interval_s=0.2,
        request_budget_ms=5_000,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            sample = users[:80]

            def answers() -> list[list[tuple[str, float]]]:
                return [
                    [(i.item_id, round(i.score, 5)) for i in ask(stub, u).recommendation.items]
                    for u in sample
                ]

            before = answers()
            ops.set_shadow(registry, ServiceConfig(), USE_CASE, candidate)
            models = running.served[USE_CASE].models
            assert wait_until(lambda: models.shadow is not None and models.shadow.version == candidate)
            with_shadow = answers()
            assert with_shadow == before  # same items, same order, same scores
            assert loop_thread.run(running.shadow.drain(10.0))
            scored = running.shadow.stats.by_outcome.get((USE_CASE, "scored"), 0)
            assert scored >= len(sample)
    finally:
        loop_thread.run(running.stop(2.0))
    joined = duckdb.sql(
        f"""select d.decision_id, d.model_version, len(d.scores) n, d.scores, s.shadow_scores,
                   s.shadow_model_version, s.arm
            from read_parquet('{logs}/decisions/use_case={USE_CASE}/**/*.parquet') d
            join read_parquet('{logs}/shadow/use_case={USE_CASE}/**/*.parquet') s using (decision_id)"""
    ).fetchall()
    assert len(joined) >= len(users[:80])
    differs = []
    for _, version, n, served_scores, shadow_scores, shadow_version, arm in joined:
        assert version == live and shadow_version == candidate and arm == "live"
        assert len(shadow_scores) == n > 0  # one shadow score per scored candidate, same order
        assert np.all(np.isfinite(shadow_scores))
        differs.append(not np.allclose(served_scores, shadow_scores))
    assert any(differs)  # another model: other scores on the same features


def test_kind_bad_versions_are_refused_and_change_nothing(world, served_world, loop_thread, caplog):  # type: ignore[no-untyped-def]
    root, registry, live, candidate, users = world
    config = ServiceConfig()
    for call in (
        lambda: ops.set_canary(registry, config, USE_CASE, "v9999", 0.1),
        lambda: ops.set_shadow(registry, config, USE_CASE, "v9999"),
        lambda: ops.promote(registry, config, USE_CASE, root, "v9999", force=True),
    ):
        with pytest.raises(ops.RolloutRefused, match="no published version 'v9999'"):
            call()
    # a version whose model file fails its checksum: refused by every command
    corrupt = publish_raw(registry, model_with(["x_emb_dot"]), make_current=False)
    model_file = registry.get(USE_CASE, corrupt).file(MODEL_FILE)
    model_file.write_text(model_file.read_text()[:200])
    for call in (
        lambda: ops.set_canary(registry, config, USE_CASE, corrupt, 0.1),
        lambda: ops.promote(registry, config, USE_CASE, root, corrupt, force=True),
    ):
        with pytest.raises(ops.RolloutRefused, match=f"{corrupt} fails its checks"):
            call()
    assert registry.rollout(USE_CASE).empty and registry.current_name(USE_CASE) == live
    with pytest.raises(ops.RolloutRefused, match="--share must be in"):
        ops.set_canary(registry, config, USE_CASE, candidate, 1.0)
    # the command line says it in one line, exit 1
    assert cli(["rollout", "canary", "--registry", str(root), "--use-case", USE_CASE, "v9999"]) == 1
    assert cli(["rollout", "status", "--registry", str(root)]) == 0

    # written behind the commands' back: the server refuses the corrupt shadow like any reload
    registry.set_rollout(USE_CASE, Rollout().with_shadow(corrupt))
    caplog.set_level(logging.ERROR, logger="decision_service.models.reload")
    running = start(loop_thread, root, served_world.redis.url, model_reload_interval_s=0.05)
    try:
        models = running.served[USE_CASE].models
        assert models.rollout.shadow == corrupt and models.shadow is None
        assert any(corrupt in r and "REFUSED" in r for r in caplog.messages)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = ask(pb_grpc.DecisionServiceStub(channel), users[0])
            assert reply.model_version == live and len(reply.recommendation.items) == 10
        # a corrupt ROLLOUT file changes nothing either
        (root / USE_CASE / "ROLLOUT").write_text("{broken")
        time.sleep(0.3)
        assert models.rollout.shadow == corrupt
    finally:
        loop_thread.run(running.stop(1.0))


@pytest.mark.parametrize(("canary_better", "action"), [(True, "promote"), (False, "rollback")])
def test_decide_applies_the_rule_to_the_registry(world, tmp_path: Path, canary_better: bool, action: str):  # type: ignore[no-untyped-def]
    from tests.offline.test_watch_online import WINDOW_S, _late, _rollout

    root, registry, live, candidate, _ = world
    assert (live, candidate) == ("v0001", "v0002")  # the versions the hand-made logs name
    logs = tmp_path / "logs"
    _rollout(
        logs, p_live=0.05 if canary_better else 0.12, p_canary=0.12 if canary_better else 0.05, users=300
    )
    ops.set_canary(registry, ServiceConfig(), USE_CASE, candidate, 0.5)
    now = _late(logs)
    # not enough evidence for a stricter rule: WAIT, exit 3, nothing changes
    wait = [
        "rollout", "decide", "--registry", str(root), "--use-case", USE_CASE, "--logs", str(logs),
        "--now-ms", str(now), "--window-s", str(WINDOW_S), "--min-decisions", "5000",
    ]  # fmt: skip
    assert cli(wait) == 3
    assert registry.current_name(USE_CASE) == live and registry.rollout(USE_CASE).canary == candidate
    applied = ops.decide(registry, ServiceConfig(), USE_CASE, logs, now_ms=now, window_s=WINDOW_S)
    assert applied.action == action, applied.message
    after = ModelRegistry(root)
    assert after.current_name(USE_CASE) == (candidate if canary_better else live)
    assert after.rollout(USE_CASE).canary is None


def test_kind_rollout_commands_change_all_or_nothing(world):  # type: ignore[no-untyped-def]
    root, registry, live, candidate, _ = world
    config = ServiceConfig()
    third = publish_raw(registry, model_with(["x_emb_dot", "i_popularity_pct"]), make_current=False)
    ops.set_canary(registry, config, USE_CASE, candidate, 0.2)
    ops.set_shadow(registry, config, USE_CASE, third)
    # promoting another version by force keeps the running canary (said) and stops its own shadow
    applied = ops.promote(registry, config, USE_CASE, root, third, force=True)
    rollout = registry.rollout(USE_CASE)
    assert registry.current_name(USE_CASE) == third and rollout.canary == candidate and rollout.shadow is None
    assert "canary v0002 keeps running" in applied.message
    for call, words in (
        (lambda: ops.promote(registry, config, USE_CASE, root, third, force=True), "CURRENT already"),
        (lambda: ops.set_shadow(registry, config, USE_CASE, third), "a shadow is another version"),
        (lambda: ops.set_canary(registry, config, USE_CASE, third, 0.3), "CURRENT already"),
        (lambda: ops.set_canary(registry, config, USE_CASE, candidate, float("nan")), "--share must be in"),
    ):
        with pytest.raises(ops.RolloutRefused, match=words):
            call()
    ops.rollback(registry, USE_CASE)
    before = (root / USE_CASE / "ROLLOUT").read_bytes()
    for call, words in (
        (lambda: ops.set_shadow(registry, config, USE_CASE, None), "no shadow to stop"),
        (lambda: ops.set_canary(registry, config, USE_CASE, None), "no canary to stop"),
        (lambda: ops.rollback(registry, USE_CASE), "no canary to roll back"),
    ):
        with pytest.raises(ops.RolloutRefused, match=words):
            call()
    assert (root / USE_CASE / "ROLLOUT").read_bytes() == before  # not even rewritten
    # a version name from a file is a name, never a path
    (root / USE_CASE / "ROLLOUT").write_text('{"shadow": "../../fraud/versions/v0001"}')
    with pytest.raises(RolloutError, match="must be a version name"):
        registry.rollout(USE_CASE)
    with pytest.raises(RegistryError, match="not a version name"):
        registry.get(USE_CASE, "../fraud/versions/v0001")
    # a ROLLOUT that is not text: said on its use case's line, exit 1, the others still listed
    (root / USE_CASE / "ROLLOUT").write_bytes(b"\xff\xfe")
    lines, readable = ops.status(registry)
    assert not readable and any(line.startswith(USE_CASE) and "not UTF-8" in line for line in lines)
    assert cli(["rollout", "status", "--registry", str(root)]) == 1


def _served_arms_and_shadow(logs: Path, use_case: str, score: str) -> tuple[list, list]:
    decisions = duckdb.sql(
        f"select decision_id, user_id, model_version, arm, {score} score "
        f"from read_parquet('{logs}/decisions/use_case={use_case}/**/*.parquet')"
    ).fetchall()
    shadow = duckdb.sql(
        f"select decision_id, model_version, arm, shadow_model_version, shadow_scores "
        f"from read_parquet('{logs}/shadow/use_case={use_case}/**/*.parquet')"
    ).fetchall()
    return decisions, shadow


def _check_arms_and_identical_shadow(decisions: list, shadow: list, live: str, twin: str) -> None:
    """The twin (the same model under another name) is canary and shadow at once: its arm is
    logged as canary, users stay on one arm, and its shadow scores of the live arm's decisions
    equal the served ones (the row was re-built exactly from what the decision read)."""
    by_user: dict[str, set[str]] = {}
    for _, user, version, arm, _score in decisions:
        assert (version, arm) in {(live, "live"), (twin, "canary")}, (version, arm)
        by_user.setdefault(user, set()).add(version)
    assert all(len(v) == 1 for v in by_user.values())  # a person sees one model
    assert {a for *_, a, _ in decisions} == {"live", "canary"}
    served = {d: s for d, _, _, _, s in decisions}
    live_ids = {d for d, _, v, _, _ in decisions if v == live}
    assert {d for d, *_ in shadow} == live_ids  # the canary's own decisions are not re-scored
    for decision_id, version, arm, shadow_version, scores in shadow:
        assert (version, arm, shadow_version) == (live, "live", twin)
        assert scores == pytest.approx([served[decision_id]], abs=1e-6)


def test_fraud_canary_and_shadow_log_arms_and_rebuild_the_exact_row(
    tiny_bootstrap, tiny_fraud_bootstrap, loop_thread, tmp_path: Path
):  # type: ignore[no-untyped-def]
    from offline.features.fraud_features import FraudHistory
    from offline.runs.bootstrap_fraud import materialize_fraud
    from offline.simulation.fraud_world import FraudWorld
    from tests.integration.conftest import publish_fraud_version
    from tests.integration.test_fraud import txn

    _, rec_registry, _ = tiny_bootstrap
    fraud_world_dir, _, fraud_version = tiny_fraud_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(rec_registry, root)
    publish_fraud_version(root, fraud_version)
    registry = ModelRegistry(root)
    live = registry.current_name("fraud")
    twin = republish(registry, "fraud")
    ops.set_canary(registry, ServiceConfig(), "fraud", twin, 0.5)
    ops.set_shadow(registry, ServiceConfig(), "fraud", twin)
    world = FraudWorld.load(fraud_world_dir)
    logs = tmp_path / "logs"
    with LocalRedis() as redis_server:
        materialize_fraud(FraudHistory(world), redis_server.url)
        running = start(
            loop_thread,
            root,
            redis_server.url,
            log_dir=str(logs),
            log_flush_interval_s=0.2,
            request_budget_ms=2000,
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                for user in range(1, 41):
                    for _ in range(2):
                        request = pb.GetDecisionRequest(fraud_check=txn(world, user=user))
                        assert stub.GetDecision(request, timeout=5).model_version in (live, twin)
            assert loop_thread.run(running.shadow.drain(10.0))
        finally:
            loop_thread.run(running.stop(2.0))
    decisions, shadow = _served_arms_and_shadow(logs, "fraud", "fraud_probability")
    assert len(decisions) == 80
    _check_arms_and_identical_shadow(decisions, shadow, live, twin)


def test_conversion_canary_and_shadow_log_arms_and_rebuild_the_exact_row(
    tiny_bootstrap, loop_thread, tmp_path: Path
):  # type: ignore[no-untyped-def]
    from offline.features.materialize import load_serving_state, materialize
    from offline.use_cases.base import Workspace
    from offline.use_cases.conversion import CONVERSION

    world_dir, rec_registry, _ = tiny_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(rec_registry, root)
    logs = tmp_path / "logs"
    with LocalRedis() as redis_server:
        materialize(world_dir, redis_server.url, history_root=tmp_path / "history")
        CONVERSION.bootstrap(Workspace(tmp_path, root, redis_server.url, world_dir, "tiny", threads=1))
        registry = ModelRegistry(root)
        live = registry.current_name("conversion")
        twin = republish(registry, "conversion")
        ops.set_canary(registry, ServiceConfig(), "conversion", twin, 0.5)
        ops.set_shadow(registry, ServiceConfig(), "conversion", twin)
        running = start(loop_thread, root, redis_server.url, log_dir=str(logs), log_flush_interval_s=0.2)
        snap, _ = load_serving_state(world_dir)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                for user in snap.user_ids[:40]:
                    for pages in (3, 9):
                        request = pb.GetDecisionRequest(
                            conversion=pb.ConversionRequest(
                                user_id=str(user), cart_items=2, cart_value=50.0, session_page_views=pages,
                                session_seconds=120.0, context=pb.RequestContext(surface="checkout", device="ios"),
                            )
                        )  # fmt: skip
                        assert stub.GetDecision(request, timeout=5).model_version in (live, twin)
            assert loop_thread.run(running.shadow.drain(10.0))
        finally:
            loop_thread.run(running.stop(2.0))
    decisions, shadow = _served_arms_and_shadow(logs, "conversion", "probability")
    assert len(decisions) == 80
    _check_arms_and_identical_shadow(decisions, shadow, live, twin)
