"""Fraud check validation: every malformed field is INVALID_ARGUMENT naming its path."""

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.decision import Degradation
from decision_service.domain.fraud import FiredRule, FraudAction, FraudDecision, Reason
from decision_service.errors import InvalidArgument
from decision_service.use_cases.fraud.convert import (
    FraudLimits,
    fraud_decision_to_proto,
    fraud_request_from_proto,
)
from decision_service.use_cases.proto import RequestLimits
from tests.unit.fraud.conftest import OCCURRED_MS

NOW_MS = OCCURRED_MS + 1_000
LIMITS = RequestLimits(max_context_attributes=2, max_string_length=32)
FRAUD = FraudLimits(
    max_id_length=32,
    absurd_amount_eur=1_000_000.0,
    max_clock_skew_ms=300_000,
    max_transaction_age_ms=86_400_000,
)


def at(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def request(request_id="r1", **fields):
    values = {
        "transaction_id": "t-1",
        "user_id": "u1",
        "amount_minor": 2_500,
        "currency": "EUR",
        "merchant_id": "m1",
        "merchant_category": "5411",
        "country": "DE",
        "device_id": "d1",
        "ip_address": "81.2.69.160",
        "channel": pb.CHANNEL_APP,
        "occurred_at": at(OCCURRED_MS),
        "payment_instrument_id": "c1",
    }
    values.update(fields)
    values = {k: v for k, v in values.items() if v is not None}
    return pb.GetDecisionRequest(request_id=request_id, fraud_check=pb.FraudCheckRequest(**values))


def convert(msg):
    return fraud_request_from_proto(msg, LIMITS, FRAUD, NOW_MS)


def test_valid_request_converts():
    got = convert(request())
    t = got.transaction
    assert got.request_id == "r1"
    assert (t.transaction_id, t.user_id, t.merchant_id, t.device_id, t.payment_instrument_id) == (
        "t-1",
        "u1",
        "m1",
        "d1",
        "c1",
    )
    assert (t.amount_minor, t.currency, t.amount_eur) == (2_500, "EUR", 25.0)
    assert (t.country, t.merchant_category, t.ip_address, t.channel) == ("DE", "5411", "81.2.69.160", 2)
    assert t.occurred_at_ms == OCCURRED_MS


@pytest.mark.parametrize(
    ("fields", "amount_eur"),
    [
        ({"amount_minor": 1_000, "currency": "JPY"}, 6.2),  # no minor unit
        ({"amount_minor": 1_000, "currency": "KWD"}, 3.0),  # three decimals
        ({"amount_minor": 1_000, "currency": " USD "}, 9.2),  # surrounding blanks dropped
        ({"amount_minor": 0}, 0.0),
    ],
)
def test_amount_is_converted_to_eur(fields, amount_eur):
    assert convert(request(**fields)).transaction.amount_eur == pytest.approx(amount_eur)


@pytest.mark.parametrize(
    ("ip", "normalized"),
    [
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped IPv6 is the IPv4 address
        (" 10.0.0.1 ", "10.0.0.1"),
        ("", ""),
    ],
)
def test_ip_addresses_are_normalized(ip, normalized):
    assert convert(request(ip_address=ip)).transaction.ip_address == normalized


def test_optional_fields_may_be_empty():
    t = convert(
        request(device_id="", payment_instrument_id="", merchant_category="", ip_address="")
    ).transaction
    assert (t.device_id, t.payment_instrument_id, t.merchant_category, t.ip_address) == ("", "", "", "")


def test_occurred_at_bounds_are_inclusive():
    assert convert(request(occurred_at=at(NOW_MS + 300_000))).transaction.occurred_at_ms == NOW_MS + 300_000
    assert (
        convert(request(occurred_at=at(NOW_MS - 86_400_000))).transaction.occurred_at_ms
        == NOW_MS - 86_400_000
    )


def test_missing_request_id_is_generated():
    assert len(convert(request(request_id="")).request_id) == 32


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"transaction_id": ""}, "transaction_id", "must not be empty"),
        ({"user_id": ""}, "user_id", "must not be empty"),
        ({"merchant_id": ""}, "merchant_id", "must not be empty"),
        ({"transaction_id": "t" * 33}, "transaction_id", "longer than 32"),
        ({"transaction_id": "t 1"}, "transaction_id", "may contain only"),
        ({"user_id": "-u1"}, "user_id", "may contain only"),
        ({"merchant_id": "m/1"}, "merchant_id", "may contain only"),
        ({"device_id": "d\x001"}, "device_id", "control characters"),
        ({"payment_instrument_id": "4111 1111"}, "payment_instrument_id", "may contain only"),
        ({"amount_minor": -1}, "amount_minor", "must not be negative"),
        ({"amount_minor": 100_000_001}, "amount_minor", "above the plausible maximum"),
        ({"amount_minor": 2**62, "currency": "JPY"}, "amount_minor", "above the plausible maximum"),
        ({"currency": ""}, "currency", "unknown ISO 4217"),
        ({"currency": "eur"}, "currency", "unknown ISO 4217"),
        ({"currency": "XXY"}, "currency", "unknown ISO 4217"),
        ({"currency": "EURO-DOLLARS-X"}, "currency", "'EURO-DOL...'"),
        ({"merchant_category": "541"}, "merchant_category", "4-digit"),
        ({"merchant_category": "54a1"}, "merchant_category", "4-digit"),
        ({"country": ""}, "country", "ISO 3166-1"),
        ({"country": "de"}, "country", "ISO 3166-1"),
        ({"country": "DEU"}, "country", "ISO 3166-1"),
        ({"country": "Germany"}, "country", "ISO 3166-1"),
        ({"country": "ZZ"}, "country", "not an assigned ISO 3166-1"),
        ({"country": "AA"}, "country", "not an assigned ISO 3166-1"),
        ({"ip_address": "300.1.2.3"}, "ip_address", "not an IPv4 or IPv6"),
        ({"ip_address": "1.2.3"}, "ip_address", "not an IPv4 or IPv6"),
        ({"ip_address": "10.0.0.1/24"}, "ip_address", "not an IPv4 or IPv6"),
        ({"ip_address": "2001:db8::g"}, "ip_address", "not an IPv4 or IPv6"),
        ({"ip_address": "2001:db8:::1"}, "ip_address", "not an IPv4 or IPv6"),
        ({"ip_address": "localhost"}, "ip_address", "not an IPv4 or IPv6"),
        ({"channel": 9}, "channel", "unknown channel 9"),
        ({"occurred_at": None}, "occurred_at", "required"),
        ({"occurred_at": at(NOW_MS + 300_001)}, "occurred_at", "in the future"),
        ({"occurred_at": at(NOW_MS + 3_600_000)}, "occurred_at", "3600 s in the future"),
        ({"occurred_at": at(NOW_MS - 86_400_001)}, "occurred_at", "older than 86400 s"),
        ({"occurred_at": at(0)}, "occurred_at", "older than"),
    ],
)
def test_invalid_fields_are_named(fields, field, words):
    with pytest.raises(InvalidArgument) as err:
        convert(request(**fields))
    assert err.value.field == f"fraud_check.{field}"
    assert str(err.value).startswith(f"fraud_check.{field}:")
    assert words in str(err.value)


