"""Reads one user's stored profile (the registry's USER group): one MGET of one packed vector."""

from __future__ import annotations

from decision_service.domain.features import GroupValues
from decision_service.features.definitions import USER
from decision_service.features.store import FeatureReads
from decision_service.stages.conversion_base import ConversionState


class UserProfile:
    name = "profile"

    def __init__(self, store: FeatureReads) -> None:
        self._store = store

    async def load(self, state: ConversionState) -> GroupValues:
        """Contract: one row; missing / stale / invalid values come back as declared defaults
        with their FeatureStatus (features/packed.decode). Raises on store errors."""
        (values,) = await self._store.read_groups([(USER, (state.request.user_id,))])
        return values
