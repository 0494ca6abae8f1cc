"""Runs the conversion pipeline on the engine, applying the failure policy each step declares
(pipeline.py): timing, the deadline, degraded flags, the decision envelope, side effects."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from decision_service.domain.conversion import ConversionDecision, ConversionRequest
from decision_service.domain.features import FeatureStatus
from decision_service.engine import Engine, Run, require_fail
from decision_service.features.definitions import USER
from decision_service.features.packed import unavailable
from decision_service.models.conversion_artifacts import ConversionArtifacts
from decision_service.stages.conversion_base import ConversionState
from decision_service.telemetry import Telemetry
from decision_service.use_cases.conversion.pipeline import ConversionPipeline

_PROFILE_FLAGS = {
    FeatureStatus.MISSING: ("user_context", "unknown_user"),
    FeatureStatus.STALE: ("features", "user_stale"),
    FeatureStatus.INVALID: ("features", "user_invalid"),
}


class ConversionSideEffect(Protocol):
    name: str

    def apply(self, state: ConversionState, decision: ConversionDecision) -> Awaitable[None] | None:
        """Returns at once (enqueue only) or an awaitable the executor awaits before answering."""
        ...


class ConversionExecutor:
    def __init__(
        self,
        use_case: str,
        pipeline: ConversionPipeline,
        artifacts: Callable[[ConversionRequest], ConversionArtifacts],
        side_effects: tuple[ConversionSideEffect, ...] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        # the flow has no fallback for a missing row or verdict: they must be declared FAIL
        self._steps = pipeline.steps
        require_fail(self._steps, "features", "policy")
        self._artifacts = artifacts
        self._side_effects = side_effects
        self._engine = Engine(use_case, telemetry)
        self._book = self._engine.book

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self._book.degraded_counts

    async def run(self, request: ConversionRequest, budget_s: float) -> ConversionDecision:
        """One score within ``budget_s``. Store and model failures degrade the answer (see
        pipeline.py); a failure of a FAIL step propagates (the edge maps it to a status)."""
        return await self._engine.decide(
            request.request_id,
            budget_s,
            lambda run: self._run(request, run),
            lambda: {"user_id": request.user_id},
            lambda d: {"probability": d.probability, "action": d.action.name},
        )

    async def _run(self, request: ConversionRequest, run: Run) -> ConversionDecision:
        s = self._steps
        state = ConversionState(
            request, self._artifacts(request), degraded=run.degraded, stage_ms=run.stage_ms
        )
        with run.timed(s["profile"].name):
            state.profile = await self._profile(state, run)
        step = s["features"]
        with run.timed(step.name):
            state.row = run.attempt(step, "build_failed", step.stage.build, state)
            if state.non_finite:
                self._book.degrade(state.degraded, "features", "row_invalid")
        step = s["scorer"]
        with run.timed(step.name):
            state.score = run.attempt(step, "model_error", step.stage.score, state)
        step = s["policy"]
        with run.timed(step.name):
            state.verdict = run.attempt(step, "policy_failed", step.stage.decide, state)
        a = state.artifacts
        score, verdict = state.score, state.verdict
        decision = ConversionDecision(
            **run.envelope(a.version, arm=a.arm),
            probability=score.probability if score is not None else a.base_rate,
            action=verdict.action,
            threshold=verdict.threshold,
            base_rate=a.base_rate,
            reasons=verdict.reasons,
            scored=score is not None,
        )
        await self._engine.side_effects(run, self._side_effects, state, decision)
        return decision

    def shadow_scores(self, state: ConversionState, shadow: ConversionArtifacts) -> np.ndarray:
        """``[probability]`` of the shadow version for this decision, from the profile and
        request the decision used (no store read), re-assembled for the shadow's columns.
        On failure: the builder's or scorer's exception (the shadow runner counts it)."""
        s = self._steps
        twin = dataclasses.replace(
            state, artifacts=shadow, row=None, score=None, verdict=None, degraded=[], stage_ms={}
        )
        twin.row = s["features"].stage.build(twin)
        return np.array([s["scorer"].stage.score(twin).probability], np.float32)

    async def _profile(self, state: ConversionState, run: Run) -> Any:
        step = self._steps["profile"]
        values = await run.read(step, step.stage.load, state)
        if values is None:  # declared DEGRADE (flagged by the engine): the declared defaults
            return unavailable(USER, 1)
        flag = _PROFILE_FLAGS.get(FeatureStatus(int(values.status[0])))
        if flag is not None:
            self._book.degrade(state.degraded, *flag)
        return values
