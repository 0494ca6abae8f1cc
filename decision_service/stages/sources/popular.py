"""Most popular items: a complement for known users and the fallback for unknown ones.

With a category allow-list it returns the most popular items of those categories, so a
narrow request still gets a full list. Depth grows with the request's exclusions, the
user's seen items and the executor's refill rounds (``retrieval_depth``), so the filters
that follow cannot starve the answer while eligible items exist.
"""

from __future__ import annotations

import numpy as np

from decision_service.domain.recommendation import Candidates, CandidateSource
from decision_service.stages.base import RecommendationState, retrieval_depth


class PopularCandidates:
    name = "popular"

    def __init__(
        self, num_candidates: int, num_fallback_candidates: int, max_candidates: int | None = None
    ) -> None:
        self.num_candidates = num_candidates
        self.num_fallback_candidates = num_fallback_candidates
        self.max_candidates = max(num_candidates, num_fallback_candidates, max_candidates or 0)

    def retrieve(self, state: RecommendationState) -> Candidates:
        catalog = state.artifacts.catalog  # per-catalog popular lists: built at load, not here
        known = state.user is not None and state.user.embedding is not None
        base = self.num_candidates if known else self.num_fallback_candidates
        if base <= 0 and state.depth_factor <= 1.0:
            return Candidates.empty()
        n = retrieval_depth(state, max(base, 1), self.max_candidates)
        allowed = state.request.allowed_categories
        if allowed:
            by_category = catalog.popular_by_category
            parts = [by_category[c][:n] for c in sorted(allowed) if c in by_category]
            rows = np.concatenate(parts) if parts else np.empty(0, np.int64)
            rows = rows[np.argsort(-catalog.popularity[rows], kind="stable")][:n]
        else:
            rows = catalog.popular_order[:n]
        return Candidates(
            rows,
            np.full(len(rows), CandidateSource.POPULAR, np.uint8),
            catalog.popularity[rows].astype(np.float32),
        )
