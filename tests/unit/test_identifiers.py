"""Identifiers: one canonical form, and every string field of every request is validated.

The field lists are read from the proto descriptors, so a string field added to a request
without validation makes these tests fail.
"""

from __future__ import annotations

import unicodedata

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.identifiers import (
    ISO_3166_ALPHA2,
    IdentifierError,
    canonical_block_value,
    canonical_country,
    canonical_ip,
    canonical_text,
)
from decision_service.errors import InvalidArgument
from decision_service.server.convert import outcomes_from_proto
from decision_service.use_cases.fraud.convert import FraudLimits, fraud_request_from_proto
from decision_service.use_cases.recommendation.convert import (
    RecommendationLimits,
    recommendation_request_from_proto,
)

NOW_MS = 1_750_000_000_000
LIMITS = RecommendationLimits(
    max_num_items=50,
    max_exclusions=5,
    max_allowed_categories=5,
    max_context_attributes=5,
    max_string_length=64,
)
FRAUD = FraudLimits(
    max_id_length=64, absurd_amount_eur=1e6, max_clock_skew_ms=300_000, max_transaction_age_ms=86_400_000
)

BAD_CHARACTERS = {
    "nul": "\x00",
    "newline": "\n",
    "escape": "\x1b",
    "delete": "\x7f",
    "c1_control": "\x85",
    "zero_width_space": "\u200b",
    "right_to_left_override": "\u202e",
    "byte_order_mark": "\ufeff",
    "line_separator": "\u2028",
    "paragraph_separator": "\u2029",
    "private_use": "\ue000",
    "variation_selector": "\ufe0f",
    "combining_grapheme_joiner": "\u034f",
    "hangul_filler": "\u3164",
    "no_break_space": "\u00a0",
    "ideographic_space": "\u3000",
    "tag_character": "\U000e0041",
    "variation_selector_supplement": "\U000e0100",
}


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(NOW_MS)
    return ts


def _valid_recommendation() -> pb.GetDecisionRequest:
    return pb.GetDecisionRequest(
        request_id="r1",
        recommendation=pb.RecommendationRequest(
            user_id="u1",
            num_items=5,
            exclude_item_ids=["i1"],
            allowed_categories=["books"],
            context=pb.RequestContext(surface="home", device="ios", locale="en-GB", attributes={"ab": "x"}),
        ),
    )


def _valid_fraud() -> pb.GetDecisionRequest:
    return pb.GetDecisionRequest(
        request_id="r1",
        fraud_check=pb.FraudCheckRequest(
            transaction_id="t-1",
            user_id="u1",
            amount_minor=100,
            currency="EUR",
            merchant_id="m1",
            merchant_category="5411",
            country="DE",
            device_id="d1",
            ip_address="203.0.113.9",
            channel=pb.CHANNEL_APP,
            occurred_at=_now(),
            payment_instrument_id="c1",
            context=pb.RequestContext(surface="checkout", device="web", locale="de-DE", attributes={"ab": "x"}),
        ),
    )


def _valid_outcome() -> pb.RecordOutcomeRequest:
    return pb.RecordOutcomeRequest(
        outcomes=[
            pb.Outcome(
                decision_id="0" * 32, type="click", item_id="i1", occurred_at=_now(), attributes={"ab": "x"}
            )
        ]
    )


