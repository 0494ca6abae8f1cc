"""Remembers who a decision was for, so its outcomes can be attributed and acted on.

The index write is awaited before the answer is sent (the executor awaits what ``apply``
returns), so an outcome sent to any replica right after the answer is attributed."""

from __future__ import annotations

from collections.abc import Awaitable

from decision_service.domain.outcomes import DecisionRef
from decision_service.domain.recommendation import RecommendationDecision
from decision_service.outcomes.decision_index import DecisionIndex
from decision_service.stages.base import RecommendationState


class RememberDecision:
    name = "remember_decision"

    def __init__(self, index: DecisionIndex, use_case: str) -> None:
        self._index = index
        self._use_case = use_case  # DecisionRef.use_case: picks the TTL and the outcome effects

    def apply(self, state: RecommendationState, decision: RecommendationDecision) -> Awaitable[None]:
        return self._index.remember(
            DecisionRef(decision.decision_id, self._use_case, state.request.user_id, decision.decided_at_ms)
        )
