"""Keeps only items of the requested categories, when the request names any."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


class CategoryAllowList:
    name = "category_allow_list"

    def keep(self, state: RecommendationState) -> np.ndarray:
        allowed = state.request.allowed_categories
        if not allowed:
            return np.ones(len(state.candidates), dtype=bool)
        categories = state.artifacts.catalog.categories[state.candidates.rows]
        return np.isin(categories, np.fromiter(allowed, dtype=np.int16))
