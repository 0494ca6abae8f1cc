"""The recommendation use case: a ranked list of items for a user.

Pipeline (pipeline.py): user state -> candidate sources
(FAISS ANN, popular) -> filters -> one Redis MGET of packed feature vectors -> LightGBM ->
selection (top-k with a category cap, exploration slots with propensities). Outcomes:
impressions, clicks, carts, purchases; clicks / carts / purchases mark the item seen.
"""

from __future__ import annotations

from decision_service.decision_log import recommendation_log
from decision_service.domain.outcomes import DAY_S, MINUTE_S, OutcomeType
from decision_service.features import definitions
from decision_service.features.declarative import seconds
from decision_service.models.rollout import RolloutModels
from decision_service.models.serving import RECOMMENDATION, RecommendationModels
from decision_service.stages.base import SideEffect
from decision_service.stages.side_effects.log_served_decision import LogServedDecision
from decision_service.stages.side_effects.remember_decision import RememberDecision
from decision_service.use_cases.base import (
    DecisionLog,
    ServedExecutor,
    ServingEnv,
    UseCase,
    shadow_effect,
)
from decision_service.use_cases.recommendation import executor
from decision_service.use_cases.recommendation.convert import (
    RecommendationLimits,
    recommendation_decision_to_proto,
    recommendation_request_from_proto,
)
from decision_service.use_cases.recommendation.effects import SEEN, mark_seen
from decision_service.use_cases.recommendation.executor import RecommendationExecutor
from decision_service.use_cases.recommendation.pipeline import recommendation_pipeline

NAME = RECOMMENDATION  # registry folder (models/), log partition, telemetry label, DecisionRef.use_case
if recommendation_log.USE_CASE != NAME or executor.USE_CASE != NAME:
    raise ValueError(f"recommendation: the log partition / executor label must be the use case name {NAME!r}")


def serve(env: ServingEnv) -> ServedExecutor:
    """On failure: RegistryError when no recommendation version is published or it cannot be
    loaded (the server does not start without one)."""
    models = RecommendationModels(env.registry, env.config)
    models.load_current()
    rollout = RolloutModels(models, NAME, lambda request: request.user_id)
    effects: list[SideEffect] = [RememberDecision(env.index, NAME)]
    if env.log is not None:
        effects.append(LogServedDecision(env.log))
    shadow = shadow_effect(env, NAME, rollout)
    if shadow is not None:
        effects.append(shadow)
    pipeline = recommendation_pipeline(env.config, env.reads, tuple(effects))
    executor = RecommendationExecutor(pipeline, rollout.pick, env.telemetry)
    if shadow is not None:
        shadow.score = executor.shadow_scores
    limits = RecommendationLimits.from_config(env.config)
    return ServedExecutor(
        executor,
        rollout,
        lambda request: recommendation_request_from_proto(request, limits),
        recommendation_decision_to_proto,
    )


DEFAULT_OUTCOME_TYPES = (
    OutcomeType("impression", NAME, (), True, "the item was shown"),
    OutcomeType("click", NAME, (SEEN,), True, "the item was clicked", 30 * MINUTE_S),
    OutcomeType("add_to_cart", NAME, (SEEN,), True, "added to the cart"),
    OutcomeType("purchase", NAME, (SEEN,), True, "bought; value = revenue", DAY_S),
)


def outcome_types() -> tuple[OutcomeType, ...]:
    """The project's RECOMMENDATION_OUTCOMES (features/interactions.py RecommendationOutcome),
    else DEFAULT_OUTCOME_TYPES. On failure: ValueError when none is a label (the decision index
    keeps decisions for the longest label window)."""
    declared = vars(definitions).get("RECOMMENDATION_OUTCOMES")
    if declared is None:
        return DEFAULT_OUTCOME_TYPES
    types = tuple(
        OutcomeType(
            o.name,
            NAME,
            (SEEN,) if o.marks_seen else (),
            True,
            o.description,
            0 if o.label_window is None else int(seconds(o.label_window)),
        )
        for o in declared
    )
    if not any(t.label_window_s for t in types):
        raise ValueError(
            f"{definitions.PROJECT.features_file}: RECOMMENDATION_OUTCOMES needs a label_window on one"
        )
    return types


USE_CASE = UseCase(
    name=NAME,
    request_field="recommendation",
    outcome_types=outcome_types(),
    serve=serve,
    log=DecisionLog(recommendation_log.SCHEMA, recommendation_log.to_batch, recommendation_log.partition_of),
    effects=lambda config: {SEEN: mark_seen},
    description="a ranked list of items for a user",
    models=lambda registry, config: RecommendationModels(registry, config),
)
