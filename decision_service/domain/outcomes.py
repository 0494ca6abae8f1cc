"""What can happen after a decision: outcome types, outcomes, and what a decision is remembered by.

Each use case declares its own outcome types (``UseCase.outcome_types``, decision_service/
use_cases); ``decision_service.use_cases.OUTCOME_TYPES`` is all of them.

Each outcome type that is a training label declares its label window (how long after the
decision it still counts). The decision index keeps a decision attributable for at least the
longest label window of its use case (``attribution_window_s``): that is where its TTL comes
from, not a separate constant. The offline defaults are checked against these in
tests/unit/test_decision_index.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class OutcomeType:
    name: str
    use_case: str
    effects: tuple[str, ...] = ()  # names of the use case's effect handlers (UseCase.effects)
    requires_item: bool = False
    description: str = ""
    label_window_s: int = 0  # a training label counts within this long of the decision (0: not a label)


MINUTE_S, HOUR_S, DAY_S = 60, 3_600, 86_400


def attribution_window_s(outcome_types: Iterable[OutcomeType], use_case: str) -> int:
    """The longest label window of ``use_case``'s outcome types: how long its decisions must
    stay attributable. On failure: KeyError for a use case no outcome type belongs to."""
    windows = [t.label_window_s for t in outcome_types if t.use_case == use_case]
    if not windows:
        raise KeyError(f"no outcome type belongs to use case {use_case!r}")
    return max(windows)


@dataclass(frozen=True)
class Outcome:
    decision_id: str
    type: OutcomeType
    occurred_at_ms: int
    item_id: str = ""
    value: float = 0.0
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DecisionRef:
    """What the service remembers of a served decision, to attribute outcomes to it."""

    decision_id: str
    use_case: str
    user_id: str
    decided_at_ms: int
    entities: tuple[tuple[str, str], ...] = ()  # e.g. (("device_id", "d1"),) for fraud
