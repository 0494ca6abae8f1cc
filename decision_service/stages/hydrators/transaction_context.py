"""Reads everything the store knows about a payment's parties in ONE round trip."""

from __future__ import annotations

from decision_service.features.store import FeatureReads, StoredContext
from decision_service.stages.fraud_base import FraudState


class LoadTransactionContext:
    name = "context"

    def __init__(self, store: FeatureReads) -> None:
        self._store = store

    async def load(self, state: FraudState) -> StoredContext:
        t = state.request.transaction
        # velocity windows end at the server's receive time, never at the client's clock
        return await self._store.read_payment_context(
            t.transaction_id,
            t.user_id,
            t.merchant_id,
            t.device_id,
            t.ip_address,
            t.payment_instrument_id,
            state.request.counted_at_ms,
        )
