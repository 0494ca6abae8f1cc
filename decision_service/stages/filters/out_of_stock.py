"""Removes items whose served stock is zero. Runs after hydration: stock lives in Redis.

Part of the pipeline when the project's item group declares ``i_stock`` (``applies``); a
catalog without stock (films, articles) has no such filter.

Only a stock value actually read from the store counts; an item whose features are
missing or unavailable is kept (its default stock says nothing about the shelf).
"""

from __future__ import annotations

import numpy as np

from decision_service.domain.features import FeatureStatus
from decision_service.features.definitions import ITEM
from decision_service.stages.base import RecommendationState

STOCK_FEATURE = "i_stock"


def applies() -> bool:
    """Whether the project's item group declares a stock feature."""
    return STOCK_FEATURE in ITEM.columns


class OutOfStock:
    name = "out_of_stock"

    def __init__(self) -> None:
        self._stock = ITEM.slot(STOCK_FEATURE)  # KeyError when the item group has no stock

    def keep(self, state: RecommendationState) -> np.ndarray:
        if state.features is None:
            return np.ones(len(state.candidates), dtype=bool)
        items = state.features.items
        known = items.status == FeatureStatus.PRESENT
        return ~(known & (items.values[:, self._stock] <= 0))
