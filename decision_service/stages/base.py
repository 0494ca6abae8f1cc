"""Per-request state of the recommendation pipeline and the small interface of each stage kind."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from decision_service.domain.decision import Degradation
from decision_service.domain.features import FeatureStatus, GroupValues
from decision_service.domain.recommendation import (
    Candidates,
    RecommendationDecision,
    RecommendationRequest,
)
from decision_service.models.recommendation_artifacts import RecommendationArtifacts


@dataclass(frozen=True)
class UserState:
    """What is known about the user before retrieval.

    ``seen_rows``: the catalog rows (int64, sorted, unique) of the items the user recently
    interacted with; seen ids not in the serving catalog are dropped (no candidate has them).
    """

    user_id: str
    embedding: np.ndarray | None  # None: unknown user or store unavailable
    embedding_status: FeatureStatus
    seen_rows: np.ndarray

    @classmethod
    def unknown(cls, user_id: str, status: FeatureStatus) -> UserState:
        return cls(user_id, None, status, np.empty(0, dtype=np.int64))


@dataclass(frozen=True)
class HydratedFeatures:
    """Served feature values for the user and each candidate, aligned with the candidates."""

    user: GroupValues  # one row
    items: GroupValues  # one row per candidate
    cross: np.ndarray  # float32 [n candidates, USER_ITEM width]

    def take(self, keep: np.ndarray) -> HydratedFeatures:
        """The rows of the candidates kept by a post-hydration filter."""
        items = GroupValues(self.items.group, self.items.values[keep], self.items.status[keep])
        return HydratedFeatures(self.user, items, self.cross[keep])

    def extend(self, more: HydratedFeatures) -> HydratedFeatures:
        """These rows, then ``more``'s (a refill round's candidates); the user row stays this one."""
        items = GroupValues(
            self.items.group,
            np.concatenate([self.items.values, more.items.values]),
            np.concatenate([self.items.status, more.items.status]),
        )
        return HydratedFeatures(self.user, items, np.concatenate([self.cross, more.cross]))


@dataclass
class RecommendationState:
    """Everything one request accumulates on its way through the pipeline."""

    request: RecommendationRequest
    artifacts: RecommendationArtifacts  # one snapshot for the whole request (hot reload)
    user: UserState | None = None
    candidates: Candidates = field(default_factory=Candidates.empty)
    features: HydratedFeatures | None = None
    scores: np.ndarray | None = None
    selected: np.ndarray | None = None  # indices into candidates, in rank order
    propensities: np.ndarray | None = None  # float32, aligned with selected: P(shown); None = 1
    explored: np.ndarray | None = None  # bool, aligned with selected: filled by exploration
    degraded: list[Degradation] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # filter name -> items removed
    # Retrieval depth multiplier: 1 on the first round; the executor raises it for a refill
    # round when the filters left fewer than num_items candidates (see retrieval_depth()).
    depth_factor: float = 1.0
    stage_ms: dict[str, float] = field(default_factory=dict)

    def candidate_item_ids(self) -> np.ndarray:
        """object [n candidates] of str. Only for the edges that need ids (the feature MGET
        keys, the decision log, the response); stages compare catalog rows."""
        return self.artifacts.catalog.item_ids[self.candidates.rows]


def retrieval_depth(state: RecommendationState, base: int, cap: int, catalog_share: float = 1.0) -> int:
    """How many candidates a source retrieves: deeper in proportion to what the filters remove.

    ``base`` scaled by the round's ``depth_factor`` and by 1 / ``catalog_share`` (the share
    of the source's items a category allow-list keeps), plus one per item the request
    excludes (each can remove at most one candidate), capped at ``cap``. O(1): no catalog
    scan. The user's seen set is *not* added up front: an active user's ~500 seen items
    would multiply hydration, scoring and the logged row for every request although few of
    them fall in the top ``base``; when they do, the executor's refill round goes deeper by
    what was actually removed.
    """
    removable = len(state.request.exclude_item_ids)
    scaled = base * state.depth_factor / max(catalog_share, 1e-9)
    return int(min(cap, np.ceil(min(scaled, cap)) + removable))


class UserStateLoader(Protocol):
    name: str

    async def load(self, state: RecommendationState) -> UserState:
        """Contract: returns the user's state; unknown users get ``UserState.unknown``."""
        ...


class CandidateSource(Protocol):
    name: str

    def retrieve(self, state: RecommendationState) -> Candidates:
        """Contract: candidates best-first; may be empty; never raises for unknown users.
        Retrieves ``retrieval_depth(state, ...)`` candidates, so a refill round (higher
        ``state.depth_factor``) reaches deeper."""
        ...


class Filter(Protocol):
    """Its failure policy (fail the request, or skip it flagged) is declared per filter name in
    the pipeline (use_cases/recommendation/pipeline.py: ``ON_FAILURE``), not by the filter."""

    name: str

    def keep(self, state: RecommendationState) -> np.ndarray:
        """Contract: a boolean mask over ``state.candidates``; True = keep."""
        ...


class FeatureHydrator(Protocol):
    name: str

    async def hydrate(self, state: RecommendationState) -> HydratedFeatures:
        """Contract: one row per candidate, in order; missing values are defaults with a status."""
        ...


class Scorer(Protocol):
    name: str

    def score(self, state: RecommendationState) -> np.ndarray:
        """Contract: one float score per candidate, in the candidates' order."""
        ...


class Selector(Protocol):
    name: str

    def select(self, state: RecommendationState, scores: np.ndarray) -> np.ndarray:
        """Contract: at most ``num_items`` distinct candidate indices, in rank order."""
        ...


class SideEffect(Protocol):
    name: str

    def apply(self, state: RecommendationState, decision: RecommendationDecision) -> Awaitable[None] | None:
        """Contract: returns at once (enqueue only) and never changes the items; it may
        return an awaitable that the executor awaits before answering (see StageBook)."""
        ...
