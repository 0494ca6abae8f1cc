"""The use-case seam: the generic machinery routes, attributes and checks by what use cases declare."""

from __future__ import annotations

import asyncio
import json

import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.decision import Degradation
from decision_service.domain.outcomes import OutcomeType
from decision_service.engine import Run, StageBook
from decision_service.errors import InvalidArgument, NotServed
from decision_service.outcomes.decision_index import _decode
from decision_service.server.collect import _effect_handlers
from decision_service.server.servicer import DecisionServicer
from decision_service.use_cases import OUTCOME_TYPES, USE_CASES
from decision_service.use_cases.base import UseCase
from decision_service.use_cases.proto import RequestLimits

LIMITS = RequestLimits(max_context_attributes=4, max_string_length=64)


def _servicer() -> DecisionServicer:
    return DecisionServicer({u.request_field: None for u in USE_CASES}, LIMITS, 100)


def test_a_registered_use_case_with_nothing_published_is_not_served():
    request = pb.GetDecisionRequest(fraud_check=pb.FraudCheckRequest(transaction_id="t1"))
    with pytest.raises(NotServed, match="fraud_check"):
        asyncio.run(_servicer().GetDecision(request, None))  # type: ignore[arg-type]


def test_a_request_without_a_use_case_names_every_registered_field():
    with pytest.raises(InvalidArgument, match="use_case") as info:
        asyncio.run(_servicer().GetDecision(pb.GetDecisionRequest(), None))  # type: ignore[arg-type]
    for u in USE_CASES:
        assert u.request_field in str(info.value)


def test_kind_rolling_deploy_an_index_entry_of_a_use_case_not_served_here_reads_as_unknown():
    raw = json.dumps(["a_newer_use_case", "u1", 1, []]).encode()
    assert _decode("ab" * 16, raw, {"recommendation": 1}) is None
    ref = _decode("ab" * 16, json.dumps(["recommendation", "u1", 1, []]).encode(), {"recommendation": 1})
    assert ref is not None and ref.user_id == "u1"


def test_the_envelope_dedupes_flags_or_shares_the_runs_list():
    run = Run(StageBook("x"), "r1", 0.0)
    run.degraded += [Degradation("features", "store_timeout")] * 2
    copied = run.envelope("v1")
    assert copied["degraded"] == [Degradation("features", "store_timeout")]
    assert copied["model_version"] == "v1" and len(copied["decision_id"]) == 32
    shared = run.envelope("v1", dedupe=False)
    run.book.degrade(run.degraded, "commit", "skipped")
    assert shared["degraded"][-1] == Degradation("commit", "skipped")  # raised after the decision


def test_kind_declaration_error_an_effect_without_a_handler_stops_the_start():
    broken = UseCase(
        name="demo_case",
        request_field="recommendation",
        outcome_types=(OutcomeType("demo_outcome", "demo_case", ("teleport",), label_window_s=60),),
        serve=lambda env: None,
    )
    with pytest.raises(ValueError, match="teleport"):
        _effect_handlers(ServiceConfig(), (broken,))


def test_kind_declaration_error_outcome_types_are_required_and_owned():
    with pytest.raises(ValueError, match="no outcome type"):
        UseCase(name="a", request_field="recommendation", outcome_types=(), serve=lambda env: None)
    with pytest.raises(ValueError, match="belongs to"):
        UseCase(
            name="a", request_field="recommendation",
            outcome_types=(OutcomeType("o", "b", label_window_s=1),), serve=lambda env: None,
        )


def test_every_registered_use_case_is_attributable_and_routed():
    oneof = {f.name for f in pb.GetDecisionRequest.DESCRIPTOR.oneofs_by_name["use_case"].fields}
    for u in USE_CASES:
        assert u.request_field in oneof
        assert any(t.label_window_s > 0 for t in u.outcome_types), u.name
        assert all(OUTCOME_TYPES[t.name] is t for t in u.outcome_types)
