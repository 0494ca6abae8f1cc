"""Loads the user's embedding and recently seen items from the online store (one round trip)."""

from __future__ import annotations

from decision_service.domain.features import FeatureStatus, usable_query_vector
from decision_service.features.definitions import USER_EMBEDDING
from decision_service.features.store import FeatureReads
from decision_service.stages.base import RecommendationState, UserState


class LoadUserState:
    name = "user_state"

    def __init__(self, store: FeatureReads) -> None:
        self._store = store

    async def load(self, state: RecommendationState) -> UserState:
        """Contract: an embedding is returned only when it can query the index; a stored
        vector with a non-finite value (decode) or a zero / overflowing norm is INVALID and
        the user is served as unknown (the executor flags ``user_context:embedding_invalid``)."""
        user_id = state.request.user_id
        embedding, seen = await self._store.read_user_state(USER_EMBEDDING, user_id)
        status = FeatureStatus(int(embedding.status[0]))
        seen_rows = state.artifacts.catalog.rows_of(seen)  # Redis bytes -> sorted catalog rows
        if status == FeatureStatus.PRESENT and not usable_query_vector(embedding.values[0]):
            status = FeatureStatus.INVALID
        if status != FeatureStatus.PRESENT:
            return UserState(user_id, None, status, seen_rows)
        return UserState(user_id, embedding.values[0], status, seen_rows)
