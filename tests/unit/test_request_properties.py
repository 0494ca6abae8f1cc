"""Property-based: any request the validator rejects is an InvalidArgument naming a field of
the request, and no input makes conversion fail any other way (never INTERNAL)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.errors import InvalidArgument
from decision_service.features.definitions import CATEGORIES
from decision_service.server.convert import outcomes_from_proto
from decision_service.use_cases.fraud.convert import FraudLimits, fraud_request_from_proto
from decision_service.use_cases.recommendation.convert import (
    RecommendationLimits,
    recommendation_request_from_proto,
)

LIMITS = RecommendationLimits(
    max_num_items=100, max_exclusions=20, max_allowed_categories=5, max_context_attributes=4,
    max_string_length=64, max_outcomes=10,
)
FRAUD_LIMITS = FraudLimits(
    max_id_length=64, absurd_amount_eur=1_000_000.0, max_clock_skew_ms=300_000, max_transaction_age_ms=86_400_000
)
NOW_MS = 1_800_000_000_000
text = st.text(max_size=80)
ids = st.one_of(text, st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True))
context = st.builds(
    pb.RequestContext,
    surface=text, device=text,
    locale=st.one_of(text, st.sampled_from(["en-GB", "de", "pt-BR", ""])),
    attributes=st.dictionaries(text, text, max_size=6),
)
recommendations = st.builds(
    pb.RecommendationRequest,
    user_id=ids,
    num_items=st.integers(-(2**31), 2**31 - 1),
    exclude_item_ids=st.lists(ids, max_size=25),
    allowed_categories=st.lists(st.one_of(st.sampled_from(CATEGORIES), text), max_size=7),
    context=context,
)
timestamps = st.builds(Timestamp, seconds=st.integers(-(2**40), 2**40), nanos=st.integers(0, 999_999_999))
fraud_checks = st.builds(
    pb.FraudCheckRequest,
    transaction_id=ids, user_id=ids,
    amount_minor=st.integers(-(2**63), 2**63 - 1),
    currency=st.one_of(st.sampled_from(["EUR", "USD", "GBP", "JPY", "XXX"]), text),
    merchant_id=ids, merchant_category=st.one_of(st.from_regex(r"[0-9]{4}", fullmatch=True), text),
    country=st.one_of(st.sampled_from(["DE", "GB", "US", "de"]), text),
    device_id=ids,
    ip_address=st.one_of(st.ip_addresses().map(str), text),
    channel=st.integers(0, 10),
    occurred_at=timestamps,
    payment_instrument_id=ids,
    context=context,
)
outcomes = st.builds(
    pb.Outcome,
    decision_id=st.one_of(st.from_regex(r"[0-9a-f]{32}", fullmatch=True), text),
    item_id=ids,
    type=st.one_of(st.sampled_from(["click", "purchase", "chargeback", "impression"]), text),
    value=st.floats(allow_nan=True, allow_infinity=True),
    occurred_at=timestamps,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _names_a_field(err: InvalidArgument, root: str) -> None:
    assert err.field.startswith(root), err.field
    assert str(err).startswith(err.field + ":")


@FAST
@given(recommendations, ids)
def test_recommendation_requests_are_accepted_or_invalid_argument(rec, request_id):
    try:
        got = recommendation_request_from_proto(pb.GetDecisionRequest(request_id=request_id, recommendation=rec), LIMITS)
    except InvalidArgument as err:
        assert err.field.startswith(("recommendation.", "request_id")), err.field
        assert str(err).startswith(err.field + ":")
        return
    assert 1 <= got.num_items <= LIMITS.max_num_items and got.user_id.strip()


@FAST
@given(fraud_checks)
def test_fraud_checks_are_accepted_or_invalid_argument(check):
    try:
        fraud_request_from_proto(
            pb.GetDecisionRequest(request_id="r", fraud_check=check), LIMITS, FRAUD_LIMITS, NOW_MS
        )
    except InvalidArgument as err:
        _names_a_field(err, "fraud_check.")


@FAST
@given(st.lists(outcomes, max_size=12))
def test_outcome_batches_are_accepted_or_invalid_argument(batch):
    try:
        outcomes_from_proto(pb.RecordOutcomeRequest(outcomes=batch), LIMITS, NOW_MS)
    except InvalidArgument as err:
        _names_a_field(err, "outcomes")


def _canonical(value: str) -> bool:
    """No forbidden character, NFC, no surrounding blanks: the form domain/identifiers.py gives."""
    import unicodedata

    from decision_service.domain.identifiers import FORBIDDEN_CATEGORIES

    return (
        value == value.strip()
        and unicodedata.is_normalized("NFC", value)
        and not any(unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in value)
    )


def _context_strings(ctx) -> list[str]:
    return [ctx.surface, ctx.device, ctx.locale, *(s for kv in ctx.attributes for s in kv)]


@FAST
@given(recommendations, ids)
def test_kind_every_accepted_recommendation_identifier_is_canonical(rec, request_id):
    try:
        got = recommendation_request_from_proto(pb.GetDecisionRequest(request_id=request_id, recommendation=rec), LIMITS)
    except InvalidArgument:
        return
    strings = [got.request_id, got.user_id, *got.exclude_item_ids, *_context_strings(got.context)]
    assert all(_canonical(s) and len(s) <= LIMITS.max_string_length for s in strings), strings


@FAST
@given(fraud_checks)
def test_kind_every_accepted_fraud_identifier_is_canonical(check):
    import ipaddress

    try:
        got = fraud_request_from_proto(
            pb.GetDecisionRequest(request_id="r", fraud_check=check), LIMITS, FRAUD_LIMITS, NOW_MS
        )
    except InvalidArgument:
        return
    t = got.transaction
    ids_ = [t.transaction_id, t.user_id, t.merchant_id, t.device_id, t.payment_instrument_id]
    assert all(_canonical(s) and s.isascii() for s in ids_)
    assert all(_canonical(s) for s in _context_strings(got.context))
    if t.ip_address:
        parsed = ipaddress.ip_address(t.ip_address)
        assert str(parsed) == t.ip_address and "%" not in t.ip_address
        assert not (isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped)
    assert got.received_at_ms == NOW_MS


@FAST
@given(st.lists(outcomes, max_size=12))
def test_kind_every_accepted_outcome_identifier_is_canonical(batch):
    try:
        got = outcomes_from_proto(pb.RecordOutcomeRequest(outcomes=batch), LIMITS, NOW_MS)
    except InvalidArgument:
        return
    for o in got:
        assert o.decision_id == o.decision_id.lower() and len(o.decision_id) == 32
        assert all(_canonical(s) for s in [o.item_id, *(x for kv in o.attributes for x in kv)])
