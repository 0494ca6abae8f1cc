"""Per-request state of the conversion pipeline and the small interface of each stage kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from decision_service.domain.conversion import ConversionAction, ConversionRequest
from decision_service.domain.decision import Degradation, ReasonCode
from decision_service.domain.features import GroupValues
from decision_service.models.conversion_artifacts import ConversionArtifacts


@dataclass(frozen=True)
class Score:
    probability: float  # calibrated
    margin: float  # the model's raw log-odds
    contributions: np.ndarray  # float32 [n model columns]: calibrated log-odds per column


@dataclass(frozen=True)
class Verdict:
    action: ConversionAction
    threshold: float | None
    reasons: tuple[ReasonCode, ...]


@dataclass
class ConversionState:
    """Everything one conversion score accumulates on its way through the pipeline."""

    request: ConversionRequest
    artifacts: ConversionArtifacts  # one snapshot for the whole request (hot reload)
    profile: GroupValues | None = None  # the USER row (defaults when missing or unreadable)
    request_features: np.ndarray | None = None  # float32 [len(REQUEST_COLUMNS)]
    inputs: np.ndarray | None = None  # float32 [len(INPUT_COLUMNS)]: every input, as served (logged)
    row: np.ndarray | None = None  # float32 [1, n model columns], model order
    non_finite: bool = False  # an input was non-finite and replaced by its declared default
    score: Score | None = None  # None: the model could not score
    verdict: Verdict | None = None
    degraded: list[Degradation] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)


class ProfileLoader(Protocol):
    name: str

    async def load(self, state: ConversionState) -> GroupValues:
        """The entity's stored profile row, in one round trip. Raises on store errors."""
        ...


class RowBuilder(Protocol):
    name: str

    def build(self, state: ConversionState) -> np.ndarray:
        """Request-time features + the profile -> ``state.inputs`` (every input, logged) and
        the model row (float32 [1, n columns], its projection)."""
        ...


class Scorer(Protocol):
    name: str

    def score(self, state: ConversionState) -> Score: ...


class Policy(Protocol):
    name: str

    def decide(self, state: ConversionState) -> Verdict: ...
