"""Per-request state of the fraud pipeline and the small interface of each stage kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from decision_service.domain.decision import Degradation
from decision_service.domain.fraud import FiredRule, FraudAction, FraudCheckRequest, Reason
from decision_service.features.store import StoredContext
from decision_service.models.fraud_artifacts import FraudArtifacts


@dataclass(frozen=True)
class Score:
    probability: float
    contributions: np.ndarray  # float32 [n model columns + 1], log-odds; last = bias


@dataclass(frozen=True)
class Verdict:
    action: FraudAction
    risk_score: int
    fired_rules: list[FiredRule]
    reasons: list[Reason]


@dataclass
class FraudState:
    """Everything one fraud check accumulates on its way through the pipeline."""

    request: FraudCheckRequest
    artifacts: FraudArtifacts  # one snapshot for the whole request (hot reload)
    context: StoredContext | None = None  # None: the store could not be read
    row: np.ndarray | None = None  # float32 [1, n model columns], model order
    score: Score | None = None  # None: the model could not score
    verdict: Verdict | None = None
    degraded: list[Degradation] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def store_degraded(self) -> bool:
        return self.context is None


class ContextLoader(Protocol):
    name: str

    async def load(self, state: FraudState) -> StoredContext:
        """Contract: profiles (defaults where missing), velocity events, block-list hits and
        the idempotency record, in one round trip. Raises on store errors."""
        ...


class FeatureBuilder(Protocol):
    name: str

    def build(self, state: FraudState) -> np.ndarray:
        """Contract: float32 [1, n model columns]; a missing context gives request-time
        features with every stored feature at its declared default."""
        ...


class NeighbourFeatures(Protocol):
    name: str

    def fill(self, state: FraudState, row: np.ndarray) -> None:
        """Contract: writes the FRAUD_NEIGHBOURS columns of ``row`` in place."""
        ...


class FraudScorer(Protocol):
    name: str

    def score(self, state: FraudState) -> Score:
        """Contract: a probability in [0, 1] and per-feature log-odds contributions."""
        ...


class Policy(Protocol):
    name: str

    def decide(self, state: FraudState) -> Verdict:
        """Contract: always returns a verdict (rules work without a score or a context);
        at least one fired rule says why the action was chosen."""
        ...


class DecisionCommitter(Protocol):
    name: str

    async def commit(self, state: FraudState, record: bytes) -> bytes | None:
        """Contract: None when this call recorded the decision, else the existing record."""
        ...
