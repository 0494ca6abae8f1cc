"""Fraud-check requests and decisions (pure data)."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass, field
from enum import IntEnum

from decision_service.domain.recommendation import Degradation


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
    request_id: str
    transaction: Transaction


@dataclass(frozen=True)
class FiredRule:
    code: str
    description: str


@dataclass(frozen=True)
class Reason:
    code: str
    feature: str
    contribution: float
    description: str


@dataclass
class FraudDecision:
    decision_id: str
    request_id: str
    model_version: str
    decided_at_ms: int
    action: FraudAction
    risk_score: int
    fraud_probability: float
    fired_rules: list[FiredRule]
    reasons: list[Reason]
    degraded: list[Degradation] = field(default_factory=list)
    replayed: bool = False  # answered from the idempotency record of an earlier call
    stage_ms: dict[str, float] = field(default_factory=dict)
