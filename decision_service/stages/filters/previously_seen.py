"""Removes items the user already interacted with: candidate rows vs the user's seen rows."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


def not_in_sorted(rows: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """bool [len(rows)]: True where a row is not in ``sorted_rows`` (int64, sorted).

    One ``np.searchsorted``: ~6 µs for 300 candidates against 500 seen rows (``np.isin``
    measured ~75 µs for the same).
    """
    if len(sorted_rows) == 0:
        return np.ones(len(rows), dtype=bool)
    at = np.searchsorted(sorted_rows, rows)
    np.minimum(at, len(sorted_rows) - 1, out=at)
    return sorted_rows[at] != rows


class PreviouslySeen:
    name = "previously_seen"

    def keep(self, state: RecommendationState) -> np.ndarray:
        seen = state.user.seen_rows if state.user else np.empty(0, dtype=np.int64)
        return not_in_sorted(state.candidates.rows, seen)
