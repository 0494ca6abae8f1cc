"""FAISS neighbour feature: the fraud rate among the k most similar labelled past payments."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import FRAUD_NEIGHBOURS
from decision_service.features.fraud import neighbour_space
from decision_service.stages.fraud_base import FraudState


class InvalidNeighbourQuery(ValueError):
    """The payment's neighbour-space query holds a non-finite value; defaults were served."""


class NeighbourFraudRate:
    name = "neighbours"

    def fill(self, state: FraudState, row: np.ndarray) -> None:
        """Contract: writes the FRAUD_NEIGHBOURS columns of ``row``.

        On failure: a query with a non-finite value is never searched; its columns get the
        declared defaults and InvalidNeighbourQuery is raised (the executor flags
        ``neighbours:invalid_query``)."""
        artifacts = state.artifacts
        columns = artifacts.assembler.columns
        space = neighbour_space(row, columns)
        nn = artifacts.neighbours.query(space)  # defaults for rows it cannot search
        for j, col in enumerate(FRAUD_NEIGHBOURS.columns):
            if col in columns:
                row[:, columns.index(col)] = nn[:, j]
        if not artifacts.neighbours.usable(space).all():
            raise InvalidNeighbourQuery("neighbour query holds a non-finite value; defaults served")
