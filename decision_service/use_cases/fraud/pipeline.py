"""The fraud pipeline, declared as its ordered stages."""

from __future__ import annotations

from dataclasses import dataclass

from decision_service.config import ServiceConfig
from decision_service.features.fraud_store import FraudStore
from decision_service.stages.committers.commit_decision import CommitDecision
from decision_service.stages.fraud_base import (
    ContextLoader,
    DecisionCommitter,
    FeatureBuilder,
    FraudScorer,
    NeighbourFeatures,
    Policy,
)
from decision_service.stages.hydrators.neighbour_fraud_rate import NeighbourFraudRate
from decision_service.stages.hydrators.transaction_context import LoadTransactionContext
from decision_service.stages.hydrators.transaction_features import TransactionFeatures
from decision_service.stages.policies.rules_and_thresholds import PolicyConfig, RulesAndThresholds
from decision_service.stages.scorers.lightgbm_fraud import LightGbmFraudScorer


@dataclass(frozen=True)
class FraudPipeline:
    context: ContextLoader  # one Redis round trip: profiles, velocity, block lists, idempotency
    features: FeatureBuilder  # request-time + velocity + profiles -> model row
    neighbours: NeighbourFeatures  # FAISS neighbour fraud rate into the row
    scorer: FraudScorer
    policy: Policy
    committer: DecisionCommitter  # records the decision, counts the payment (atomic)


def fraud_pipeline(store: FraudStore, policy: PolicyConfig) -> FraudPipeline:
    return FraudPipeline(
        context=LoadTransactionContext(store),
        features=TransactionFeatures(),
        neighbours=NeighbourFraudRate(),
        scorer=LightGbmFraudScorer(),
        policy=RulesAndThresholds(policy),
        committer=CommitDecision(store),
    )


def policy_config(config: ServiceConfig) -> PolicyConfig:
    """The policy knobs of the service configuration (DS_FRAUD_*)."""
    return PolicyConfig(
        review_score=config.fraud_review_score,
        decline_score=config.fraud_decline_score,
        max_amount_eur=config.fraud_max_amount_eur,
        max_user_txn_10m=config.fraud_max_user_txn_10m,
        degraded_fallback=config.fraud_degraded_fallback,
        fail_open_max_amount_eur=config.fraud_fail_open_max_amount_eur,
        max_reasons=config.fraud_max_reasons,
    )
