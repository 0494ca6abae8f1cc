"""Reads the user's and every candidate's feature vectors in ONE MGET, then computes the
on-demand user x item features with the same code the training set uses."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import ITEM, USER
from decision_service.features.on_demand import user_item_features
from decision_service.features.store import FeatureReads
from decision_service.stages.base import HydratedFeatures, RecommendationState


class CandidateFeatures:
    name = "features"

    def __init__(self, store: FeatureReads) -> None:
        self._store = store

    async def hydrate(self, state: RecommendationState) -> HydratedFeatures:
        item_ids = state.candidate_item_ids()
        user, items = await self._store.read_groups([(USER, [state.request.user_id]), (ITEM, item_ids)])
        return HydratedFeatures(user, items, cross_features(state, user.values[0], items.values))


def cross_features(state: RecommendationState, user_row: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    artifacts = state.artifacts
    item_emb = np.asarray(artifacts.item_embeddings[state.candidates.rows], dtype=np.float32)
    user_emb = state.user.embedding if state.user and state.user.embedding is not None else None
    if user_emb is None:
        user_emb = np.zeros(item_emb.shape[1], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # an overflow gives inf / NaN, which the executor replaces by declared defaults (flagged)
        return user_item_features(user_row, user_emb, item_rows, item_emb)
