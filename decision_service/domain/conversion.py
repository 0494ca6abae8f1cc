"""Conversion scoring, as pure data: the request, the decision and its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from decision_service.domain.decision import Decision, ReasonCode, RequestContext


class ConversionAction(IntEnum):
    """Values match the proto enum ConversionAction."""

    UNSPECIFIED = 0  # no threshold: the probability only
    TARGET = 1  # probability >= threshold
    SKIP = 2  # below the threshold, or no score


@dataclass(frozen=True)
class ConversionRequest:
    request_id: str
    user_id: str
    context: RequestContext
    cart_items: int
    cart_value: float  # major units
    session_page_views: int
    session_seconds: float
    threshold: float | None  # None: the server's (which may be None: no action)
    received_at_ms: int  # server clock; the hour-of-day feature uses it, never the client's


@dataclass(kw_only=True)
class ConversionDecision(Decision):
    probability: float  # calibrated P(converts within the label window)
    action: ConversionAction
    threshold: float | None
    base_rate: float
    reasons: tuple[ReasonCode, ...] = field(default_factory=tuple)
    scored: bool = True  # False: the model could not score, the base rate was answered
