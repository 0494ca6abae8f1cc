"""Reserves a share of the slots for exploration and records each item's propensity.

Policy, for a list of ``k`` items and exploration share ``s``: ``m = floor(k * s)`` slots
are reserved. The first ``k - m`` slots are the inner selector's best items (shown with
probability 1 given the candidates and scores); the last ``m`` slots are filled by drawing
``m`` items uniformly without replacement from the ``R`` remaining candidates, so each of
those is shown with probability ``m / R``. These propensities are set on the state,
served in ``RecommendedItem.propensity`` and logged (``propensities``), so offline
evaluation and training can weight feedback by 1 / propensity (inverse propensity
scoring) and correct for the serving policy's bias towards its own favourites.
"""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState, Selector


class ReserveExplorationSlots:
    name = "select"

    def __init__(self, inner: Selector, share: float, rng: np.random.Generator | None = None) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"exploration share must be in [0, 1), got {share}")
        self._inner = inner
        self.share = share
        self._rng = rng or np.random.default_rng()
        self.name = inner.name

    @classmethod
    def wrap(cls, inner: Selector, share: float) -> Selector:
        """``inner`` itself when exploration is off, else ``inner`` with reserved slots."""
        return inner if share <= 0.0 else cls(inner, share)

    def select(self, state: RecommendationState, scores: np.ndarray) -> np.ndarray:
        picked = self._inner.select(state, scores)
        k = len(picked)
        m = int(k * self.share)
        exploit = picked[: k - m]
        pool = np.setdiff1d(np.arange(len(scores)), exploit, assume_unique=False)
        m = min(m, len(pool))
        propensities = np.ones(len(exploit) + m, np.float32)
        explored = np.zeros(len(exploit) + m, bool)
        if m:
            draw = self._rng.choice(pool, size=m, replace=False)
            picked = np.concatenate([exploit, draw]).astype(np.int64)
            propensities[len(exploit) :] = m / len(pool)
            explored[len(exploit) :] = True
        else:
            picked = exploit
        state.propensities = propensities
        state.explored = explored
        return picked
