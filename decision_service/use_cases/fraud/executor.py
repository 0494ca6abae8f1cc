"""Runs the fraud pipeline on the engine, applying the failure policy each stage declares
(pipeline.py: ``ON_FAILURE``) through ``Run.attempt`` / ``Run.read``, and the flow that is not
failure policy:
  record      exists, same payload      -> the recorded decision, answered again
              exists, different payload -> AlreadyExists (the request fails)
  values      non-finite  -> declared defaults, flagged ``features:{group}_invalid`` (stored
                             profiles: INVALID status, logged; the model row: every column)
  commit      no context  -> skipped, flagged ``commit:skipped_store_unavailable``
              lost a race -> the winner's decision is answered (same decision id)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np

from decision_service.config import ServiceConfig
from decision_service.domain.features import FeatureStatus
from decision_service.domain.fraud import FraudCheckRequest, FraudDecision
from decision_service.engine import Engine, Run, require_fail
from decision_service.errors import AlreadyExists
from decision_service.features.store import FeatureReads, StateWrites
from decision_service.models.fraud_artifacts import FraudArtifacts, FraudModels
from decision_service.models.registry import ModelRegistry
from decision_service.models.rollout import RolloutModels
from decision_service.stages.committers.commit_decision import decode_record, encode_record
from decision_service.stages.fraud_base import FraudState
from decision_service.stages.hydrators.neighbour_fraud_rate import InvalidNeighbourQuery
from decision_service.stages.side_effects.shadow_score import ShadowRunner, ShadowScore
from decision_service.telemetry import Telemetry
from decision_service.use_cases.fraud.pipeline import FraudPipeline, fraud_pipeline, policy_config

USE_CASE = "fraud"
_UNRECORDED = object()  # the commit step degraded: nothing was recorded


def _neighbour_failure(exc: Exception) -> str:
    """The neighbour step's degraded reason: a non-finite query, or the index failed."""
    return "invalid_query" if isinstance(exc, InvalidNeighbourQuery) else "index_error"


