"""Exploration slots: the top of the list is exploited, the rest explored with logged propensities."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from decision_service.stages.selectors.exploration import ReserveExplorationSlots


class TopK:
    name = "top_k"

    def select(self, state, scores):
        return np.argsort(-scores, kind="stable")[: state.request.num_items]


def state(k: int):
    return SimpleNamespace(request=SimpleNamespace(num_items=k), propensities=None, explored=None)


def test_reserved_slots_are_uniform_draws_with_their_propensity():
    scores = np.linspace(1.0, 0.0, 50)
    selector = ReserveExplorationSlots(TopK(), 0.2, np.random.default_rng(0))
    counts = np.zeros(50)
    for _ in range(2000):
        s = state(10)
        picked = selector.select(s, scores)
        assert len(set(picked.tolist())) == 10
        assert picked[:8].tolist() == list(range(8))  # exploited: the best 8, probability 1
        assert s.propensities[:8].tolist() == [1.0] * 8 and not s.explored[:8].any()
        assert s.explored[8:].all() and s.propensities[8:] == pytest.approx(2 / 42)
        counts[picked[8:]] += 1
    # Each of the 42 others is shown about 2/42 of the time: the logged propensity is right.
    assert counts[8:] / 2000 == pytest.approx(np.full(42, 2 / 42), abs=0.02)


def test_no_share_no_wrapper_and_small_lists_are_not_explored():
    inner = TopK()
    assert ReserveExplorationSlots.wrap(inner, 0.0) is inner
    s = state(3)
    picked = ReserveExplorationSlots(inner, 0.2).select(s, np.arange(10.0))
    assert picked.tolist() == [9, 8, 7] and s.propensities.tolist() == [1.0, 1.0, 1.0]
