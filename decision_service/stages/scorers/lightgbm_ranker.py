"""Scores candidates with the version's LightGBM ranking model (as LightGBM or compiled trees)."""

from __future__ import annotations

import numpy as np

from decision_service.stages.base import RecommendationState


class LightGbmRanker:
    name = "lightgbm"

    def __init__(self, num_threads: int = 1) -> None:
        # One thread: requests are already parallel across processes; OpenMP fan-out on
        # 200 rows costs more in synchronisation than it saves.
        self._num_threads = num_threads

    def score(self, state: RecommendationState) -> np.ndarray:
        features = state.features
        if features is None:
            raise ValueError("scoring needs hydrated features")
        matrix = state.artifacts.assembler.assemble(
            features.user.values[0], features.items.values, features.cross
        )
        predictor = state.artifacts.predictor  # compiled trees or LightGBM (DS_SCORER)
        if predictor is not None:
            scores = predictor.predict(matrix)
        else:
            scores = state.artifacts.model.predict(matrix, num_threads=self._num_threads)
        return np.asarray(scores, dtype=np.float32)
