"""Scores a payment with the version's LightGBM model, with per-feature contributions."""

from __future__ import annotations

import numpy as np

from decision_service.stages.fraud_base import FraudState, Score


class LightGbmFraudScorer:
    name = "lightgbm"

    def __init__(self, num_threads: int = 1) -> None:
        self._num_threads = num_threads

    def score(self, state: FraudState) -> Score:
        if state.row is None:
            raise ValueError("scoring needs the feature row")
        model = state.artifacts.model
        contrib = np.asarray(
            model.predict(state.row, pred_contrib=True, num_threads=self._num_threads), np.float64
        )[0]
        # The probability is the sigmoid of the summed contributions (one tree walk, not two).
        probability = float(1.0 / (1.0 + np.exp(-contrib.sum())))
        if not np.isfinite(probability):
            raise ValueError("model returned a non-finite score")
        return Score(probability, contrib.astype(np.float32))
