"""Runs a recommendation pipeline: stage timing, the deadline, failure policy, degraded flags.

Stages contain only their logic; every "what if it fails or is late" decision is here:
  user state   late/failed -> unknown user (popular fallback), flagged
  a source     failed      -> skipped, flagged
  a filter     failed      -> skipped and flagged if ``fail_open``, else the request fails
  hydration    late/failed -> declared defaults (status UNAVAILABLE), flagged
  filters      left fewer than num_items -> refill rounds: the sources retrieve deeper
                           (``state.depth_factor``), only the new candidates are filtered and
                           hydrated, up to the pipeline's ``retrieval_max_rounds`` within the deadline
  scoring      impossible  -> retrieval order, flagged
  selection    fewer than num_items eligible -> the shorter list, flagged ``selection:short_list``
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from decision_service.domain.features import FeatureStatus, GroupValues
from decision_service.domain.recommendation import (
    Candidates,
    CandidateSource,
    RankedItem,
    RecommendationDecision,
    RecommendationRequest,
)
from decision_service.engine import Engine, Run, store_failure
from decision_service.features import online_store
from decision_service.features.definitions import CATEGORIES, ITEM, USER, USER_ITEM
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.stages.base import (
    Filter,
    HydratedFeatures,
    RecommendationState,
    UserState,
)
from decision_service.stages.hydrators.candidate_features import cross_features
from decision_service.telemetry import Telemetry
from decision_service.use_cases.recommendation.pipeline import RecommendationPipeline

log = logging.getLogger(__name__)

USE_CASE = "recommendation"


class RecommendationExecutor:
    def __init__(
        self,
        pipeline: RecommendationPipeline,
        artifacts: Callable[[], RecommendationArtifacts],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._max_rounds = max(1, pipeline.retrieval_max_rounds)
        self._artifacts = artifacts
        self._engine = Engine(USE_CASE, telemetry)
        self._book = self._engine.book

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self._book.degraded_counts

    async def run(self, request: RecommendationRequest, budget_s: float) -> RecommendationDecision:
        """One recommendation within ``budget_s`` seconds (engine.py: span, deadline, envelope).

        On failure: only a fail-closed filter's exception propagates; everything else degrades."""
        return await self._engine.decide(
            request.request_id,
            budget_s,
            lambda run: self._run(request, run),
            lambda: {"num_items": request.num_items},
            lambda d: {"items": len(d.items)},
        )

    async def _run(self, request: RecommendationRequest, run: Run) -> RecommendationDecision:
        deadline = run.deadline
        state = RecommendationState(
            request=request, artifacts=self._artifacts(), degraded=run.degraded, stage_ms=run.stage_ms
        )
        p = self._pipeline

        with self._book.timed(state.stage_ms, p.user_state.name):
            state.user = await self._load_user(state, deadline)

        retrieved = await self._round(state, deadline, state.stage_ms, np.empty(0, np.int64))
        await self._refill(state, deadline, retrieved)

        with self._book.timed(state.stage_ms, p.scorer.name):
            state.scores = self._score(state)

        with self._book.timed(state.stage_ms, p.selector.name):
            state.selected = p.selector.select(state, state.scores)
        if len(state.selected) < request.num_items:
            self._book.degrade(state.degraded, "selection", "short_list")

        decision = self._decision(state, run)
        await self._engine.side_effects(run, p.side_effects, state, decision)
        return decision

    # ---------------------------------------------------------------- retrieval rounds

    async def _round(
        self, state: RecommendationState, deadline: float, stage_ms: dict[str, float], retrieved: np.ndarray
    ) -> np.ndarray:
        """One retrieval round: sources, filters, hydration and post-filters of the candidates
        not ``retrieved`` by an earlier round; they are appended to the state's candidates.

        Contract: returns every row retrieved so far (``retrieved`` + this round's).
        """
        p = self._pipeline
        first = state.features is None
        kept, kept_features = state.candidates, state.features
        batch = Candidates.empty()
        for source in p.sources:
            with self._book.timed(stage_ms, source.name):
                try:
                    more = source.retrieve(state)
                except Exception as exc:  # noqa: BLE001 - a source may fail; others still serve
                    self._book.degrade(state.degraded, "candidates", f"{source.name}_failed", exc)
                    continue
                batch = Candidates.merge([batch, more])
        if len(retrieved):
            batch = batch.take(~np.isin(batch.rows, retrieved))
        retrieved = np.concatenate([retrieved, batch.rows])

        state.candidates, state.features = batch, None
        for f in p.filters:
            self._apply_filter(state, f, stage_ms)
        if first or len(state.candidates):  # the first round always reads the user's row
            with self._book.timed(stage_ms, p.hydrator.name):
                state.features = await self._hydrate(state, deadline)
            for f in p.post_filters:
                self._apply_filter(state, f, stage_ms)
        if not first:
            if state.features is not None and kept_features is not None:
                state.features = kept_features.extend(state.features)
            else:
                state.features = kept_features
            state.candidates = Candidates.merge([kept, state.candidates])
        return retrieved

    async def _refill(self, state: RecommendationState, deadline: float, retrieved: np.ndarray) -> None:
        """Retrieves deeper while the filters left fewer than num_items candidates.

        Each round multiplies the sources' depth by the shortfall ratio (at least 2, at most
        16): filters that removed most candidates get a proportionally deeper next round.
        Stops at ``max_rounds`` rounds, at the deadline, or when no source has new rows.
        """
        want = state.request.num_items
        loop = asyncio.get_running_loop()
        for _ in range(self._max_rounds - 1):
            have = len(state.candidates)
            if have >= want or loop.time() >= deadline:
                return
            state.depth_factor *= float(np.clip(want / max(have, 1), 2.0, 16.0))
            stage_ms: dict[str, float] = {}
            before = len(retrieved)
            retrieved = await self._round(state, deadline, stage_ms, retrieved)
            for name, ms in stage_ms.items():
                state.stage_ms[name] = state.stage_ms.get(name, 0.0) + ms
            if len(retrieved) == before:  # every source is exhausted (or capped)
                return

    # ---------------------------------------------------------------- stage wrappers

    async def _load_user(self, state: RecommendationState, deadline: float) -> UserState:
        user_id = state.request.user_id
        try:
            async with asyncio.timeout_at(deadline):
                user = await self._pipeline.user_state.load(state)
        except TimeoutError as exc:
            self._book.degrade(state.degraded, "user_context", "deadline_exceeded", exc)
            return UserState.unknown(user_id, FeatureStatus.UNAVAILABLE)
        except Exception as exc:  # noqa: BLE001 - store down: serve the fallback
            self._book.degrade(state.degraded, "user_context", store_failure(exc), exc)
            return UserState.unknown(user_id, FeatureStatus.UNAVAILABLE)
        if user.embedding_status == FeatureStatus.MISSING:
            self._book.degrade(state.degraded, "user_context", "unknown_user")
        elif user.embedding_status != FeatureStatus.PRESENT:
            reason = f"embedding_{user.embedding_status.name.lower()}"
            self._book.degrade(state.degraded, "user_context", reason)
        return user

    def _apply_filter(self, state: RecommendationState, f: Filter, stage_ms: dict[str, float]) -> None:
        with self._book.timed(stage_ms, f.name):
            try:
                keep = f.keep(state)
            except Exception as exc:
                if not f.fail_open:
                    raise
                self._book.degrade(state.degraded, "filters", f"{f.name}_failed", exc)
                return
            removed = len(keep) - int(np.count_nonzero(keep))
            state.removed[f.name] = state.removed.get(f.name, 0) + removed
            if removed:
                state.candidates = state.candidates.take(keep)
                if state.features is not None:
                    state.features = state.features.take(keep)

    async def _hydrate(self, state: RecommendationState, deadline: float) -> HydratedFeatures:
        try:
            async with asyncio.timeout_at(deadline):
                features = await self._pipeline.hydrator.hydrate(state)
        except TimeoutError as exc:
            self._book.degrade(state.degraded, "features", "deadline_exceeded", exc)
            return self._unavailable_features(state)
        except Exception as exc:  # noqa: BLE001 - store down: serve declared defaults
            self._book.degrade(state.degraded, "features", store_failure(exc), exc)
            return self._unavailable_features(state)
        user_status = int(features.user.status[0])
        if user_status not in (FeatureStatus.PRESENT, FeatureStatus.MISSING):
            self._book.degrade(state.degraded, "features", f"user_{FeatureStatus(user_status).name.lower()}")
        n_items = len(features.items.status)
        missing = n_items - features.items.n_present
        if n_items and missing == n_items:
            self._book.degrade(state.degraded, "features", "items_missing")
        if np.any(features.items.status == FeatureStatus.INVALID):
            self._book.degrade(state.degraded, "features", "items_invalid")
        bad = ~np.isfinite(features.cross)
        if bad.any():  # on-demand arithmetic overflowed: the declared defaults, never NaN / inf
            features.cross[bad] = np.broadcast_to(USER_ITEM.defaults, features.cross.shape)[bad]
            self._book.degrade(state.degraded, "features", f"{USER_ITEM.name}_invalid")
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
            self._book.degrade(state.degraded, "scoring", "features_unavailable")
            return _retrieval_order_scores(n)
        try:
            scores = self._pipeline.scorer.score(state)
            if len(scores) != n or not np.all(np.isfinite(scores)):
                raise ValueError(f"scorer returned {len(scores)} scores for {n} candidates")
            return scores
        except Exception as exc:  # noqa: BLE001 - a broken model must not fail requests
            self._book.degrade(state.degraded, "scoring", "model_error", exc)
            return _retrieval_order_scores(n)

    # ---------------------------------------------------------------- bookkeeping


    def _decision(self, state: RecommendationState, run: Run) -> RecommendationDecision:
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
        return RecommendationDecision(**run.envelope(state.artifacts.version), items=items)



def _all_unavailable(values: GroupValues) -> bool:
    return bool(np.all(values.status == FeatureStatus.UNAVAILABLE))


def _retrieval_order_scores(n: int) -> np.ndarray:
    """Scores that keep the merged retrieval order (source priority, then source score)."""
    return (1.0 / (1.0 + np.arange(n, dtype=np.float32))).astype(np.float32)
