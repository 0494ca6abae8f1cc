"""Removes the items the caller asked to exclude: their ids become catalog rows once here."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState
from decision_service.stages.filters.previously_seen import not_in_sorted


class RequestExclusions:
    name = "request_exclusions"

    def keep(self, state: RecommendationState) -> np.ndarray:
        excluded = state.request.exclude_item_ids
        if not excluded:
            return np.ones(len(state.candidates), dtype=bool)
        return not_in_sorted(state.candidates.rows, state.artifacts.catalog.rows_of(excluded))
