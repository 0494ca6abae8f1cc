"""Failure policy declared per stage in each pipeline (engine.Step), applied by the engine.

Every stage of the fraud and recommendation pipelines has a declared policy; an invalid or
missing declaration is refused when the pipeline is built; an injected failure in a DEGRADE
stage is flagged with the flag its declaration names (read from it, not re-stated in code).
"""

import asyncio
from dataclasses import replace

import pytest

from decision_service.config import ServiceConfig
from decision_service.domain.fraud import FraudCheckRequest
from decision_service.engine import DEGRADE, FAIL, OnFailure, Run, StageBook, Step
from decision_service.errors import STORE_TIMEOUTS
from decision_service.features import redis_store
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import RedisFeatureReads, RedisStateWrites
from decision_service.stages.hydrators.neighbour_fraud_rate import InvalidNeighbourQuery, NeighbourFraudRate
from decision_service.stages.policies.rules_and_thresholds import PolicyConfig
from decision_service.stages.sources.ann import AnnCandidates
from decision_service.use_cases.conversion import pipeline as conversion
from decision_service.use_cases.fraud import pipeline as fraud
from decision_service.use_cases.fraud.executor import FraudExecutor
from decision_service.use_cases.recommendation import pipeline as rec
from decision_service.use_cases.recommendation.executor import RecommendationExecutor
from tests.unit.fraud.conftest import OCCURRED_MS, fraud_artifacts, transaction  # noqa: F401 - fixture
from tests.unit.test_executor import run as recommend
from tests.unit.test_executor import seed_store


def conversion_pipeline() -> conversion.ConversionPipeline:
    from decision_service.stages.policies.threshold import ThresholdConfig

    return conversion.conversion_pipeline(store=None, threshold=ThresholdConfig())  # type: ignore[arg-type]


def fraud_pipeline() -> fraud.FraudPipeline:
    return fraud.fraud_pipeline(reads=None, writes=None, policy=PolicyConfig())  # type: ignore[arg-type]