def _string_fields(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """(path, kind) of every string field reachable from ``message``; kind is scalar,
    repeated, map_key or map_value. Read from the descriptor, not from a hand-kept list."""
    out: list[tuple[str, str]] = []
    for field in message.DESCRIPTOR.fields:
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
                out.append((path, "map_key"))
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                out.append((path, "map_value"))
        elif field.type == FieldDescriptor.TYPE_STRING:
            repeated = field.is_repeated
            out.append((path, "repeated" if repeated else "scalar"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name.startswith("decision."):
            child = getattr(message, field.name)
            if field.is_repeated:
                out += _string_fields(child[0], f"{path}[0].") if len(child) else []
            else:
                out += _string_fields(child, f"{path}.")
    return out


def _poison(message: Message, path: str, kind: str, bad: str) -> None:
    """Puts ``bad`` into the field at ``path`` (dotted, with [0] for the first element)."""
    *parents, leaf = path.split(".")
    target = message
    for part in parents:
        name, _, index = part.partition("[")
        target = getattr(target, name)
        if index:
            target = target[int(index.rstrip("]"))]
    if kind == "scalar":
        current = getattr(target, leaf)
        setattr(target, leaf, (current or "x")[:1] + bad + (current or "x")[1:])
    elif kind == "repeated":
        values = getattr(target, leaf)
        current = values[0] if len(values) else "x"
        del values[:]
        values.append(current[:1] + bad + current[1:])
    elif kind == "map_key":
        getattr(target, leaf)["k" + bad] = "v"
    else:
        getattr(target, leaf)["k"] = "v" + bad


def _convert(root: str, message: Message) -> object:
    if root == "recommendation":
        return recommendation_request_from_proto(message, LIMITS)
    if root == "fraud_check":
        return fraud_request_from_proto(message, LIMITS, FRAUD, NOW_MS)
    return outcomes_from_proto(message, LIMITS, NOW_MS)


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for path, kind in _string_fields(_valid_recommendation()):
        if path.startswith(("recommendation.", "request_id")):
            cases.append(("recommendation", path, kind))
    for path, kind in _string_fields(_valid_fraud()):
        if path.startswith("fraud_check."):
            cases.append(("fraud_check", path, kind))
    cases += [("outcomes", path, kind) for path, kind in _string_fields(_valid_outcome())]
    return cases


CASES = _cases()
VALID = {"recommendation": _valid_recommendation, "fraud_check": _valid_fraud, "outcomes": _valid_outcome}


def test_the_descriptor_walk_finds_every_identifier_field():
    paths = {p for _, p, _ in CASES}
    assert {
        "request_id",
        "recommendation.user_id",
        "recommendation.exclude_item_ids",
        "recommendation.allowed_categories",
        "recommendation.context.attributes",
        "fraud_check.ip_address",
        "fraud_check.device_id",
        "fraud_check.payment_instrument_id",
        "fraud_check.context.surface",
        "fraud_check.context.attributes",
        "outcomes[0].decision_id",
        "outcomes[0].item_id",
        "outcomes[0].attributes",
    } <= paths, paths
    for root, make in VALID.items():
        _convert(root, make())  # the base requests are valid


@pytest.mark.parametrize("bad", list(BAD_CHARACTERS.values()), ids=list(BAD_CHARACTERS))
@pytest.mark.parametrize(("root", "path", "kind"), CASES, ids=[f"{p}:{k}" for _, p, k in CASES])
def test_kind_identifier_with_control_or_invisible_character_is_invalid_argument(root, path, kind, bad):
    message = VALID[root]()
    _poison(message, path, kind, bad)
    with pytest.raises(InvalidArgument) as err:
        _convert(root, message)
    assert err.value.field.startswith(path), (err.value.field, path)
    assert bad not in str(err.value)  # never echoed verbatim into logs or replies


@pytest.mark.parametrize(("root", "path", "kind"), CASES, ids=[f"{p}:{k}" for _, p, k in CASES])
def test_kind_identifier_too_long_is_invalid_argument(root, path, kind):
    message = VALID[root]()
    _poison(message, path, kind, "x" * 100_000)
    with pytest.raises(InvalidArgument) as err:
        _convert(root, message)
    assert err.value.field.startswith(path), (err.value.field, path)
    assert len(str(err.value)) < 300


def test_text_is_nfc_and_stripped_with_case_kept():
    nfd = unicodedata.normalize("NFD", "Jos\u00e9")
    assert canonical_text(f"  {nfd} ", 64) == "Jos\u00e9"
    assert canonical_text("U1", 64) == "U1"
    with pytest.raises(IdentifierError, match="surrogate"):
        canonical_text("a\ud800b", 64)
    with pytest.raises(IdentifierError, match="empty|spaces other than"):
        canonical_text(" \u00a0 ", 64, required=True)


def test_recommendation_ids_and_categories_are_canonical():
    nfd = unicodedata.normalize("NFD", "caf\u00e9")
    message = _valid_recommendation()
    message.recommendation.user_id = f" {nfd} "
    message.recommendation.exclude_item_ids[:] = [nfd, "caf\u00e9"]
    message.recommendation.allowed_categories[:] = ["BOOKS"]
    got = recommendation_request_from_proto(message, LIMITS)
    assert got.user_id == "caf\u00e9"
    assert got.exclude_item_ids == {"caf\u00e9"}  # two spellings, one id
    assert got.allowed_categories == {0}


def test_context_keys_that_are_one_canonical_key_conflict():
    message = _valid_recommendation()
    ctx = message.recommendation.context
    ctx.attributes[unicodedata.normalize("NFD", "caf\u00e9")] = "a"
    ctx.attributes["caf\u00e9"] = "b"
    with pytest.raises(InvalidArgument, match="given twice"):
        recommendation_request_from_proto(message, LIMITS)


def test_fraud_context_is_carried_canonical():
    message = _valid_fraud()
    message.fraud_check.context.surface = " checkout "
    got = fraud_request_from_proto(message, LIMITS, FRAUD, NOW_MS)
    assert got.context.surface == "checkout" and got.context.attributes == (("ab", "x"),)


def test_outcome_decision_id_is_lower_case_hex():
    message = _valid_outcome()
    message.outcomes[0].decision_id = "ABCDEF" + "0" * 26
    assert outcomes_from_proto(message, LIMITS, NOW_MS)[0].decision_id == "abcdef" + "0" * 26


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("2001:db8::66", "2001:db8::66"),
        ("2001:DB8:0:0:0:0:0:66", "2001:db8::66"),
        ("2001:0db8::0066", "2001:db8::66"),
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::ffff:cb00:7109", "203.0.113.9"),
        ("0:0:0:0:0:ffff:cb00:7109", "203.0.113.9"),
        ("::203.0.113.9", "203.0.113.9"),  # deprecated IPv4-compatible
        ("::1", "::1"),
        ("::", "::"),
        ("", ""),
    ],
)
def test_kind_ip_spellings_have_one_canonical_form(spelling, canonical):
    assert canonical_ip(spelling) == canonical


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("fe80::1%eth0", "zone"),
        ("2001:db8::66%1", "zone"),
        ("203.0.113.9\n", "control"),
        ("203.0.113.9\x00", "control"),
        ("1" * 100, "longer than"),
        ("\uff12\uff10\uff13.0.113.9", "not an IPv4 or IPv6"),  # full-width digits
        ("203.0.113.9\u200b", "not an IPv4 or IPv6"),
        ("010.0.0.1", "not an IPv4 or IPv6"),
    ],
)
def test_bad_ip_addresses_are_rejected(value, words):
    with pytest.raises(IdentifierError, match=words):
        canonical_ip(value)


