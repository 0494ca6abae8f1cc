"""What can happen after a decision. Adding an outcome type is one line in OUTCOME_TYPES."""

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


OUTCOME_TYPES: dict[str, OutcomeType] = {
    t.name: t
    for t in (
        OutcomeType("impression", "recommendation", (), True, "the item was shown"),
        OutcomeType("click", "recommendation", (Effect.SEEN,), True, "the item was clicked"),
        OutcomeType("add_to_cart", "recommendation", (Effect.SEEN,), True, "added to the cart"),
        OutcomeType("purchase", "recommendation", (Effect.SEEN,), True, "bought; value = revenue"),
        OutcomeType("chargeback", "fraud", (Effect.FRAUD_CONFIRMED,), False, "value = amount"),
        OutcomeType("refund", "fraud", (), False, "merchant refund; value = amount"),
        OutcomeType("confirmed_fraud", "fraud", (Effect.FRAUD_CONFIRMED,), False, "analyst verdict"),
        OutcomeType("confirmed_legit", "fraud", (), False, "analyst verdict: a label, no state change"),
    )
}


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
