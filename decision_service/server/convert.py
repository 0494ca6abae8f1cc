"""RecordOutcome proto -> domain, with validation naming the field. The outcome types are the
registered use cases' (decision_service/use_cases)."""

from __future__ import annotations

import math
import re

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.outcomes import Outcome
from decision_service.errors import InvalidArgument
from decision_service.use_cases import OUTCOME_TYPES
from decision_service.use_cases.proto import RequestLimits, attributes, text, timestamp_ms

_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")


def outcomes_from_proto(
    request: pb.RecordOutcomeRequest, limits: RequestLimits, now_ms: int
) -> list[Outcome]:
    n = len(request.outcomes)
    if not 1 <= n <= limits.max_outcomes:
        raise InvalidArgument("outcomes", f"send between 1 and {limits.max_outcomes} outcomes, got {n}")
    return [_outcome(f"outcomes[{i}]", o, limits, now_ms) for i, o in enumerate(request.outcomes)]


def _outcome(path: str, o: pb.Outcome, limits: RequestLimits, now_ms: int) -> Outcome:
    decision_id = o.decision_id.strip().lower()
    if not _DECISION_ID.fullmatch(decision_id):
        shown = o.decision_id[:40]
        raise InvalidArgument(
            f"{path}.decision_id", f"must be the 32-hex-digit id of a decision, got {ascii(shown)}"
        )
    kind = OUTCOME_TYPES.get(o.type)
    if kind is None:
        raise InvalidArgument(
            f"{path}.type", f"unknown outcome type {ascii(o.type[:40])}; known: {', '.join(OUTCOME_TYPES)}"
        )
    item_id = text(f"{path}.item_id", o.item_id, limits, required=kind.requires_item)
    if not math.isfinite(o.value):
        raise InvalidArgument(f"{path}.value", "must be a finite number")
    if o.HasField("occurred_at"):
        occurred = timestamp_ms(f"{path}.occurred_at", o.occurred_at)
        if occurred > now_ms + limits.outcome_max_future_skew_ms:
            raise InvalidArgument(f"{path}.occurred_at", "is in the future")
        if occurred <= 0:
            raise InvalidArgument(f"{path}.occurred_at", "must be after 1970-01-01")
    else:
        occurred = now_ms
    if len(o.attributes) > limits.max_context_attributes:
        raise InvalidArgument(
            f"{path}.attributes", f"at most {limits.max_context_attributes} entries, got {len(o.attributes)}"
        )
    attrs = attributes(f"{path}.attributes", o.attributes, limits)
    return Outcome(decision_id, kind, occurred, item_id, float(o.value), attrs)
