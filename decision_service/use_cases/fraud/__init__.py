"""The fraud use case: approve, review or decline one payment, with reasons.

Pipeline (pipeline.py): one Redis round trip for profiles, velocity,
block lists and the idempotency record -> request-time features -> FAISS neighbour fraud
rate -> LightGBM -> rules and thresholds -> an atomic commit of the verdict. Outcomes:
chargebacks and analyst verdicts (labels, 60-day window); a confirmed fraud block-lists the
card and marks the user and device risky, once per payment.
"""

from __future__ import annotations

from decision_service.decision_log import fraud_log
from decision_service.domain.decision import now_ms
from decision_service.domain.outcomes import DAY_S, OutcomeType
from decision_service.features.definitions import VELOCITY_WINDOWS
from decision_service.features.store import VELOCITY_RETENTION_MS
from decision_service.models.fraud_artifacts import FRAUD, FraudModels
from decision_service.stages.side_effects.fraud_decision import LogFraudDecision, RememberFraudDecision
from decision_service.use_cases.base import DecisionLog, ServedExecutor, ServingEnv, UseCase
from decision_service.use_cases.fraud import executor
from decision_service.use_cases.fraud.convert import (
    FraudLimits,
    fraud_decision_to_proto,
    fraud_request_from_proto,
)
from decision_service.use_cases.fraud.effects import FRAUD_CONFIRMED, mark_confirmed_fraud
from decision_service.use_cases.fraud.executor import FraudSideEffect, build_fraud_executor

_longest = max(s for _, s in VELOCITY_WINDOWS) * 1000
if _longest > VELOCITY_RETENTION_MS:
    raise ValueError(
        f"fraud: the project's longest velocity window ({_longest / 3.6e6:g} h) exceeds what the "
        f"online store keeps ({VELOCITY_RETENTION_MS / 3.6e6:g} h)"
    )

NAME = FRAUD  # registry folder (models/), log partition, telemetry label, DecisionRef.use_case
if fraud_log.USE_CASE != NAME or executor.USE_CASE != NAME:
    raise ValueError(f"fraud: the log partition / executor label must be the use case name {NAME!r}")


def serve(env: ServingEnv) -> ServedExecutor | None:
    """None when no fraud version is published (fraud_check then answers UNIMPLEMENTED).
    On failure: RegistryError when a published version cannot be loaded."""
    effects: list[FraudSideEffect] = [RememberFraudDecision(env.index, NAME)]
    if env.log is not None:
        effects.append(LogFraudDecision(env.log))
    executor = build_fraud_executor(
        env.config, env.reads, env.writes, tuple(effects), env.telemetry, env.registry, env.shadow
    )
    if executor is None:
        return None
    limits, fraud_limits = env.limits, FraudLimits.from_config(env.config)
    return ServedExecutor(
        executor,
        executor.models,  # type: ignore[arg-type]
        lambda request: fraud_request_from_proto(request, limits, fraud_limits, now_ms()),
        fraud_decision_to_proto,
    )


USE_CASE = UseCase(
    name=NAME,
    request_field="fraud_check",
    outcome_types=(
        OutcomeType("chargeback", NAME, (FRAUD_CONFIRMED,), False, "value = amount", 60 * DAY_S),
        OutcomeType("refund", NAME, (), False, "merchant refund; value = amount"),
        OutcomeType("confirmed_fraud", NAME, (FRAUD_CONFIRMED,), False, "analyst verdict", 60 * DAY_S),
        OutcomeType("confirmed_legit", NAME, (), False, "analyst verdict: a label, no state change"),
    ),
    serve=serve,
    log=DecisionLog(fraud_log.SCHEMA, fraud_log.to_batch, fraud_log.partition_of),
    effects=lambda config: {FRAUD_CONFIRMED: mark_confirmed_fraud},
    description="approve, review or decline a payment, with reasons",
    models=lambda registry, config: FraudModels(registry),
)
