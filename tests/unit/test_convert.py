"""Request validation: every malformed field is named in the error."""

import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.server.errors import InvalidArgument
from decision_service.use_cases.recommendation.convert import (
    RecommendationLimits,
    recommendation_request_from_proto,
)

LIMITS = RecommendationLimits(
    max_num_items=50,
    max_exclusions=3,
    max_allowed_categories=2,
    max_context_attributes=2,
    max_string_length=32,
)


def request(**fields):
    rec = {"user_id": "u1", "num_items": 10, **fields}
    return pb.GetDecisionRequest(request_id="r1", recommendation=pb.RecommendationRequest(**rec))


def test_valid_request_converts():
    got = recommendation_request_from_proto(
        request(
            exclude_item_ids=["a", "b"],
            allowed_categories=["books", "toys"],
            context=pb.RequestContext(surface="home", locale="en-GB", attributes={"ab": "x"}),
        ),
        LIMITS,
    )
    assert got.user_id == "u1" and got.num_items == 10
    assert got.exclude_item_ids == {"a", "b"}
    assert got.allowed_categories == {0, 12}
    assert got.context.attributes == (("ab", "x"),)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"user_id": ""}, "recommendation.user_id"),
        ({"user_id": "   "}, "recommendation.user_id"),
        ({"user_id": "x" * 33}, "recommendation.user_id"),
        ({"user_id": "a\x00b"}, "recommendation.user_id"),
        ({"num_items": 0}, "recommendation.num_items"),
        ({"num_items": -3}, "recommendation.num_items"),
        ({"num_items": 51}, "recommendation.num_items"),
        ({"exclude_item_ids": ["a", "b", "c", "d"]}, "recommendation.exclude_item_ids"),
        ({"exclude_item_ids": ["a", ""]}, "recommendation.exclude_item_ids[1]"),
        ({"allowed_categories": ["books", "nope"]}, "recommendation.allowed_categories[1]"),
        ({"allowed_categories": ["books", "toys", "games"]}, "recommendation.allowed_categories"),
        ({"context": pb.RequestContext(locale="not a locale")}, "recommendation.context.locale"),
        ({"context": pb.RequestContext(surface="s" * 40)}, "recommendation.context.surface"),
        (
            {"context": pb.RequestContext(attributes={"a": "1", "b": "2", "c": "3"})},
            "recommendation.context.attributes",
        ),
        ({"context": pb.RequestContext(attributes={"k": "v\n"})}, "recommendation.context.attributes['k']"),
    ],
)
def test_invalid_fields_are_named(fields, field_name):
    with pytest.raises(InvalidArgument) as err:
        recommendation_request_from_proto(request(**fields), LIMITS)
    assert err.value.field == field_name
    assert str(err.value).startswith(field_name + ":")


def test_missing_request_id_is_generated():
    msg = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="u", num_items=1))
    assert len(recommendation_request_from_proto(msg, LIMITS).request_id) == 32


def test_out_of_range_timestamps_are_invalid_argument_not_internal():
    # Found by the property tests: protobuf raises ValueError outside years 0001..9999.
    from google.protobuf.timestamp_pb2 import Timestamp

    from decision_service.server.convert import outcomes_from_proto

    request = pb.RecordOutcomeRequest(
        outcomes=[pb.Outcome(decision_id="0" * 32, item_id="i", type="click", occurred_at=Timestamp(seconds=-62135596801))]
    )
    with pytest.raises(InvalidArgument) as err:
        outcomes_from_proto(request, LIMITS, 1_800_000_000_000)
    assert err.value.field == "outcomes[0].occurred_at"
