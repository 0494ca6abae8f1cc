"""Nearest items to the user's embedding in the FAISS index (inner product)."""

from __future__ import annotations

import numpy as np

from decision_service.domain.features import usable_query_vector
from decision_service.domain.recommendation import Candidates, CandidateSource
from decision_service.stages.base import RecommendationState, retrieval_depth


class InvalidQueryVector(ValueError):
    """The user's embedding cannot query the index (non-finite, zero or overflowing norm)."""


class AnnCandidates:
    name = "ann"

    def __init__(self, num_candidates: int, max_candidates: int | None = None) -> None:
        self.num_candidates = num_candidates
        self.max_candidates = max(num_candidates, max_candidates or num_candidates)

    def retrieve(self, state: RecommendationState) -> Candidates:
        """Contract: ``retrieval_depth`` nearest items; with a category allow-list, deeper by
        the inverse share of the catalog those categories hold (the filter keeps only them).

        On failure: raises InvalidQueryVector rather than query with a vector that is not
        usable (the user-state loader already serves such a user as unknown; this guards
        every other way a bad vector could arrive). The executor flags ``candidates:ann_failed``.
        """
        user = state.user
        if user is None or user.embedding is None:
            return Candidates.empty()
        if not usable_query_vector(user.embedding):
            raise InvalidQueryVector("user embedding is non-finite or has a zero norm")
        catalog = state.artifacts.catalog
        share = 1.0
        allowed = state.request.allowed_categories
        if allowed:
            counts = catalog.category_counts
            kept = sum(int(counts[c]) for c in allowed if 0 <= c < len(counts))
            share = kept / max(len(catalog), 1)
            if kept == 0:
                return Candidates.empty()
        k = retrieval_depth(state, self.num_candidates, self.max_candidates, share)
        k = min(k, int(state.artifacts.index.ntotal))
        if k <= 0:
            return Candidates.empty()
        query = np.ascontiguousarray(user.embedding, dtype=np.float32).reshape(1, -1)
        scores, rows = state.artifacts.index.search(query, k)
        found = rows[0] >= 0  # FAISS pads with -1 when fewer items are reachable
        rows_found = rows[0][found].astype(np.int64)
        return Candidates(
            rows_found,
            np.full(len(rows_found), CandidateSource.ANN, np.uint8),
            scores[0][found].astype(np.float32),
        )
