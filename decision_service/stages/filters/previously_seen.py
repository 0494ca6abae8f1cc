"""Removes items the user already interacted with."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


class PreviouslySeen:
    name = "previously_seen"

    def keep(self, state: RecommendationState) -> np.ndarray:
        seen = state.user.seen_item_ids if state.user else frozenset()
        if not seen:
            return np.ones(len(state.candidates), dtype=bool)
        ids = state.candidate_item_ids()
        return np.fromiter((i not in seen for i in ids), dtype=bool, count=len(ids))
