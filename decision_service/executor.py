"""Runs a recommendation pipeline: stage timing, the deadline, failure policy, degraded flags.

Stages contain only their logic; every "what if it fails or is late" decision is here:
  user state   late/failed -> unknown user (popular fallback), flagged
  a source     failed      -> skipped, flagged
  a filter     failed      -> skipped and flagged if ``fail_open``, else the request fails
  hydration    late/failed -> declared defaults (status UNAVAILABLE), flagged
  scoring      impossible  -> retrieval order, flagged
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from decision_service.domain.features import FeatureStatus, GroupValues
from decision_service.domain.recommendation import (
    Candidates,
    CandidateSource,
    Degradation,
    RankedItem,
    RecommendationDecision,
    RecommendationRequest,
)
from decision_service.features import online_store
from decision_service.features.definitions import CATEGORIES, ITEM, USER, USER_ITEM
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.pipelines.recommendation import RecommendationPipeline
from decision_service.rate_limited_log import RateLimitedLog
from decision_service.stages.base import (
    Filter,
    HydratedFeatures,
    RecommendationState,
    UserState,
)
from decision_service.stages.hydrators.candidate_features import cross_features
from decision_service.telemetry import Telemetry

log = logging.getLogger(__name__)

USE_CASE = "recommendation"


def new_decision_id(now_ms: int) -> str:
    """32 hex chars, time-ordered (48-bit ms) then 80 random bits."""
    return f"{now_ms:012x}{os.urandom(10).hex()}"


class RecommendationExecutor:
    def __init__(
        self,
        pipeline: RecommendationPipeline,
        artifacts: Callable[[], RecommendationArtifacts],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._artifacts = artifacts
        self._telemetry = telemetry or Telemetry.disabled()
        self._warn = RateLimitedLog()
        self.degraded_counts: dict[tuple[str, str], int] = {}

    async def run(self, request: RecommendationRequest, budget_s: float) -> RecommendationDecision:
        if not self._telemetry.enabled:
            return await self._run(request, budget_s)
        attributes = {"request_id": request.request_id, "num_items": request.num_items}
        with self._telemetry.request_span(USE_CASE, attributes) as span:
            decision = await self._run(request, budget_s)
            if span is not None:
                span.set_attribute("decision_id", decision.decision_id)
                span.set_attribute("model_version", decision.model_version)
                span.set_attribute("items", len(decision.items))
                span.set_attribute("degraded", [f"{d.stage}:{d.reason}" for d in decision.degraded])
            return decision

    async def _run(self, request: RecommendationRequest, budget_s: float) -> RecommendationDecision:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        state = RecommendationState(request=request, artifacts=self._artifacts())
        p = self._pipeline

        with self._timed(state, p.user_state.name):
            state.user = await self._load_user(state, deadline)

        for source in p.sources:
            with self._timed(state, source.name):
                try:
                    batch = source.retrieve(state)
                except Exception as exc:  # noqa: BLE001 - a source may fail; others still serve
                    self._degrade(state, "candidates", f"{source.name}_failed", exc)
                    continue
                state.candidates = Candidates.merge([state.candidates, batch])

        for f in p.filters:
            self._apply_filter(state, f)

        with self._timed(state, p.hydrator.name):
            state.features = await self._hydrate(state, deadline)

        for f in p.post_filters:
            self._apply_filter(state, f)

        with self._timed(state, p.scorer.name):
            state.scores = self._score(state)

        with self._timed(state, p.selector.name):
            state.selected = p.selector.select(state, state.scores)

        decision = self._decision(state)
        for effect in p.side_effects:
            try:
                effect.apply(state, decision)
            except Exception as exc:  # noqa: BLE001 - a side effect never fails the answer
                key = ("side_effects", f"{effect.name}_failed")
                self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
                self._warn.warning(key[1], f"side effect {effect.name} failed: {exc!r}")
        return decision

    # ---------------------------------------------------------------- stage wrappers

    async def _load_user(self, state: RecommendationState, deadline: float) -> UserState:
        user_id = state.request.user_id
        try:
            async with asyncio.timeout_at(deadline):
                user = await self._pipeline.user_state.load(state)
        except TimeoutError as exc:
            self._degrade(state, "user_context", "deadline_exceeded", exc)
            return UserState.unknown(user_id, FeatureStatus.UNAVAILABLE)
        except Exception as exc:  # noqa: BLE001 - store down: serve the fallback
            self._degrade(state, "user_context", _store_failure(exc), exc)
            return UserState.unknown(user_id, FeatureStatus.UNAVAILABLE)
        if user.embedding_status == FeatureStatus.MISSING:
            self._degrade(state, "user_context", "unknown_user")
        elif user.embedding_status != FeatureStatus.PRESENT:
            self._degrade(state, "user_context", f"embedding_{user.embedding_status.name.lower()}")
        return user

    def _apply_filter(self, state: RecommendationState, f: Filter) -> None:
        with self._timed(state, f.name):
            try:
                keep = f.keep(state)
            except Exception as exc:
                if not f.fail_open:
                    raise
                self._degrade(state, "filters", f"{f.name}_failed", exc)
                return
            removed = len(keep) - int(np.count_nonzero(keep))
            state.removed[f.name] = removed
            if removed:
                state.candidates = state.candidates.take(keep)
                if state.features is not None:
                    state.features = state.features.take(keep)

    async def _hydrate(self, state: RecommendationState, deadline: float) -> HydratedFeatures:
        try:
            async with asyncio.timeout_at(deadline):
                features = await self._pipeline.hydrator.hydrate(state)
        except TimeoutError as exc:
            self._degrade(state, "features", "deadline_exceeded", exc)
            return self._unavailable_features(state)
        except Exception as exc:  # noqa: BLE001 - store down: serve declared defaults
            self._degrade(state, "features", _store_failure(exc), exc)
            return self._unavailable_features(state)
        user_status = int(features.user.status[0])
        if user_status not in (FeatureStatus.PRESENT, FeatureStatus.MISSING):
            self._degrade(state, "features", f"user_{FeatureStatus(user_status).name.lower()}")
        n_items = len(features.items.status)
        missing = n_items - features.items.n_present
        if n_items and missing == n_items:
            self._degrade(state, "features", "items_missing")
        return features

    def _unavailable_features(self, state: RecommendationState) -> HydratedFeatures:
        user = online_store.unavailable(USER, 1)
        items = online_store.unavailable(ITEM, len(state.candidates))
        try:
            cross = cross_features(state, user.values[0], items.values)
        except Exception:  # noqa: BLE001 - cross features are best effort here
            cross = np.zeros((len(state.candidates), len(USER_ITEM.columns)), np.float32)
        return HydratedFeatures(user, items, cross)

    def _score(self, state: RecommendationState) -> np.ndarray:
        n = len(state.candidates)
        features = state.features
        if n == 0:
            return np.empty(0, np.float32)
        if features is not None and features.items.n_present == 0 and _all_unavailable(features.items):
            self._degrade(state, "scoring", "features_unavailable")
            return _retrieval_order_scores(n)
        try:
            scores = self._pipeline.scorer.score(state)
            if len(scores) != n or not np.all(np.isfinite(scores)):
                raise ValueError(f"scorer returned {len(scores)} scores for {n} candidates")
            return scores
        except Exception as exc:  # noqa: BLE001 - a broken model must not fail requests
            self._degrade(state, "scoring", "model_error", exc)
            return _retrieval_order_scores(n)

    # ---------------------------------------------------------------- bookkeeping

    def _degrade(
        self, state: RecommendationState, stage: str, reason: str, exc: BaseException | None = None
    ) -> None:
        state.degraded.append(Degradation(stage, reason))
        key = (stage, reason)
        self.degraded_counts[key] = self.degraded_counts.get(key, 0) + 1
        self._telemetry.degraded(USE_CASE, stage, reason)
        if exc is not None:
            self._warn.warning(
                f"{stage}:{reason}",
                f"degraded {stage} ({reason}): {type(exc).__name__}: {exc} "
                f"[total {self.degraded_counts[key]}]",
            )

    @contextmanager
    def _timed(self, state: RecommendationState, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with self._telemetry.stage_span(USE_CASE, name):
                yield
        finally:
            ms = (time.perf_counter() - start) * 1000.0
            state.stage_ms[name] = ms
            self._telemetry.stage_done(USE_CASE, name, ms)

    def _decision(self, state: RecommendationState) -> RecommendationDecision:
        now = online_store.now_ms()
        catalog = state.artifacts.catalog
        selected = state.selected if state.selected is not None else np.empty(0, np.int64)
        scores = state.scores if state.scores is not None else np.empty(0, np.float32)
        rows = state.candidates.rows[selected]
        n = len(selected)
        propensities = state.propensities if state.propensities is not None else np.ones(n, np.float32)
        explored = state.explored if state.explored is not None else np.zeros(n, bool)
        items = [
            RankedItem(
                item_id=str(catalog.item_ids[row]),
                score=float(scores[i]),
                rank=rank,
                source=CandidateSource.EXPLORATION
                if explored[rank - 1]
                else CandidateSource(int(state.candidates.sources[i])),
                category=CATEGORIES[int(catalog.categories[row])],
                propensity=float(propensities[rank - 1]),
            )
            for rank, (i, row) in enumerate(zip(selected.tolist(), rows.tolist(), strict=True), 1)
        ]
        return RecommendationDecision(
            decision_id=new_decision_id(now),
            request_id=state.request.request_id,
            model_version=state.artifacts.version,
            decided_at_ms=now,
            items=items,
            degraded=state.degraded,
            stage_ms=dict(state.stage_ms),
        )


def _store_failure(exc: BaseException) -> str:
    return "store_timeout" if isinstance(exc, online_store.STORE_TIMEOUTS) else "store_unavailable"


def _all_unavailable(values: GroupValues) -> bool:
    return bool(np.all(values.status == FeatureStatus.UNAVAILABLE))


def _retrieval_order_scores(n: int) -> np.ndarray:
    """Scores that keep the merged retrieval order (source priority, then source score)."""
    return (1.0 / (1.0 + np.arange(n, dtype=np.float32))).astype(np.float32)
