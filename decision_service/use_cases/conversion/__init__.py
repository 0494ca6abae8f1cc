"""The conversion use case: will this user purchase within 7 days? A calibrated probability,
its top reasons, and (with a threshold) an action.

Pipeline (pipeline.py, failure policy declared per step): the user's stored profile (the
registry's USER group, one MGET) + request-time features (cart, session, surface, device,
hour) -> LightGBM, Platt-calibrated -> threshold -> TARGET / SKIP with reasons. Outcome:
``converted`` (a purchase; value = order value) within the 7-day label window; no online
effect. Model versions under ``<registry>/conversion/`` (models/conversion_artifacts.py);
training set, retrain and publish gate (AUC and log-loss) in offline/use_cases/conversion.py.

Settings (environment): DS_CONVERSION_THRESHOLD (in [0, 1]; unset = no action, the
probability only), DS_CONVERSION_MAX_REASONS (default 3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from decision_service.config import ConfigError
from decision_service.decision_log import conversion_log
from decision_service.domain.decision import now_ms
from decision_service.domain.outcomes import DAY_S, OutcomeType
from decision_service.models.conversion_artifacts import ConversionModels
from decision_service.models.rollout import RolloutModels
from decision_service.stages.policies.threshold import ThresholdConfig
from decision_service.stages.side_effects.conversion_decision import LogConversionDecision
from decision_service.stages.side_effects.remember_decision import RememberDecision
from decision_service.use_cases.base import (
    DecisionLog,
    ServedExecutor,
    ServingEnv,
    UseCase,
    shadow_effect,
)
from decision_service.use_cases.conversion.convert import (
    conversion_decision_to_proto,
    conversion_request_from_proto,
)
from decision_service.use_cases.conversion.executor import ConversionExecutor, ConversionSideEffect
from decision_service.use_cases.conversion.pipeline import conversion_pipeline

NAME = conversion_log.USE_CASE  # registry folder, log partition, telemetry label, DecisionRef.use_case
LABEL_WINDOW_S = 7 * DAY_S
MAX_REASONS = 20


def threshold_config(env: Mapping[str, str] | None = None) -> ThresholdConfig:
    """DS_CONVERSION_THRESHOLD / DS_CONVERSION_MAX_REASONS. On failure: ConfigError naming
    the variable."""
    env = os.environ if env is None else env
    values: dict[str, float | int | None] = {}
    for var, key, kind in (
        ("DS_CONVERSION_THRESHOLD", "threshold", float),
        ("DS_CONVERSION_MAX_REASONS", "max_reasons", int),
    ):
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[key] = kind(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
    config = ThresholdConfig(**values)  # type: ignore[arg-type]
    if config.threshold is not None and not 0.0 <= config.threshold <= 1.0:
        raise ConfigError(f"DS_CONVERSION_THRESHOLD must be in [0, 1], got {config.threshold}")
    if not 0 <= config.max_reasons <= MAX_REASONS:
        raise ConfigError(
            f"DS_CONVERSION_MAX_REASONS must be in [0, {MAX_REASONS}], got {config.max_reasons}"
        )
    return config


def serve(env: ServingEnv) -> ServedExecutor | None:
    """None when no conversion version is published (conversion requests then answer
    UNIMPLEMENTED). On failure: RegistryError when a published version cannot be loaded,
    ConfigError for a bad DS_CONVERSION_* setting (whether or not a version is published)."""
    threshold = threshold_config()  # first: a bad setting stops the server even before a publish
    models = ConversionModels(env.registry, NAME)
    if models.load_current() is None:
        return None
    rollout = RolloutModels(models, NAME, lambda request: request.user_id)
    effects: list[ConversionSideEffect] = [RememberDecision(env.index, NAME)]
    if env.log is not None:
        effects.append(LogConversionDecision(env.log))
    shadow = shadow_effect(env, NAME, rollout)
    if shadow is not None:
        effects.append(shadow)
    pipeline = conversion_pipeline(env.reads, threshold)
    executor = ConversionExecutor(NAME, pipeline, rollout.pick, tuple(effects), env.telemetry)
    if shadow is not None:
        shadow.score = executor.shadow_scores
    limits = env.limits
    return ServedExecutor(
        executor,
        rollout,
        lambda request: conversion_request_from_proto(request, limits, now_ms()),
        conversion_decision_to_proto,
    )


USE_CASE = UseCase(
    name=NAME,
    request_field="conversion",
    outcome_types=(
        OutcomeType("converted", NAME, (), False, "the user purchased; value = order value", LABEL_WINDOW_S),
    ),
    serve=serve,
    log=DecisionLog(conversion_log.SCHEMA, conversion_log.to_batch, conversion_log.partition_of),
    description="will this user purchase within 7 days: a calibrated probability, reasons, an action",
    models=lambda registry, config: ConversionModels(registry, NAME),
)
