"""Removes the items the caller asked to exclude."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


class RequestExclusions:
    name = "request_exclusions"

    def keep(self, state: RecommendationState) -> np.ndarray:
        excluded = state.request.exclude_item_ids
        if not excluded:
            return np.ones(len(state.candidates), dtype=bool)
        ids = state.candidate_item_ids()
        return np.fromiter((i not in excluded for i in ids), dtype=bool, count=len(ids))
