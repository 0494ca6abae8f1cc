"""Fraud check proto <-> domain, with validation. Every error names the offending field."""

from __future__ import annotations

import re
from dataclasses import dataclass

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.fraud import FraudCheckRequest, FraudDecision, Transaction
from decision_service.domain.identifiers import (
    IdentifierError,
    canonical_country,
    canonical_ip,
    canonical_party_id,
    canonical_text,
)
from decision_service.errors import InvalidArgument
from decision_service.features.fraud import CURRENCIES, amount_eur
from decision_service.use_cases.proto import (
    RequestLimits,
    context_from_proto,
    request_id_from_proto,
    response_envelope,
    timestamp_ms,
)

_MCC = re.compile(r"^[0-9]{4}$")
_P = "fraud_check"


def _country_required() -> bool:
    """A payment's country is required when the project's payments table has one (its model
    then uses it); a project without it (features/payments.py: left out) accepts an empty
    country as unknown. A project that declares its fraud groups by hand: required."""
    from decision_service.features import definitions

    payments = vars(definitions).get("PAYMENTS")
    return payments is None or payments.country is not None


COUNTRY_REQUIRED = _country_required()


@dataclass(frozen=True)
class FraudLimits:
    max_id_length: int
    absurd_amount_eur: float
    max_clock_skew_ms: int
    max_transaction_age_ms: int

    @classmethod
    def from_config(cls, config: ServiceConfig) -> FraudLimits:
        return cls(
            config.max_string_length,
            config.fraud_absurd_amount_eur,
            int(config.fraud_max_clock_skew_s * 1000),
            int(config.fraud_max_transaction_age_s * 1000),
        )


def fraud_request_from_proto(
    request: pb.GetDecisionRequest, limits: RequestLimits, fraud: FraudLimits, now_ms: int
) -> FraudCheckRequest:
    """Validates a fraud check and brings every identifier to its canonical form
    (domain/identifiers.py). ``now_ms`` (server clock) becomes the request's ``received_at_ms``.

    On failure: InvalidArgument naming the field.
    """
    f = request.fraud_check
    request_id = request_id_from_proto(request, limits)
    txn_id = _id("transaction_id", f.transaction_id, fraud, required=True)
    user_id = _id("user_id", f.user_id, fraud, required=True)
    merchant_id = _id("merchant_id", f.merchant_id, fraud, required=True)
    device_id = _id("device_id", f.device_id, fraud)
    instrument = _id("payment_instrument_id", f.payment_instrument_id, fraud)
    try:
        currency = canonical_text(f.currency, limits.max_string_length)
    except IdentifierError as exc:
        raise InvalidArgument(f"{_P}.currency", f"unknown ISO 4217 currency code ({exc})") from None
    if currency not in CURRENCIES:
        shown = currency if len(currency) <= 8 else currency[:8] + "..."
        raise InvalidArgument(f"{_P}.currency", f"unknown ISO 4217 currency code {ascii(shown)}")
    if f.amount_minor < 0:
        raise InvalidArgument(f"{_P}.amount_minor", f"must not be negative, got {f.amount_minor}")
    eur = float(amount_eur(f.amount_minor, currency)[0])
    if eur > fraud.absurd_amount_eur:
        raise InvalidArgument(
            f"{_P}.amount_minor",
            f"{f.amount_minor} {currency} minor units (~{eur:,.0f} EUR) is above the plausible maximum "
            f"of {fraud.absurd_amount_eur:,.0f} EUR",
        )
    if f.merchant_category and not _MCC.fullmatch(f.merchant_category):
        raise InvalidArgument(
            f"{_P}.merchant_category",
            f"not a 4-digit merchant category code: {ascii(f.merchant_category[:16])}",
        )
    try:
        country = canonical_country(f.country) if f.country or COUNTRY_REQUIRED else ""
    except IdentifierError as exc:
        raise InvalidArgument(f"{_P}.country", str(exc)) from None
    try:
        ip = canonical_ip(f.ip_address)
    except IdentifierError as exc:
        raise InvalidArgument(f"{_P}.ip_address", str(exc)) from None
    context = context_from_proto(f"{_P}.context", f.context, limits)
    if f.channel not in pb.Channel.values():
        raise InvalidArgument(f"{_P}.channel", f"unknown channel {f.channel}")
    if not f.HasField("occurred_at"):
        raise InvalidArgument(f"{_P}.occurred_at", "required")
    occurred = timestamp_ms(f"{_P}.occurred_at", f.occurred_at)
    if occurred > now_ms + fraud.max_clock_skew_ms:
        raise InvalidArgument(f"{_P}.occurred_at", f"{(occurred - now_ms) / 1000:.0f} s in the future")
    if occurred < now_ms - fraud.max_transaction_age_ms:
        raise InvalidArgument(
            f"{_P}.occurred_at",
            f"older than {fraud.max_transaction_age_ms // 1000} s; check payments as they happen",
        )
    return FraudCheckRequest(
        request_id=request_id,
        transaction=Transaction(
            transaction_id=txn_id,
            user_id=user_id,
            amount_minor=int(f.amount_minor),
            currency=currency,
            amount_eur=eur,
            merchant_id=merchant_id,
            merchant_category=f.merchant_category,
            country=country,
            device_id=device_id,
            ip_address=ip,
            channel=int(f.channel),
            occurred_at_ms=occurred,
            payment_instrument_id=instrument,
        ),
        received_at_ms=now_ms,
        context=context,
    )


def _id(name: str, value: str, fraud: FraudLimits, required: bool = False) -> str:
    try:
        return canonical_party_id(value, fraud.max_id_length, required)
    except IdentifierError as exc:
        raise InvalidArgument(f"{_P}.{name}", str(exc)) from None


def fraud_decision_to_proto(decision: FraudDecision) -> pb.GetDecisionResponse:
    return pb.GetDecisionResponse(
        **response_envelope(decision),
        fraud=pb.FraudResult(
            action=int(decision.action),
            risk_score=decision.risk_score,
            fraud_probability=decision.fraud_probability,
            fired_rules=[pb.FiredRule(code=r.code, description=r.description) for r in decision.fired_rules],
            reasons=[
                pb.ReasonCode(
                    code=r.code, feature=r.feature, contribution=r.contribution, description=r.description
                )
                for r in decision.reasons
            ],
        ),
    )
