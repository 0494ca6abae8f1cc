"""Scores one row with a LightGBM binary model, Platt-calibrated, with per-feature contributions."""

from __future__ import annotations

import math

import numpy as np

from decision_service.stages.conversion_base import ConversionState, Score


class CalibratedLightGbm:
    name = "lightgbm"

    def __init__(self, num_threads: int = 1) -> None:
        self._num_threads = num_threads

    def score(self, state: ConversionState) -> Score:
        """probability = sigmoid(a * margin + b); contributions (TreeSHAP, one tree walk) are
        scaled by ``a`` so they are calibrated log-odds. On failure: ValueError (no row,
        a non-finite score)."""
        if state.row is None:
            raise ValueError("scoring needs the feature row")
        a, b = state.artifacts.calibration
        contrib = np.asarray(
            state.artifacts.model.predict(state.row, pred_contrib=True, num_threads=self._num_threads),
            np.float64,
        )[0]
        margin = float(contrib.sum())  # the last entry is the bias
        z = a * margin + b
        if not math.isfinite(z):
            raise ValueError("model returned a non-finite score")
        probability = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        return Score(probability, margin, (contrib[:-1] * a).astype(np.float32))
