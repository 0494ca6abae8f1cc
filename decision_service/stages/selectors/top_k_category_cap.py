"""Top-k by score with at most ``max_per_category`` items of one category.

The cap is soft: when the allowed candidates cannot fill ``num_items`` under the cap
(e.g. a one-category allow-list), the best remaining items fill the list.
"""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


class TopKWithCategoryCap:
    name = "top_k_category_cap"

    def __init__(self, max_per_category: int) -> None:
        self.max_per_category = max_per_category

    def select(self, state: RecommendationState, scores: np.ndarray) -> np.ndarray:
        k = state.request.num_items
        order = np.argsort(-scores, kind="stable")
        categories = state.artifacts.catalog.categories[state.candidates.rows]
        picked: list[int] = []
        overflow: list[int] = []
        per_category: dict[int, int] = {}
        for i in order.tolist():
            c = int(categories[i])
            if per_category.get(c, 0) < self.max_per_category:
                per_category[c] = per_category.get(c, 0) + 1
                picked.append(i)
                if len(picked) == k:
                    break
            else:
                overflow.append(i)
        if len(picked) < k:
            picked.extend(overflow[: k - len(picked)])
        return np.asarray(picked, dtype=np.int64)
