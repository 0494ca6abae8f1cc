"""Enqueues the decision exactly as served (candidates, scores, ranks, features) to the log."""

from __future__ import annotations

import numpy as np

from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.decision_log.writer import ParquetLogWriter
from decision_service.domain.recommendation import RecommendationDecision
from decision_service.stages.base import RecommendationState


class LogServedDecision:
    name = "log_served_decision"

    def __init__(self, writer: ParquetLogWriter[RecommendationLogRecord]) -> None:
        self._writer = writer

    def apply(self, state: RecommendationState, decision: RecommendationDecision) -> None:
        n = len(state.candidates)
        ranks = np.zeros(n, np.int16)
        propensities = np.zeros(n, np.float32)
        if state.selected is not None and len(state.selected):
            ranks[state.selected] = np.arange(1, len(state.selected) + 1, dtype=np.int16)
            propensities[state.selected] = [item.propensity for item in decision.items]
        features = state.features
        assert features is not None, "the executor always hydrates (defaults on failure)"
        scores = state.scores if state.scores is not None else np.zeros(n, np.float32)
        self._writer.submit(
            RecommendationLogRecord(
                decision_id=decision.decision_id,
                request_id=decision.request_id,
                decided_at_ms=decision.decided_at_ms,
                user_id=state.request.user_id,
                context=state.request.context,
                model_version=decision.model_version,
                degraded=tuple(decision.degraded),
                item_ids=state.candidate_item_ids(),
                sources=state.candidates.sources,
                retrieval_scores=state.candidates.retrieval_scores,
                scores=scores,
                ranks=ranks,
                propensities=propensities,
                user_features=features.user.values[0],
                user_status=int(features.user.status[0]),
                item_features=features.items.values,
                item_status=features.items.status,
                cross_features=features.cross,
                arm=decision.arm,
                stage_ms=tuple(decision.stage_ms.items()),
            )
        )
