"""The fraud pipeline's state and stage contracts, and its declaration from the configuration."""

from decision_service.config import ServiceConfig
from decision_service.stages.fraud_base import (
    ContextLoader,
    DecisionCommitter,
    FeatureBuilder,
    FraudScorer,
    NeighbourFeatures,
    Policy,
)
from decision_service.stages.policies.rules_and_thresholds import PolicyConfig
from decision_service.use_cases.fraud.pipeline import fraud_pipeline, policy_config
from tests.unit.fraud.conftest import context, make_state


def test_store_degraded_means_no_context(fraud_artifacts):
    state = make_state(fraud_artifacts)
    assert state.store_degraded and state.degraded == [] and state.stage_ms == {}
    state.context = context()
    assert not state.store_degraded


def test_pipeline_stages_in_order_with_unique_names():
    p = fraud_pipeline(reads=None, writes=None, policy=PolicyConfig())  # type: ignore[arg-type]
    stages = [p.context, p.features, p.neighbours, p.scorer, p.policy, p.committer]
    kinds = [ContextLoader, FeatureBuilder, NeighbourFeatures, FraudScorer, Policy, DecisionCommitter]
    methods = ["load", "build", "fill", "score", "decide", "commit"]
    for stage, kind, method in zip(stages, kinds, methods, strict=True):
        assert callable(getattr(stage, method)), kind
    names = [s.name for s in stages]
    assert names == ["context", "features", "neighbours", "lightgbm", "policy", "commit"]


def test_policy_config_reads_every_fraud_policy_setting():
    config = ServiceConfig(
        fraud_review_score=30,
        fraud_decline_score=70,
        fraud_max_amount_eur=5_000.0,
        fraud_max_user_txn_10m=5,
        fraud_degraded_fallback="open",
        fraud_fail_open_max_amount_eur=50.0,
        fraud_max_reasons=2,
    )
    assert policy_config(config) == PolicyConfig(
        review_score=30,
        decline_score=70,
        max_amount_eur=5_000.0,
        max_user_txn_10m=5,
        degraded_fallback="open",
        fail_open_max_amount_eur=50.0,
        max_reasons=2,
    )
