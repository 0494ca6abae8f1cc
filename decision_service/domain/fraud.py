"""Fraud-check requests and decisions (pure data)."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass, field
from enum import IntEnum

from decision_service.domain.decision import Decision, ReasonCode, RequestContext


class FraudAction(IntEnum):
    """Values match decision.v1.FraudAction; a larger value is a stricter action."""

    APPROVE = 1
    REVIEW = 2
    DECLINE = 3


@dataclass(frozen=True)
class Transaction:
    """A payment to check. ``amount_eur`` is derived (reference rates) at validation."""

    transaction_id: str
    user_id: str
    amount_minor: int
    currency: str
    amount_eur: float
    merchant_id: str
    merchant_category: str
    country: str
    device_id: str
    ip_address: str
    channel: int
    occurred_at_ms: int
    payment_instrument_id: str

    def fingerprint(self) -> str:
        """Hash of the payload: the same transaction id with another payload is a conflict."""
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FraudCheckRequest:
    """A validated fraud check.

    ``received_at_ms`` is the SERVER's clock when the request was validated. It, not the
    client's ``transaction.occurred_at_ms``, anchors every window the service keeps (the
    velocity windows read, the time a payment is counted at and trimmed from them, the
    user-device "last used" time), so a client clock that is off within the allowed skew
    (or a payment stamped in the past) never moves a window. ``occurred_at_ms`` is validated,
    logged as sent, and feeds only the hour-of-day feature (when the customer paid, as in
    training). Not part of the transaction's fingerprint: a retry arrives later and is still
    the same payment.
    """

    request_id: str
    transaction: Transaction
    received_at_ms: int = 0
    context: RequestContext = RequestContext()  # validated like the recommendation context

    @property
    def counted_at_ms(self) -> int:
        """The time this payment is counted at in velocity windows: the server's receive time
        (the client's ``occurred_at`` when no receive time was set, as offline replays do)."""
        return self.received_at_ms or self.transaction.occurred_at_ms


@dataclass(frozen=True)
class FiredRule:
    code: str
    description: str


Reason = ReasonCode  # the fraud name of the shared reason-code type (domain/decision.py)


@dataclass
class FraudDecision(Decision):
    action: FraudAction = field(kw_only=True)
    risk_score: int = field(kw_only=True)
    fraud_probability: float = field(kw_only=True)
    fired_rules: list[FiredRule] = field(kw_only=True)
    reasons: list[Reason] = field(kw_only=True)
    replayed: bool = field(default=False, kw_only=True)  # answered from an earlier call's record
