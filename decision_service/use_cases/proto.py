"""proto <-> domain helpers every use case shares, with validation. Every error names the field.

Every string a request carries is brought to its ONE canonical form here (see
domain/identifiers.py: NFC, surrounding whitespace stripped, no control / invisible / bidi
characters, bounded length) before anything uses it as a key, compares, counts or logs it.
Case: ids and context keys/values keep their case (opaque).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.decision import Decision, RequestContext
from decision_service.domain.identifiers import IdentifierError, canonical_text
from decision_service.errors import InvalidArgument

_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class RequestLimits:
    """The limits every use case's request (and RecordOutcome) shares; a use case adds its
    own (e.g. recommendation.convert.RecommendationLimits, fraud.convert.FraudLimits)."""

    max_context_attributes: int
    max_string_length: int
    max_outcomes: int = 1_000
    outcome_max_future_skew_ms: int = 300_000

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RequestLimits:
        return cls(
            config.max_context_attributes,
            config.max_string_length,
            config.max_outcomes_per_request,
            int(config.outcome_max_future_skew_s * 1000),
        )


def request_id_from_proto(request: pb.GetDecisionRequest, limits: RequestLimits) -> str:
    if not request.request_id:
        return uuid.uuid4().hex
    return text("request_id", request.request_id, limits, required=True)


def context_from_proto(path: str, ctx: pb.RequestContext, limits: RequestLimits) -> RequestContext:
    surface = text(f"{path}.surface", ctx.surface, limits)
    device = text(f"{path}.device", ctx.device, limits)
    locale = text(f"{path}.locale", ctx.locale, limits)
    if locale and not _LOCALE.match(locale):
        raise InvalidArgument(f"{path}.locale", f"not a BCP 47 language tag: {ascii(locale)}")
    if len(ctx.attributes) > limits.max_context_attributes:
        raise InvalidArgument(
            f"{path}.attributes",
            f"at most {limits.max_context_attributes} entries, got {len(ctx.attributes)}",
        )
    return RequestContext(surface, device, locale, attributes(f"{path}.attributes", ctx.attributes, limits))


def attributes(path: str, raw: Any, limits: RequestLimits) -> tuple[tuple[str, str], ...]:
    """Canonical (key, value) pairs sorted by key. Two keys that are one canonical key
    (e.g. NFC and NFD spellings) are a conflict, not a silent overwrite."""
    out: dict[str, str] = {}
    for key in sorted(raw):
        canonical = text(f"{path} key", key, limits, required=True)
        if canonical in out:
            raise InvalidArgument(f"{path} key", f"{ascii(canonical)} is given twice (once normalised)")
        out[canonical] = text(f"{path}[{ascii(canonical)}]", raw[key], limits)
    return tuple(sorted(out.items()))


def timestamp_ms(field: str, ts: Timestamp) -> int:
    """Milliseconds since the epoch; a timestamp outside years 0001..9999 is invalid input."""
    try:
        return int(ts.ToMilliseconds())
    except ValueError:
        raise InvalidArgument(field, "is not a valid timestamp (years 0001..9999)") from None


def text(field: str, value: str, limits: RequestLimits, required: bool = False) -> str:
    """The canonical form of a request string (domain/identifiers.canonical_text).

    On failure: InvalidArgument naming ``field``.
    """
    try:
        return canonical_text(value, limits.max_string_length, required)
    except IdentifierError as exc:
        raise InvalidArgument(field, str(exc)) from None


def response_envelope(decision: Decision) -> dict[str, Any]:
    """The GetDecisionResponse fields every use case shares."""
    decided_at = Timestamp()
    decided_at.FromMilliseconds(decision.decided_at_ms)
    return {
        "decision_id": decision.decision_id,
        "request_id": decision.request_id,
        "model_version": decision.model_version,
        "decided_at": decided_at,
        "degraded": [pb.Degradation(stage=d.stage, reason=d.reason) for d in decision.degraded],
    }