def test_invalid_request_id_is_named():
    with pytest.raises(InvalidArgument) as err:
        convert(request(request_id="r" * 40))
    assert err.value.field == "request_id"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"country": "DE\n"}, "country"),
        ({"transaction_id": "t-1\n"}, "transaction_id"),
        ({"merchant_category": "5411\n"}, "merchant_category"),
    ],
)
def test_a_trailing_newline_is_rejected(fields, field):
    with pytest.raises(InvalidArgument) as err:
        convert(request(**fields))
    assert err.value.field == f"fraud_check.{field}"


def test_limits_come_from_the_service_config():
    config = ServiceConfig(
        max_string_length=64,
        fraud_absurd_amount_eur=5_000.0,
        fraud_max_clock_skew_s=1.5,
        fraud_max_transaction_age_s=60.0,
    )
    assert FraudLimits.from_config(config) == FraudLimits(64, 5_000.0, 1_500, 60_000)


def test_decision_to_proto():
    d = FraudDecision(
        decision_id="dec-1",
        request_id="r1",
        model_version="v1",
        decided_at_ms=OCCURRED_MS,
        action=FraudAction.DECLINE,
        risk_score=91,
        fraud_probability=0.91,
        fired_rules=[FiredRule("THRESHOLD_DECLINE", "risk score 91 >= decline threshold 85")],
        reasons=[Reason("NEW_DEVICE", "r_new_device", 1.25, "first transaction of this user on this device")],
        degraded=[Degradation("neighbours", "index_error")],
    )
    msg = fraud_decision_to_proto(d)
    assert (msg.decision_id, msg.request_id, msg.model_version) == ("dec-1", "r1", "v1")
    assert msg.decided_at.ToMilliseconds() == OCCURRED_MS
    assert msg.WhichOneof("result") == "fraud"
    assert msg.fraud.action == pb.FRAUD_ACTION_DECLINE and msg.fraud.risk_score == 91
    assert msg.fraud.fraud_probability == pytest.approx(0.91)
    assert [(r.code, r.description) for r in msg.fraud.fired_rules] == [
        ("THRESHOLD_DECLINE", d.fired_rules[0].description)
    ]
    assert [(r.code, r.feature) for r in msg.fraud.reasons] == [("NEW_DEVICE", "r_new_device")]
    assert msg.fraud.reasons[0].contribution == pytest.approx(1.25)
    assert [(g.stage, g.reason) for g in msg.degraded] == [("neighbours", "index_error")]