def rec_pipeline() -> rec.RecommendationPipeline:
    return rec.recommendation_pipeline(ServiceConfig(), store=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize(
    "make, module", [(fraud_pipeline, fraud), (rec_pipeline, rec), (conversion_pipeline, conversion)]
)
def test_every_stage_of_each_pipeline_has_a_declared_policy(make, module):
    p = make()
    assert set(module.ON_FAILURE) == set(module.STAGES)  # nothing undeclared, nothing stale
    for name in module.STAGES:
        stages, steps = getattr(p, name), p.steps[name]
        if not isinstance(stages, tuple):
            stages, steps = (stages,), (steps,)
        assert [s.stage for s in steps] == list(stages)
        for step in steps:
            assert isinstance(step, Step) and step.on_failure in (FAIL, DEGRADE)
            assert step.on_failure == FAIL or (step.flag and step.fallback), step.name


def test_the_declared_tables():
    f = fraud_pipeline().steps
    assert {k: (s.on_failure, s.flag) for k, s in f.items()} == {
        "context": (DEGRADE, "features"),
        "features": (FAIL, ""),
        "neighbours": (DEGRADE, "neighbours"),
        "scorer": (DEGRADE, "scoring"),
        "policy": (FAIL, ""),
        "committer": (DEGRADE, "commit"),
    }
    r = rec_pipeline().steps
    flat = {s.name: (s.on_failure, s.flag) for v in r.values() for s in (v if isinstance(v, tuple) else (v,))}
    assert flat == {
        "user_state": (DEGRADE, "user_context"),
        "ann": (DEGRADE, "candidates"),
        "popular": (DEGRADE, "candidates"),
        "category_allow_list": (FAIL, ""),
        "request_exclusions": (FAIL, ""),
        "previously_seen": (DEGRADE, "filters"),
        "features": (DEGRADE, "features"),
        "out_of_stock": (DEGRADE, "filters"),
        "lightgbm": (DEGRADE, "scoring"),
        "top_k_category_cap": (FAIL, ""),
    }


def test_a_degrade_step_without_a_flag_is_refused():
    stage = NeighbourFraudRate()
    with pytest.raises(ValueError, match="needs a flag"):
        Step(stage, DEGRADE)
    with pytest.raises(ValueError, match="must be"):
        Step(stage, "retry")
    assert Step(stage, FAIL).name == "neighbours"
    p = fraud_pipeline()
    with pytest.raises(ValueError, match="needs a flag"):
        replace(p, on_failure={**fraud.ON_FAILURE, "neighbours": OnFailure(DEGRADE)})


def test_a_stage_without_a_declared_policy_is_refused():
    p = fraud_pipeline()
    undeclared = {k: v for k, v in fraud.ON_FAILURE.items() if k != "scorer"}
    with pytest.raises(ValueError, match="'scorer' has no declared failure policy"):
        replace(p, on_failure=undeclared)

    class NewFilter:
        name = "new_filter"

        def keep(self, state):
            raise AssertionError("never run")

    with pytest.raises(ValueError, match="'new_filter' has no declared failure policy"):
        replace(rec_pipeline(), filters=(NewFilter(),))


def test_a_flow_without_a_fallback_refuses_a_degrade_declaration():
    p = replace(fraud_pipeline(), on_failure={**fraud.ON_FAILURE, "policy": OnFailure(DEGRADE, "policy")})
    with pytest.raises(ValueError, match="'policy' must be declared 'fail'"):
        FraudExecutor(p, lambda _: None)  # type: ignore[arg-type, return-value]
    on_failure = {**rec.ON_FAILURE, "selector": OnFailure(DEGRADE, "selection")}
    with pytest.raises(ValueError, match="'selector' must be declared 'fail'"):
        RecommendationExecutor(replace(rec_pipeline(), on_failure=on_failure), lambda _: None)  # type: ignore[arg-type, return-value]


# ---------------------------------------------------------------- the engine's helpers


def test_attempt_applies_the_declared_policy():
    async def go():
        run = Run(StageBook("t"), "r", asyncio.get_running_loop().time() + 1.0)

        def broken(x):
            raise InvalidNeighbourQuery(x)

        degrade, fail = Step(NeighbourFraudRate(), DEGRADE, "knn"), Step(NeighbourFraudRate(), FAIL)
        assert run.attempt(degrade, "boom", lambda x: x + 1, 1) == 2
        assert run.attempt(degrade, "boom", broken, 1) is None
        assert run.attempt(degrade, lambda e: type(e).__name__, broken, 1) is None
        with pytest.raises(InvalidNeighbourQuery):
            run.attempt(fail, "boom", broken, 1)
        return [(d.stage, d.reason) for d in run.degraded]

    assert asyncio.run(go()) == [("knn", "boom"), ("knn", "InvalidNeighbourQuery")]


def test_read_bounds_a_store_call_by_the_deadline_and_names_the_failure():
    async def slow():
        await asyncio.sleep(5)

    async def down():
        raise ConnectionError("refused")

    async def late():
        raise STORE_TIMEOUTS[0]("slow store")

    async def go():
        loop = asyncio.get_running_loop()
        run = Run(StageBook("t"), "r", loop.time() + 0.05)
        step = Step(NeighbourFraudRate(), DEGRADE, "store")
        assert await run.read(step, slow, fallback="fb") == "fb"
        assert loop.time() < run.deadline + 1.0
        assert await run.read(step, down) is None
        assert await run.read(step, late) is None
        with pytest.raises(ConnectionError):
            await run.read(Step(NeighbourFraudRate(), FAIL), down)
        return [(d.stage, d.reason) for d in run.degraded]

    assert asyncio.run(go()) == [
        ("store", "deadline_exceeded"),
        ("store", "store_unavailable"),
        ("store", "store_timeout"),
    ]


# ---------------------------------------------------------------- injected failures


def check_fraud(artifacts, url, on_failure=None):
    async def go():
        client = MultiplexedRedis(url)
        try:
            p = fraud.fraud_pipeline(RedisFeatureReads(client, 100, 100), RedisStateWrites(client, 100), PolicyConfig(), 60)
            if on_failure is not None:
                p = replace(p, on_failure={**fraud.ON_FAILURE, **on_failure})
            return p, await FraudExecutor(p, lambda _: artifacts).run(FraudCheckRequest("r1", transaction()), 1.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_failing_fraud_neighbour_stage_is_flagged_as_declared(
    fraud_artifacts, redis_client, redis_server, monkeypatch  # noqa: F811 - the fixture
):
    monkeypatch.setattr(redis_store, "now_ms", lambda: OCCURRED_MS + 1_000)

    def broken(self, state, row):
        raise RuntimeError("index gone")

    monkeypatch.setattr(NeighbourFraudRate, "fill", broken)
    p, decision = check_fraud(fraud_artifacts, redis_server.url)
    flag = p.steps["neighbours"].flag
    assert (flag, "index_error") in {(d.stage, d.reason) for d in decision.degraded}
    assert flag == "neighbours" and decision.fraud_probability >= 0.0

    redis_client.flushdb()  # a new declaration is what the executor applies
    _, decision = check_fraud(
        fraud_artifacts, redis_server.url, {"neighbours": OnFailure(DEGRADE, "knn", "defaults")}
    )
    assert ("knn", "index_error") in {(d.stage, d.reason) for d in decision.degraded}
    redis_client.flushdb()
    with pytest.raises(RuntimeError, match="index gone"):
        check_fraud(fraud_artifacts, redis_server.url, {"neighbours": OnFailure(FAIL)})


def test_a_failing_candidate_source_is_flagged_as_declared(toy_artifacts, redis_client, redis_server, monkeypatch):
    seed_store(redis_client, toy_artifacts)

    def broken(self, state):
        raise RuntimeError("ann down")

    monkeypatch.setattr(AnnCandidates, "retrieve", broken)
    decision = recommend(toy_artifacts, redis_server.url)
    flag = rec_pipeline().steps["sources"][0].flag
    assert flag == "candidates"
    assert [(d.stage, d.reason) for d in decision.degraded] == [(flag, "ann_failed")]
    assert len(decision.items) == 5  # the popular source still serves

    declared = {**rec.ON_FAILURE, "sources": OnFailure(DEGRADE, "retrieval", "skipped")}
    decision = recommend(toy_artifacts, redis_server.url, mutate=lambda p: replace(p, on_failure=declared))
    assert [(d.stage, d.reason) for d in decision.degraded] == [("retrieval", "ann_failed")]
    failing = {**rec.ON_FAILURE, "sources": OnFailure(FAIL)}
    with pytest.raises(RuntimeError, match="ann down"):
        recommend(toy_artifacts, redis_server.url, mutate=lambda p: replace(p, on_failure=failing))
