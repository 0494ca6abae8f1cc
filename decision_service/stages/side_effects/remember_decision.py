"""Remembers who a decision was for, so its outcomes can be attributed and acted on.

The index write is awaited before the answer is sent (the executor awaits what ``apply``
returns), so an outcome sent to any replica right after the answer is attributed."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from decision_service.domain.decision import Decision
from decision_service.domain.outcomes import DecisionRef
from decision_service.outcomes.decision_index import DecisionIndex


class _UserRequest(Protocol):
    user_id: str


class _State(Protocol):
    @property
    def request(self) -> _UserRequest: ...


class RememberDecision:
    """For any use case whose request names a user (recommendation, conversion)."""

    name = "remember_decision"

    def __init__(self, index: DecisionIndex, use_case: str) -> None:
        self._index = index
        self._use_case = use_case  # DecisionRef.use_case: picks the TTL and the outcome effects

    def apply(self, state: _State, decision: Decision) -> Awaitable[None]:
        return self._index.remember(
            DecisionRef(decision.decision_id, self._use_case, state.request.user_id, decision.decided_at_ms)
        )
