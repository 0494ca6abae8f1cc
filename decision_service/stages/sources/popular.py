"""Most popular items: a complement for known users and the fallback for unknown ones.

With a category allow-list it returns the most popular items of those categories, so a
narrow request still gets a full list.
"""

from __future__ import annotations

import numpy as np

from decision_service.domain.recommendation import Candidates, CandidateSource
from decision_service.models.recommendation_artifacts import ItemCatalog
from decision_service.stages.base import RecommendationState


class PopularCandidates:
    name = "popular"

    def __init__(self, num_candidates: int, num_fallback_candidates: int) -> None:
        self.num_candidates = num_candidates
        self.num_fallback_candidates = num_fallback_candidates
        self._depth = max(num_candidates, num_fallback_candidates)
        self._catalog: ItemCatalog | None = None
        self._overall = np.empty(0, np.int64)
        self._by_category: dict[int, np.ndarray] = {}

    def retrieve(self, state: RecommendationState) -> Candidates:
        self._prepare(state.artifacts.catalog)
        known = state.user is not None and state.user.embedding is not None
        n = self.num_candidates if known else self.num_fallback_candidates
        allowed = state.request.allowed_categories
        if allowed:
            rows = np.concatenate([self._by_category.get(c, self._overall[:0]) for c in allowed])
            rows = rows[np.argsort(-self._catalog.popularity[rows], kind="stable")][:n]  # type: ignore[union-attr]
        else:
            rows = self._overall[:n]
        return Candidates(
            rows,
            np.full(len(rows), CandidateSource.POPULAR, np.uint8),
            self._catalog.popularity[rows].astype(np.float32),  # type: ignore[union-attr]
        )

    def _prepare(self, catalog: ItemCatalog) -> None:
        # Once per artifacts version (hot reload swaps the catalog), never per request.
        if self._catalog is catalog:
            return
        order = np.argsort(-catalog.popularity, kind="stable").astype(np.int64)
        by_category: dict[int, np.ndarray] = {}
        ordered_categories = catalog.categories[order]
        for c in np.unique(catalog.categories).tolist():
            by_category[int(c)] = order[ordered_categories == c][: self._depth]
        self._overall = order[: self._depth]
        self._by_category = by_category
        self._catalog = catalog
