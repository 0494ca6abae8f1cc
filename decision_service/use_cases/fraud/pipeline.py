"""The fraud pipeline: its ordered stages, each with its failure policy declared here
(``ON_FAILURE``, read by the executor through ``FraudPipeline.steps``).

field       on failure                                         flagged
context     late / store down -> no context: request-time      features:{deadline_exceeded |
            features + rules, the configured fallback          store_timeout | store_unavailable}
            (fail to review / fail open)
features    raises -> the request fails (a bug, not an outage)
neighbours  raises -> the declared defaults in the row         neighbours:{invalid_query |
                                                               index_error}
scorer      raises -> no score: rules + the configured         scoring:model_error
            fallback
policy      raises -> the request fails (never guess a verdict)
committer   late / store down -> the answer stands,            commit:{deadline_exceeded |
            unrecorded (a retry may be scored again)           store_timeout | store_unavailable}

Not failure policy but flow, so in the executor: a recorded decision for the transaction id
(same payload: replayed; another payload or an unreadable record: AlreadyExists, the request
fails), the commit skipped without a context (``commit:skipped_store_unavailable``), a commit
that lost a race (the winner's decision is answered), and non-finite values (declared
defaults, ``features:{group}_invalid``). Side effects: ``engine.StageBook.run_side_effects``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from decision_service.config import ServiceConfig
from decision_service.engine import DEGRADE, FAIL, OnFailure, Step, declared_steps
from decision_service.features.store import FeatureReads, StateWrites
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

# Each stage's failure policy, by pipeline field (the table above).
ON_FAILURE: Mapping[str, OnFailure] = {
    "context": OnFailure(DEGRADE, "features", "no context: request-time features + rules, the fallback"),
    "features": OnFailure(FAIL),
    "neighbours": OnFailure(DEGRADE, "neighbours", "the declared defaults in the row"),
    "scorer": OnFailure(DEGRADE, "scoring", "no score: rules + the configured fallback"),
    "policy": OnFailure(FAIL),
    "committer": OnFailure(DEGRADE, "commit", "the answer stands, unrecorded"),
}
STAGES = ("context", "features", "neighbours", "scorer", "policy", "committer")  # in order


@dataclass(frozen=True)
class FraudPipeline:
    context: ContextLoader  # one Redis round trip: profiles, velocity, block lists, idempotency
    features: FeatureBuilder  # request-time + velocity + profiles -> model row
    neighbours: NeighbourFeatures  # FAISS neighbour fraud rate into the row
    scorer: FraudScorer
    policy: Policy
    committer: DecisionCommitter  # records the decision, counts the payment (atomic)
    on_failure: Mapping[str, OnFailure] = field(default_factory=lambda: ON_FAILURE, repr=False)
    # field -> its stage with the declared policy, built (and checked) with the pipeline
    steps: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages: dict[str, Any] = {name: getattr(self, name) for name in STAGES}
        object.__setattr__(self, "steps", declared_steps(stages, self.on_failure))


def fraud_pipeline(
    reads: FeatureReads, writes: StateWrites, policy: PolicyConfig, record_ttl_s: int = 30 * 86_400
) -> FraudPipeline:
    """``record_ttl_s``: how long a transaction id's decision record answers retries."""
    return FraudPipeline(
        context=LoadTransactionContext(reads),
        features=TransactionFeatures(),
        neighbours=NeighbourFraudRate(),
        scorer=LightGbmFraudScorer(),
        policy=RulesAndThresholds(policy),
        committer=CommitDecision(writes, record_ttl_s),
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
