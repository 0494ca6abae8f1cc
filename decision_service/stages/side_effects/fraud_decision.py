"""Side effects of a fraud verdict: log it exactly as decided, and remember its parties so a
later chargeback can mark them."""

from __future__ import annotations

from collections.abc import Awaitable

from decision_service.decision_log.fraud_log import FraudLogRecord
from decision_service.decision_log.writer import ParquetLogWriter
from decision_service.domain.features import FeatureStatus
from decision_service.domain.fraud import FraudDecision
from decision_service.domain.outcomes import DecisionRef
from decision_service.outcomes.decision_index import DecisionIndex
from decision_service.stages.fraud_base import FraudState

_UNAVAILABLE = (FeatureStatus.UNAVAILABLE,) * 3


class LogFraudDecision:
    name = "log_fraud_decision"

    def __init__(self, writer: ParquetLogWriter[FraudLogRecord]) -> None:
        self._writer = writer

    def apply(self, state: FraudState, decision: FraudDecision) -> None:
        context = state.context
        status = (
            # a project without device profiles logs the device's as MISSING (never stored)
            tuple(
                int(g.status[0]) if g is not None else int(FeatureStatus.MISSING)
                for g in (context.user, context.merchant, context.device)
            )
            if context is not None
            else _UNAVAILABLE
        )
        self._writer.submit(
            FraudLogRecord(
                decision=decision,
                transaction=state.request.transaction,
                feature_names=tuple(state.artifacts.assembler.columns),
                features=None if state.row is None else state.row[0],
                profile_status=status,  # type: ignore[arg-type]
            )
        )


class RememberFraudDecision:
    name = "remember_fraud_decision"
    repeat_on_replay = True  # an idempotent SET: a retry repairs a first write that failed

    def __init__(self, index: DecisionIndex, use_case: str) -> None:
        self._index = index
        self._use_case = use_case  # DecisionRef.use_case: picks the TTL and the outcome effects

    def apply(self, state: FraudState, decision: FraudDecision) -> Awaitable[None]:
        """Awaited before the answer (see RememberDecision)."""
        t = state.request.transaction
        return self._index.remember(
            DecisionRef(
                decision.decision_id,
                self._use_case,
                t.user_id,
                decision.decided_at_ms,
                (
                    ("transaction_id", t.transaction_id),
                    ("device_id", t.device_id),
                    ("payment_instrument_id", t.payment_instrument_id),
                ),
            )
        )
