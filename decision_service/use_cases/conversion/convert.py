"""Conversion request proto <-> domain, with validation. Every error names the offending field."""

from __future__ import annotations

import math

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.conversion import ConversionDecision, ConversionRequest
from decision_service.errors import InvalidArgument
from decision_service.use_cases.proto import (
    RequestLimits,
    context_from_proto,
    request_id_from_proto,
    response_envelope,
    text,
)

_P = "conversion"
MAX_CART_ITEMS = 100_000
MAX_PAGE_VIEWS = 1_000_000
MAX_CART_VALUE = 1e9  # major units
MAX_SESSION_S = 30 * 86_400.0


def conversion_request_from_proto(
    request: pb.GetDecisionRequest, limits: RequestLimits, now_ms: int
) -> ConversionRequest:
    """The domain request; ``now_ms`` (server clock) becomes ``received_at_ms``.

    On failure: InvalidArgument naming the field (``conversion.user_id``, ...)."""
    c = request.conversion
    request_id = request_id_from_proto(request, limits)
    user_id = text(f"{_P}.user_id", c.user_id, limits, required=True)
    context = context_from_proto(f"{_P}.context", c.context, limits)
    _bounded("cart_items", c.cart_items, MAX_CART_ITEMS)
    _bounded("session_page_views", c.session_page_views, MAX_PAGE_VIEWS)
    _bounded("cart_value", c.cart_value, MAX_CART_VALUE)
    _bounded("session_seconds", c.session_seconds, MAX_SESSION_S)
    threshold = None
    if c.HasField("threshold"):
        threshold = float(c.threshold)
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InvalidArgument(f"{_P}.threshold", f"must be in [0, 1], got {c.threshold}")
    return ConversionRequest(
        request_id=request_id,
        user_id=user_id,
        context=context,
        cart_items=int(c.cart_items),
        cart_value=float(c.cart_value),
        session_page_views=int(c.session_page_views),
        session_seconds=float(c.session_seconds),
        threshold=threshold,
        received_at_ms=now_ms,
    )


def _bounded(name: str, value: float, maximum: float) -> None:
    if not math.isfinite(value) or value < 0 or value > maximum:
        raise InvalidArgument(f"{_P}.{name}", f"must be in [0, {maximum:g}], got {value}")


def conversion_decision_to_proto(decision: ConversionDecision) -> pb.GetDecisionResponse:
    return pb.GetDecisionResponse(
        **response_envelope(decision),
        conversion=pb.ConversionResult(
            probability=decision.probability,
            action=int(decision.action),
            threshold=decision.threshold if decision.threshold is not None else 0.0,
            reasons=[
                pb.ReasonCode(
                    code=r.code, feature=r.feature, contribution=r.contribution, description=r.description
                )
                for r in decision.reasons
            ],
            base_rate=decision.base_rate,
        ),
    )
