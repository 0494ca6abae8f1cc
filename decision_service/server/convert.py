"""proto <-> domain, with request validation. Every error names the offending field.

Every string a request carries is brought to its ONE canonical form here (see
domain/identifiers.py: NFC, surrounding whitespace stripped, no control / invisible / bidi
characters, bounded length) before anything uses it as a key, compares, counts or logs it.
Case: ids and context keys/values keep their case (opaque); categories are matched
case-insensitively and become the catalog's spelling; decision ids become lower-case hex.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.fraud import FraudDecision
from decision_service.domain.identifiers import IdentifierError, canonical_text
from decision_service.domain.outcomes import OUTCOME_TYPES, Outcome
from decision_service.domain.recommendation import (
    RecommendationDecision,
    RecommendationRequest,
    RequestContext,
)
from decision_service.errors import InvalidArgument
from decision_service.features.definitions import CATEGORIES

_CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_DECISION_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RequestLimits:
    max_num_items: int
    max_exclusions: int
    max_allowed_categories: int
    max_context_attributes: int
    max_string_length: int
    max_outcomes: int = 1_000
    outcome_max_future_skew_ms: int = 300_000

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RequestLimits:
        return cls(
            config.max_num_items,
            config.max_exclusions,
            config.max_allowed_categories,
            config.max_context_attributes,
            config.max_string_length,
            config.max_outcomes_per_request,
            int(config.outcome_max_future_skew_s * 1000),
        )


def request_id_from_proto(request: pb.GetDecisionRequest, limits: RequestLimits) -> str:
    if not request.request_id:
        return uuid.uuid4().hex
    return _text("request_id", request.request_id, limits, required=True)


def recommendation_request_from_proto(
    request: pb.GetDecisionRequest, limits: RequestLimits
) -> RecommendationRequest:
    rec = request.recommendation
    request_id = request_id_from_proto(request, limits)
    user_id = _text("recommendation.user_id", rec.user_id, limits, required=True)
    if not 1 <= rec.num_items <= limits.max_num_items:
        raise InvalidArgument(
            "recommendation.num_items",
            f"must be between 1 and {limits.max_num_items}, got {rec.num_items}",
        )
    if len(rec.exclude_item_ids) > limits.max_exclusions:
        raise InvalidArgument(
            "recommendation.exclude_item_ids",
            f"at most {limits.max_exclusions} items, got {len(rec.exclude_item_ids)}",
        )
    excluded = frozenset(
        _text(f"recommendation.exclude_item_ids[{i}]", v, limits, required=True)
        for i, v in enumerate(rec.exclude_item_ids)
    )
    if len(rec.allowed_categories) > limits.max_allowed_categories:
        raise InvalidArgument(
            "recommendation.allowed_categories",
            f"at most {limits.max_allowed_categories} categories, got {len(rec.allowed_categories)}",
        )
    allowed = set()
    for i, raw in enumerate(rec.allowed_categories):
        field = f"recommendation.allowed_categories[{i}]"
        name = _text(field, raw, limits, required=True).casefold()
        if name not in _CATEGORY_INDEX:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise InvalidArgument(field, f"unknown category {ascii(shown)}; known: {', '.join(CATEGORIES)}")
        allowed.add(_CATEGORY_INDEX[name])
    return RecommendationRequest(
        request_id=request_id,
        user_id=user_id,
        num_items=rec.num_items,
        exclude_item_ids=excluded,
        allowed_categories=frozenset(allowed),
        context=context_from_proto("recommendation.context", rec.context, limits),
    )


def context_from_proto(path: str, ctx: pb.RequestContext, limits: RequestLimits) -> RequestContext:
    surface = _text(f"{path}.surface", ctx.surface, limits)
    device = _text(f"{path}.device", ctx.device, limits)
    locale = _text(f"{path}.locale", ctx.locale, limits)
    if locale and not _LOCALE.match(locale):
        raise InvalidArgument(f"{path}.locale", f"not a BCP 47 language tag: {ascii(locale)}")
    if len(ctx.attributes) > limits.max_context_attributes:
        raise InvalidArgument(
            f"{path}.attributes",
            f"at most {limits.max_context_attributes} entries, got {len(ctx.attributes)}",
        )
    return RequestContext(surface, device, locale, _attributes(f"{path}.attributes", ctx.attributes, limits))


def _attributes(path: str, raw: Any, limits: RequestLimits) -> tuple[tuple[str, str], ...]:
    """Canonical (key, value) pairs sorted by key. Two keys that are one canonical key
    (e.g. NFC and NFD spellings) are a conflict, not a silent overwrite."""
    out: dict[str, str] = {}
    for key in sorted(raw):
        canonical = _text(f"{path} key", key, limits, required=True)
        if canonical in out:
            raise InvalidArgument(f"{path} key", f"{ascii(canonical)} is given twice (once normalised)")
        out[canonical] = _text(f"{path}[{ascii(canonical)}]", raw[key], limits)
    return tuple(sorted(out.items()))


def timestamp_ms(field: str, ts: Timestamp) -> int:
    """Milliseconds since the epoch; a timestamp outside years 0001..9999 is invalid input."""
    try:
        return int(ts.ToMilliseconds())
    except ValueError:
        raise InvalidArgument(field, "is not a valid timestamp (years 0001..9999)") from None


def _text(field: str, value: str, limits: RequestLimits, required: bool = False) -> str:
    """The canonical form of a request string (domain/identifiers.canonical_text).

    On failure: InvalidArgument naming ``field``.
    """
    try:
        return canonical_text(value, limits.max_string_length, required)
    except IdentifierError as exc:
        raise InvalidArgument(field, str(exc)) from None


def response_envelope(decision: RecommendationDecision | FraudDecision) -> dict[str, Any]:
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


def recommendation_decision_to_proto(decision: RecommendationDecision) -> pb.GetDecisionResponse:
    return pb.GetDecisionResponse(
        **response_envelope(decision),
        recommendation=pb.RecommendationResult(
            items=[
                pb.RecommendedItem(
                    item_id=item.item_id,
                    score=item.score,
                    rank=item.rank,
                    source=int(item.source),
                    category=item.category,
                    propensity=item.propensity,
                )
                for item in decision.items
            ]
        ),
    )


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
    item_id = _text(f"{path}.item_id", o.item_id, limits, required=kind.requires_item)
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
    attributes = _attributes(f"{path}.attributes", o.attributes, limits)
    return Outcome(decision_id, kind, occurred, item_id, float(o.value), attributes)