def test_kind_country_is_an_assigned_iso_3166_code():
    assert {"DE", "FR", "US", "GB", "NG", "XK"} <= ISO_3166_ALPHA2
    assert 249 <= len(ISO_3166_ALPHA2) <= 260
    assert canonical_country("DE") == "DE"
    for code in ("ZZ", "AA", "QM", "XX", "UK", "EU", "de", "DE ", "D\u0395"):
        with pytest.raises(IdentifierError, match="ISO 3166-1"):
            canonical_country(code)


def test_block_list_values_use_the_request_canonical_form():
    assert canonical_block_value("ip", "::FFFF:203.0.113.9") == "203.0.113.9"
    assert canonical_block_value("device", " d-1 ") == "d-1"
    assert canonical_block_value("instrument", "c1") == "c1"
    for kind, value in (("ip", "fe80::1%eth0"), ("ip", ""), ("device", "d\u200b1"), ("device", "d 1")):
        with pytest.raises(IdentifierError):
            canonical_block_value(kind, value)
    # what validation gives a request is what the writer stores
    got = fraud_request_from_proto(_valid_fraud(), LIMITS, FRAUD, NOW_MS).transaction
    assert canonical_block_value("ip", got.ip_address) == got.ip_address
    assert canonical_block_value("device", got.device_id) == got.device_id
