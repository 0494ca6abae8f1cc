"""Nearest items to the user's embedding in the FAISS index (inner product)."""

from __future__ import annotations

import numpy as np

from decision_service.domain.recommendation import Candidates, CandidateSource
from decision_service.stages.base import RecommendationState


class AnnCandidates:
    name = "ann"

    def __init__(self, num_candidates: int) -> None:
        self.num_candidates = num_candidates

    def retrieve(self, state: RecommendationState) -> Candidates:
        user = state.user
        if user is None or user.embedding is None:
            return Candidates.empty()
        query = np.ascontiguousarray(user.embedding, dtype=np.float32).reshape(1, -1)
        scores, rows = state.artifacts.index.search(query, self.num_candidates)
        found = rows[0] >= 0  # FAISS pads with -1 when fewer items are reachable
        rows_found = rows[0][found].astype(np.int64)
        return Candidates(
            rows_found,
            np.full(len(rows_found), CandidateSource.ANN, np.uint8),
            scores[0][found].astype(np.float32),
        )
