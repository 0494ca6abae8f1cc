"""Side effect of a conversion score: log it exactly as served (every input). (Remembering it
for attribution is the shared stages/side_effects/remember_decision.RememberDecision.)"""

from __future__ import annotations

from decision_service.decision_log.conversion_log import ConversionLogRecord
from decision_service.decision_log.writer import ParquetLogWriter
from decision_service.domain.conversion import ConversionDecision
from decision_service.domain.features import FeatureStatus
from decision_service.features.conversion import INPUT_COLUMNS
from decision_service.stages.conversion_base import ConversionState


class LogConversionDecision:
    name = "log_conversion_decision"

    def __init__(self, writer: ParquetLogWriter[ConversionLogRecord]) -> None:
        self._writer = writer

    def apply(self, state: ConversionState, decision: ConversionDecision) -> None:
        """Enqueues the row (non-blocking); a full queue is counted by the writer."""
        self._writer.submit(
            ConversionLogRecord(
                decision=decision,
                request=state.request,
                feature_names=INPUT_COLUMNS,
                features=state.inputs,
                margin=None if state.score is None else state.score.margin,
                profile_status=int(state.profile.status[0])
                if state.profile is not None
                else int(FeatureStatus.UNAVAILABLE),
            )
        )
