"""Runs a recommendation pipeline on the engine, applying the failure policy each stage
declares (pipeline.py: ``ON_FAILURE``) through ``Run.attempt`` / ``Run.read``, and the flow
that is not failure policy:
  user state   an unknown user / an invalid embedding -> popular candidates, flagged
  hydration    INVALID / missing / non-finite values -> declared defaults, flagged
  filters      left fewer than num_items -> refill rounds: the sources retrieve deeper
                           (``state.depth_factor``), only the new candidates are filtered and
                           hydrated, up to the pipeline's ``retrieval_max_rounds`` within the deadline
  scoring      no feature at all -> retrieval order, flagged ``scoring:features_unavailable``
  selection    fewer than num_items eligible -> the shorter list, flagged ``selection:short_list``
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from decision_service.engine import Engine, Run, Step, require_fail
from decision_service.features import packed
from decision_service.features.definitions import CATEGORIES, ITEM, USER, USER_ITEM
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.stages.base import HydratedFeatures, RecommendationState, UserState
from decision_service.stages.hydrators.candidate_features import cross_features
from decision_service.telemetry import Telemetry
from decision_service.use_cases.recommendation.pipeline import RecommendationPipeline

log = logging.getLogger(__name__)

USE_CASE = "recommendation"


def category_name(index: int) -> str:
    """The name of a catalog category index; "" for an uncategorised item (NO_CATEGORY)."""
    return CATEGORIES[index] if index >= 0 else ""


class RecommendationExecutor:
    def __init__(
        self,
        pipeline: RecommendationPipeline,
        artifacts: Callable[[RecommendationRequest], RecommendationArtifacts],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._pipeline = pipeline
        steps = pipeline.steps
        require_fail(steps, "selector")  # this flow has no fallback for it
        self._user_state: Step = steps["user_state"]
        # (step, degraded reason) pairs: the reasons are built once, not per request
        self._sources = _with_reasons(steps["sources"])
        self._filters = _with_reasons(steps["filters"])
        self._post_filters = _with_reasons(steps["post_filters"])
        self._hydrator: Step = steps["hydrator"]
        self._scorer: Step = steps["scorer"]
        self._selector: Step = steps["selector"]
        self._max_rounds = max(1, pipeline.retrieval_max_rounds)
        self._artifacts = artifacts
        self._engine = Engine(USE_CASE, telemetry)
        self._book = self._engine.book

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self._book.degraded_counts

    async def run(self, request: RecommendationRequest, budget_s: float) -> RecommendationDecision:
        """One recommendation within ``budget_s`` seconds (engine.py: span, deadline, envelope).

        On failure: only a FAIL step's exception propagates (pipeline.py: the fail-closed
        filters, the selector); everything else degrades."""
        return await self._engine.decide(
            request.request_id,
            budget_s,
            lambda run: self._run(request, run),
            lambda: {"num_items": request.num_items},
            lambda d: {"items": len(d.items)},
        )

    async def _run(self, request: RecommendationRequest, run: Run) -> RecommendationDecision:
        state = RecommendationState(
            request=request, artifacts=self._artifacts(request), degraded=run.degraded, stage_ms=run.stage_ms
        )

        with self._book.timed(state.stage_ms, self._user_state.name):
            state.user = await self._load_user(run, state)

        retrieved = await self._round(run, state, state.stage_ms, np.empty(0, np.int64))
        await self._refill(run, state, retrieved)

        with self._book.timed(state.stage_ms, self._scorer.name):
            state.scores = self._score(run, state)

        step = self._selector
        with self._book.timed(state.stage_ms, step.name):
            state.selected = run.attempt(step, "", step.stage.select, state, state.scores)  # FAIL
        if len(state.selected) < request.num_items:
            self._book.degrade(state.degraded, "selection", "short_list")

        decision = self._decision(state, run)
        await self._engine.side_effects(run, self._pipeline.side_effects, state, decision)
        return decision

    # ---------------------------------------------------------------- retrieval rounds

    async def _round(
        self, run: Run, state: RecommendationState, stage_ms: dict[str, float], retrieved: np.ndarray
    ) -> np.ndarray:
        """One retrieval round: sources, filters, hydration and post-filters of the candidates
        not ``retrieved`` by an earlier round; they are appended to the state's candidates.

        Contract: returns every row retrieved so far (``retrieved`` + this round's).
        """
        first = state.features is None
        kept, kept_features = state.candidates, state.features
        batch = Candidates.empty()
        for step, reason in self._sources:
            with self._book.timed(stage_ms, step.name):
                more = run.attempt(step, reason, step.stage.retrieve, state)
                if more is None:  # degraded: the other sources still serve
                    continue
                batch = Candidates.merge([batch, more])
        if len(retrieved):
            batch = batch.take(~np.isin(batch.rows, retrieved))
        retrieved = np.concatenate([retrieved, batch.rows])

        state.candidates, state.features = batch, None
        for step, reason in self._filters:
            self._apply_filter(run, state, step, reason, stage_ms)
        if first or len(state.candidates):  # the first round always reads the user's row
            with self._book.timed(stage_ms, self._hydrator.name):
                state.features = await self._hydrate(run, state)
            for step, reason in self._post_filters:
                self._apply_filter(run, state, step, reason, stage_ms)
        if not first:
            if state.features is not None and kept_features is not None:
                state.features = kept_features.extend(state.features)
            else:
                state.features = kept_features
            state.candidates = Candidates.merge([kept, state.candidates])
        return retrieved

    async def _refill(self, run: Run, state: RecommendationState, retrieved: np.ndarray) -> None:
        """Retrieves deeper while the filters left fewer than num_items candidates.

        Each round multiplies the sources' depth by the shortfall ratio (at least 2, at most
        16): filters that removed most candidates get a proportionally deeper next round.
        Stops at ``max_rounds`` rounds, at the deadline, or when no source has new rows.
        """
        want = state.request.num_items
        deadline = run.deadline
        loop = asyncio.get_running_loop()
        for _ in range(self._max_rounds - 1):
            have = len(state.candidates)
            if have >= want or loop.time() >= deadline:
                return
            state.depth_factor *= float(np.clip(want / max(have, 1), 2.0, 16.0))
            stage_ms: dict[str, float] = {}
            before = len(retrieved)
            retrieved = await self._round(run, state, stage_ms, retrieved)
            for name, ms in stage_ms.items():
                state.stage_ms[name] = state.stage_ms.get(name, 0.0) + ms
            if len(retrieved) == before:  # every source is exhausted (or capped)
                return

    # ---------------------------------------------------------------- stage wrappers

    async def _load_user(self, run: Run, state: RecommendationState) -> UserState:
        step = self._user_state
        user = await run.read(step, step.stage.load, state)
        if user is None:  # degraded: the store is down or late
            return UserState.unknown(state.request.user_id, FeatureStatus.UNAVAILABLE)
        if user.embedding_status == FeatureStatus.MISSING:
            self._book.degrade(state.degraded, "user_context", "unknown_user")
        elif user.embedding_status != FeatureStatus.PRESENT:
            reason = f"embedding_{user.embedding_status.name.lower()}"
            self._book.degrade(state.degraded, "user_context", reason)
        return user

    def _apply_filter(
        self, run: Run, state: RecommendationState, step: Step, reason: str, stage_ms: dict[str, float]
    ) -> None:
        with self._book.timed(stage_ms, step.name):
            keep = run.attempt(step, reason, step.stage.keep, state)
            if keep is None:  # degraded: skipped
                return
            removed = len(keep) - int(np.count_nonzero(keep))
            name = step.name
            state.removed[name] = state.removed.get(name, 0) + removed
            if removed:
                state.candidates = state.candidates.take(keep)
                if state.features is not None:
                    state.features = state.features.take(keep)

    async def _hydrate(self, run: Run, state: RecommendationState) -> HydratedFeatures:
        step = self._hydrator
        features = await run.read(step, step.stage.hydrate, state)
        if features is None:  # degraded: the store is down or late
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
        user = packed.unavailable(USER, 1)
        items = packed.unavailable(ITEM, len(state.candidates))
        try:
            cross = cross_features(state, user.values[0], items.values)
        except Exception:  # noqa: BLE001 - cross features are best effort here
            cross = np.zeros((len(state.candidates), len(USER_ITEM.columns)), np.float32)
        return HydratedFeatures(user, items, cross)

    def _score(self, run: Run, state: RecommendationState) -> np.ndarray:
        n = len(state.candidates)
        features = state.features
        if n == 0:
            return np.empty(0, np.float32)
        if features is not None and features.items.n_present == 0 and _all_unavailable(features.items):
            self._book.degrade(state.degraded, "scoring", "features_unavailable")
            return _retrieval_order_scores(n)
        scores = run.attempt(self._scorer, "model_error", self._model_scores, state, n)
        return _retrieval_order_scores(n) if scores is None else scores  # None: degraded

    def shadow_scores(self, state: RecommendationState, shadow: RecommendationArtifacts) -> np.ndarray:
        """The shadow version's scores of the candidates this decision scored, from the exact
        features served (no store read), in the decision log's candidate order.
        On failure: the scorer's exception (the shadow runner counts it)."""
        if state.features is None or len(state.candidates) == 0:
            return np.empty(0, np.float32)
        return self._model_scores(dataclasses.replace(state, artifacts=shadow), len(state.candidates))

    def _model_scores(self, state: RecommendationState, n: int) -> np.ndarray:
        """The scorer's scores; a wrong count or a non-finite score is the scorer failing."""
        scores = self._scorer.stage.score(state)
        if len(scores) != n or not np.all(np.isfinite(scores)):
            raise ValueError(f"scorer returned {len(scores)} scores for {n} candidates")
        return scores

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
                category=category_name(int(catalog.categories[row])),
                propensity=float(propensities[rank - 1]),
            )
            for rank, (i, row) in enumerate(zip(selected.tolist(), rows.tolist(), strict=True), 1)
        ]
        return RecommendationDecision(
            **run.envelope(state.artifacts.version, arm=state.artifacts.arm), items=items
        )


def _with_reasons(steps: tuple[Step, ...]) -> tuple[tuple[Step, str], ...]:
    """Each step with its degraded reason, ``{stage}_failed``."""
    return tuple((step, f"{step.name}_failed") for step in steps)


def _all_unavailable(values: GroupValues) -> bool:
    return bool(np.all(values.status == FeatureStatus.UNAVAILABLE))


def _retrieval_order_scores(n: int) -> np.ndarray:
    """Scores that keep the merged retrieval order (source priority, then source score)."""
    return (1.0 / (1.0 + np.arange(n, dtype=np.float32))).astype(np.float32)
