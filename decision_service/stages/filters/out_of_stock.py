"""Removes items whose served stock is zero. Runs after hydration: stock lives in Redis.

Only a stock value actually read from the store counts; an item whose features are
missing or unavailable is kept (its default stock says nothing about the shelf).
"""

from __future__ import annotations

import numpy as np

from decision_service.domain.features import FeatureStatus
from decision_service.features.definitions import ITEM
from decision_service.stages.base import RecommendationState

_STOCK = ITEM.slot("i_stock")


class OutOfStock:
    name = "out_of_stock"

    def keep(self, state: RecommendationState) -> np.ndarray:
        if state.features is None:
            return np.ones(len(state.candidates), dtype=bool)
        items = state.features.items
        known = items.status == FeatureStatus.PRESENT
        return ~(known & (items.values[:, _STOCK] <= 0))
