"""The use-case seam: what one use case declares, and what the server hands it to serve.

A use case (recommendation, fraud, conversion, ...) is ONE declared ``UseCase`` object in its
own package under ``decision_service/use_cases/``. The server, the reloader, the decision
and outcome logs and the outcome recorder iterate over ``decision_service.use_cases.USE_CASES``
and never name a use case. What a use case provides:

  name             the partition value ``use_case=<name>`` of the decision log, the registry
                   folder of its model versions, the telemetry label, ``DecisionRef.use_case``
  request_field    its field of the ``GetDecisionRequest`` oneof (and of the response's)
  outcome_types    the outcome types whose decisions are its own, with their label windows
                   (the decision index keeps its decisions attributable that long)
  log              its decision log: Parquet schema, record -> batch, record -> partition
  effects          how its outcomes change online state (idempotent per decision + effect)
  serve            builds what serves requests (pipeline, model holder, executor) from the
                   server's shared resources; None when no version of it is published

The offline half (bootstrap, demo section, flywheel turn, learn: training set, retrain,
publish gate) is the use case's ``OfflineUseCase`` in ``offline/use_cases/<name>.py``
(offline/use_cases/base.py), registered in ``offline.use_cases.OFFLINE_USE_CASES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from decision_service.domain.outcomes import OutcomeType
from decision_service.models.reload import Reloadable
from decision_service.models.rollout import RolloutModels
from decision_service.outcomes.recorder import EffectHandler
from decision_service.stages.side_effects.shadow_score import ShadowRunner, ShadowScore

if TYPE_CHECKING:
    from decision_service._generated.decision.v1 import decision_service_pb2 as pb
    from decision_service.config import ServiceConfig
    from decision_service.decision_log.writer import ParquetLogWriter
    from decision_service.features.store import FeatureReads, StateWrites
    from decision_service.models.registry import ModelRegistry
    from decision_service.outcomes.decision_index import DecisionIndex
    from decision_service.telemetry import Telemetry
    from decision_service.use_cases.proto import RequestLimits


@dataclass(frozen=True)
class DecisionLog:
    """A use case's decision log: rows land under ``decisions/use_case=<name>/date=/hour=``."""

    schema: pa.Schema
    to_batch: Callable[[Sequence[Any]], pa.RecordBatch]
    partition_of: Callable[[Any], tuple[tuple[str, str], ...]]


@dataclass
class ServingEnv:
    """What the composition root (server/app.py) hands every use case's ``serve``."""

    config: ServiceConfig
    registry: ModelRegistry
    reads: FeatureReads  # the online store's read half (one round trip per call)
    writes: StateWrites  # its write half (idempotent changes: store.Change)
    telemetry: Telemetry
    index: DecisionIndex  # remember(DecisionRef) before answering, so outcomes attribute
    limits: RequestLimits  # the request limits every use case shares
    log: ParquetLogWriter[Any] | None  # this use case's decision log; None when logging is off
    shadow: ShadowRunner | None = None  # the process's shadow scorer; None: no shadow scoring


def shadow_effect(env: ServingEnv, name: str, rollout: RolloutModels[Any]) -> ShadowScore | None:
    """The side effect that queues served decisions for the rollout's shadow version (None
    when the server runs no shadow scorer). Bind ``.score`` to the executor's
    ``shadow_scores`` once the executor exists."""
    if env.shadow is None:
        return None
    return ShadowScore(name, env.shadow, lambda: rollout.shadow)


class Served(Protocol):
    """A use case being served: built once at start by ``UseCase.serve``."""

    models: Reloadable

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]: ...

    async def decide(self, request: pb.GetDecisionRequest, budget_s: float) -> Decided:
        """One decision for ``request`` (its ``request_field`` is set) within ``budget_s``.

        On failure: InvalidArgument naming the field for bad input, AlreadyExists for a
        conflicting retry; store and model failures degrade the answer instead."""
        ...

    def model_version(self) -> str:
        """The version new requests are served with."""
        ...


@dataclass(frozen=True)
class Decided:
    """A served decision as the edge needs it: the response and the stage timings (ms)."""

    response: pb.GetDecisionResponse
    stage_ms: Mapping[str, float]


class ServedExecutor:
    """The usual ``Served``: proto -> domain request, the use case's executor
    (``run(request, budget_s) -> Decision``), decision -> proto response, over a model holder."""

    def __init__(
        self,
        executor: Any,
        models: Reloadable,
        request_from_proto: Callable[[pb.GetDecisionRequest], Any],
        decision_to_proto: Callable[[Any], pb.GetDecisionResponse],
    ) -> None:
        self.executor = executor
        self.models = models
        self._from_proto = request_from_proto
        self._to_proto = decision_to_proto

    @property
    def degraded_counts(self) -> dict[tuple[str, str], int]:
        return self.executor.degraded_counts  # type: ignore[no-any-return]

    async def decide(self, request: pb.GetDecisionRequest, budget_s: float) -> Decided:
        decision = await self.executor.run(self._from_proto(request), budget_s)
        return Decided(self._to_proto(decision), decision.stage_ms)

    def model_version(self) -> str:
        return self.models.get().version  # type: ignore[no-any-return]


@dataclass(frozen=True)
class UseCase:
    """One use case, declared once (see the module docstring)."""

    name: str
    request_field: str
    outcome_types: tuple[OutcomeType, ...]
    serve: Callable[[ServingEnv], Served | None]
    log: DecisionLog | None = None
    effects: Callable[[ServiceConfig], Mapping[str, EffectHandler]] | None = None
    description: str = ""
    models: Callable[[ModelRegistry, ServiceConfig], Reloadable] | None = None
    """Its model holder on a registry, for checking a version offline the way hot reload
    does (``prepare(name)`` raises RegistryError): ``decision-service rollout`` refuses a
    version that fails it."""

    def __post_init__(self) -> None:
        if not self.outcome_types:  # the decision index TTL derives from its label windows
            raise ValueError(f"use case {self.name!r} declares no outcome type")
        for t in self.outcome_types:
            if t.use_case != self.name:
                raise ValueError(f"outcome type {t.name!r} belongs to {t.use_case!r}, not {self.name!r}")
