"""What can happen after a decision. Adding an outcome type is one line in OUTCOME_TYPES.

Each outcome type that is a training label declares its label window (how long after the
decision it still counts). The decision index keeps a decision attributable for at least the
longest label window of its use case (``attribution_window_s``): that is where its TTL comes
from, not a separate constant. The offline defaults (offline/training_set.py) are checked
against these in tests/unit/test_decision_index.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Effect(StrEnum):
    """How an outcome changes the online state that the next decisions read."""

    SEEN = "seen"  # the item joins the user's seen set (filtered out)
    FRAUD_CONFIRMED = "fraud_confirmed"  # the transaction's user / device / card become risky


@dataclass(frozen=True)
class OutcomeType:
    name: str
    use_case: str
    effects: tuple[Effect, ...] = ()
    requires_item: bool = False
    description: str = ""
    label_window_s: int = 0  # a training label counts within this long of the decision (0: not a label)


_MINUTE, _HOUR, _DAY = 60, 3_600, 86_400

OUTCOME_TYPES: dict[str, OutcomeType] = {
    t.name: t
    for t in (
        OutcomeType("impression", "recommendation", (), True, "the item was shown"),
        OutcomeType("click", "recommendation", (Effect.SEEN,), True, "the item was clicked", 30 * _MINUTE),
        OutcomeType("add_to_cart", "recommendation", (Effect.SEEN,), True, "added to the cart"),
        OutcomeType("purchase", "recommendation", (Effect.SEEN,), True, "bought; value = revenue", _DAY),
        OutcomeType("chargeback", "fraud", (Effect.FRAUD_CONFIRMED,), False, "value = amount", 60 * _DAY),
        OutcomeType("refund", "fraud", (), False, "merchant refund; value = amount"),
        OutcomeType(
            "confirmed_fraud", "fraud", (Effect.FRAUD_CONFIRMED,), False, "analyst verdict", 60 * _DAY
        ),
        OutcomeType("confirmed_legit", "fraud", (), False, "analyst verdict: a label, no state change"),
    )
}

USE_CASES: tuple[str, ...] = tuple(dict.fromkeys(t.use_case for t in OUTCOME_TYPES.values()))


def attribution_window_s(use_case: str) -> int:
    """The longest label window of ``use_case``'s outcome types: how long its decisions must
    stay attributable. On failure: KeyError for a use case no outcome type belongs to."""
    windows = [t.label_window_s for t in OUTCOME_TYPES.values() if t.use_case == use_case]
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