class FraudExecutor:
    def __init__(
        self,
        pipeline: FraudPipeline,
        artifacts: Callable[[FraudCheckRequest], FraudArtifacts],
        side_effects: tuple[FraudSideEffect, ...] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._steps = pipeline.steps
        require_fail(self._steps, "features", "policy")  # this flow has no fallback for them
        self._artifacts = artifacts
        self._side_effects = side_effects
        self._engine = Engine(USE_CASE, telemetry)
        self._book = self._engine.book
        self.models: RolloutModels[FraudArtifacts] | None = None  # what hot reload swaps, when built from one

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self._book.degraded_counts

    async def run(self, request: FraudCheckRequest, budget_s: float) -> FraudDecision:
        """One fraud decision within ``budget_s``.

        On failure: AlreadyExists when the transaction id was decided for another payload;
        store, neighbour and model failures degrade the answer instead of failing it.
        """
        return await self._engine.decide(
            request.request_id,
            budget_s,
            lambda run: self._run(request, run),
            lambda: {"transaction_id": request.transaction.transaction_id},
            lambda d: {"action": d.action.name, "risk_score": d.risk_score, "replayed": d.replayed},
        )

    async def _run(self, request: FraudCheckRequest, run: Run) -> FraudDecision:
        deadline = run.deadline
        state = FraudState(
            request=request, artifacts=self._artifacts(request), degraded=run.degraded, stage_ms=run.stage_ms
        )
        s = self._steps
        fingerprint = request.transaction.fingerprint()

        step = s["context"]
        with self._book.timed(state.stage_ms, step.name):
            state.context = await run.read(step, step.stage.load, state)  # None: no context
        if state.context is not None and state.context.previous_record is not None:
            return await self._replay(state, state.context.previous_record, fingerprint, deadline)

        self._flag_invalid_profiles(state)
        step = s["features"]
        with self._book.timed(state.stage_ms, step.name):
            state.row = run.attempt(step, "", step.stage.build, state)  # FAIL: no fallback
            # no NaN / inf reaches the neighbour query or the model: declared defaults, flagged
            for group in state.artifacts.assembler.replace_non_finite(state.row):
                self._book.degrade(state.degraded, "features", f"{group}_invalid")
        step = s["neighbours"]
        with self._book.timed(state.stage_ms, step.name):
            run.attempt(step, _neighbour_failure, step.stage.fill, state, state.row)
        step = s["scorer"]
        with self._book.timed(state.stage_ms, step.name):
            state.score = run.attempt(step, "model_error", step.stage.score, state)  # None: rules
        step = s["policy"]
        with self._book.timed(state.stage_ms, step.name):
            state.verdict = run.attempt(step, "", step.stage.decide, state)  # FAIL: no fallback

        decision = self._decision(state, run)
        if state.context is None:
            self._book.degrade(state.degraded, "commit", "skipped_store_unavailable")
            return await self._finish(state, decision, deadline)
        step = s["committer"]
        with self._book.timed(state.stage_ms, step.name):
            previous = await run.read(step, self._commit, state, fingerprint, decision, fallback=_UNRECORDED)
        if previous is _UNRECORDED:  # flagged: the verdict stands without the record
            return await self._finish(state, decision, deadline)
        if previous is not None:  # a concurrent call with this id recorded first
            return await self._replay(state, previous, fingerprint, deadline)
        return await self._finish(state, decision, deadline)

    async def _commit(self, state: FraudState, fingerprint: str, decision: FraudDecision) -> bytes | None:
        """Records the decision: None when this call recorded it, else the existing record."""
        return await self._steps["committer"].stage.commit(state, encode_record(fingerprint, decision))

    def shadow_scores(self, state: FraudState, shadow: FraudArtifacts) -> np.ndarray:
        """``[fraud probability]`` of the shadow version for this payment, from the context
        the decision read (no store read): the feature row re-assembled for the shadow's model
        columns, its own neighbour rate, its model. On failure: the builder's or scorer's
        exception (the shadow runner counts it)."""
        steps = self._steps
        twin = dataclasses.replace(
            state, artifacts=shadow, row=None, score=None, verdict=None, degraded=[], stage_ms={}
        )
        row = steps["features"].stage.build(twin)
        shadow.assembler.replace_non_finite(row)
        with contextlib.suppress(Exception):  # as served: the neighbour defaults stay on failure
            steps["neighbours"].stage.fill(twin, row)
        twin.row = row
        return np.array([steps["scorer"].stage.score(twin).probability], np.float32)

    async def _finish(self, state: FraudState, decision: FraudDecision, deadline: float) -> FraudDecision:
        """Runs the side effects of a fresh verdict; the decision index write completes (or
        is flagged) before the answer is returned, within the request's deadline."""
        await self._book.run_side_effects(self._side_effects, state, decision, deadline)
        return decision

    def _flag_invalid_profiles(self, state: FraudState) -> None:
        """Names each stored profile served as defaults because its value was INVALID
        (wrong layout or a non-finite value, see features/packed.decode)."""
        if state.context is None:
            return
        for values in (state.context.user, state.context.merchant, state.context.device):
            if values is not None and int(values.status[0]) == FeatureStatus.INVALID:
                self._book.degrade(state.degraded, "features", f"{values.group}_invalid")

    async def _replay(
        self, state: FraudState, raw: bytes, fingerprint: str, deadline: float
    ) -> FraudDecision:
        """The recorded decision for a retried transaction. It was logged the first time; the
        side effects marked ``repeat_on_replay`` (the idempotent decision-index write) run
        again, so a first call whose index write failed or was cut off is repaired by its
        retry."""
        t = state.request.transaction
        try:
            recorded_fp, decision = decode_record(raw, state.request.request_id)
        except ValueError as exc:
            raise AlreadyExists(
                "fraud_check.transaction_id",
                f"{t.transaction_id!r} has an unreadable decision record; use a new transaction id",
            ) from exc
        if recorded_fp != fingerprint:
            raise AlreadyExists(
                "fraud_check.transaction_id",
                f"{t.transaction_id!r} was already decided (decision {decision.decision_id}) for a different "
                "payload; a retry must resend the identical transaction, a new payment needs a new id",
            )
        decision.stage_ms = dict(state.stage_ms)
        repeat = [e for e in self._side_effects if getattr(e, "repeat_on_replay", False)]
        await self._book.run_side_effects(repeat, state, decision, deadline)
        return decision

    def _decision(self, state: FraudState, run: Run) -> FraudDecision:
        verdict = state.verdict
        assert verdict is not None
        return FraudDecision(
            **run.envelope(state.artifacts.version, dedupe=False, arm=state.artifacts.arm),
            action=verdict.action,
            risk_score=verdict.risk_score,
            fraud_probability=state.score.probability if state.score is not None else 0.0,
            fired_rules=verdict.fired_rules,
            reasons=verdict.reasons,
        )


class FraudSideEffect(Protocol):
    name: str

    def apply(self, state: FraudState, decision: FraudDecision) -> Awaitable[None] | None:
        """Contract: returns at once (enqueue only) and never changes the verdict; it may
        return an awaitable that the executor awaits before answering (see StageBook)."""
        ...


def build_fraud_executor(
    config: ServiceConfig,
    reads: FeatureReads,
    writes: StateWrites,
    side_effects: tuple[FraudSideEffect, ...] = (),
    telemetry: Telemetry | None = None,
    registry: ModelRegistry | None = None,
    shadow: ShadowRunner | None = None,
) -> FraudExecutor | None:
    """The fraud executor over the registry's CURRENT fraud version; None when none is published.

    On failure: RegistryError when a fraud version is published but cannot be loaded.
    """
    models = FraudModels(
        registry
        or ModelRegistry(config.registry_root, config.registry_cache_dir, config.registry_cache_versions)
    )
    if models.load_current() is None:
        return None
    rollout = RolloutModels(models, USE_CASE, lambda request: request.transaction.user_id)
    effects = tuple(side_effects)
    if shadow is not None:
        effects += (ShadowScore(USE_CASE, shadow, lambda: rollout.shadow),)
    pipeline = fraud_pipeline(reads, writes, policy_config(config), config.fraud_record_ttl_s)
    executor = FraudExecutor(pipeline, rollout.pick, effects, telemetry)
    for effect in effects:
        if isinstance(effect, ShadowScore):
            effect.score = executor.shadow_scores
    executor.models = rollout
    return executor
