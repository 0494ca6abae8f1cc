"""FAISS neighbour feature: the fraud rate among the k most similar labelled past payments."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import FRAUD_NEIGHBOURS
from decision_service.features.fraud import neighbour_space
from decision_service.stages.fraud.base import FraudState


class NeighbourFraudRate:
    name = "neighbours"

    def fill(self, state: FraudState, row: np.ndarray) -> None:
        artifacts = state.artifacts
        columns = artifacts.assembler.columns
        nn = artifacts.neighbours.query(neighbour_space(row, columns))
        for j, col in enumerate(FRAUD_NEIGHBOURS.columns):
            if col in columns:
                row[:, columns.index(col)] = nn[:, j]
