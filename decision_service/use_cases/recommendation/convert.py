"""Recommendation requests and answers: proto <-> domain, with validation naming the field.

Categories are matched case-insensitively and become the catalog's spelling.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.config import ServiceConfig
from decision_service.domain.recommendation import RecommendationDecision, RecommendationRequest
from decision_service.errors import InvalidArgument
from decision_service.features.definitions import CATEGORIES
from decision_service.use_cases.proto import (
    RequestLimits,
    context_from_proto,
    request_id_from_proto,
    response_envelope,
    text,
)


def category_lookup(vocabulary: tuple[str, ...]) -> Callable[[str], int | None]:
    """name -> index in ``vocabulary``: the exact (NFC-normalized) name, else the one name that
    matches ignoring case (``drama`` finds ``Drama``); None when unknown or ambiguous (two names
    that differ only in case need the exact spelling)."""
    exact: dict[str, int] = {}
    folded: dict[str, int | None] = {}
    for i, name in enumerate(vocabulary):
        key = unicodedata.normalize("NFC", name)
        exact.setdefault(key, i)
        fold = key.casefold()
        folded[fold] = i if folded.get(fold, i) == i else None

    def find(name: str) -> int | None:
        key = unicodedata.normalize("NFC", name)
        hit = exact.get(key)
        return hit if hit is not None else folded.get(key.casefold())

    return find


_category_index = category_lookup(CATEGORIES)


@dataclass(frozen=True, kw_only=True)
class RecommendationLimits(RequestLimits):
    """The shared limits plus the recommendation request's own."""

    max_num_items: int
    max_exclusions: int
    max_allowed_categories: int

    @classmethod
    def from_config(cls, config: ServiceConfig) -> RecommendationLimits:
        shared = RequestLimits.from_config(config)
        return cls(
            max_context_attributes=shared.max_context_attributes,
            max_string_length=shared.max_string_length,
            max_outcomes=shared.max_outcomes,
            outcome_max_future_skew_ms=shared.outcome_max_future_skew_ms,
            max_num_items=config.max_num_items,
            max_exclusions=config.max_exclusions,
            max_allowed_categories=config.max_allowed_categories,
        )


def recommendation_request_from_proto(
    request: pb.GetDecisionRequest, limits: RecommendationLimits
) -> RecommendationRequest:
    rec = request.recommendation
    request_id = request_id_from_proto(request, limits)
    user_id = text("recommendation.user_id", rec.user_id, limits, required=True)
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
        text(f"recommendation.exclude_item_ids[{i}]", v, limits, required=True)
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
        name = text(field, raw, limits, required=True)
        index = _category_index(name)
        if index is None:
            shown = name if len(name) <= 40 else name[:40] + "..."
            known = ", ".join(CATEGORIES[:50]) + (
                f" ... ({len(CATEGORIES)} in all)" if len(CATEGORIES) > 50 else ""
            )
            raise InvalidArgument(field, f"unknown category {ascii(shown)}; known: {known}")
        allowed.add(index)
    return RecommendationRequest(
        request_id=request_id,
        user_id=user_id,
        num_items=rec.num_items,
        exclude_item_ids=excluded,
        allowed_categories=frozenset(allowed),
        context=context_from_proto("recommendation.context", rec.context, limits),
    )


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
