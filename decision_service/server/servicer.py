"""The DecisionService servicer: picks the use case of a request and hands it over, nothing else."""

from __future__ import annotations

import os
from collections.abc import Mapping

from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.domain.decision import now_ms
from decision_service.errors import InvalidArgument, NotServed
from decision_service.outcomes.recorder import OutcomeRecorder
from decision_service.server.convert import outcomes_from_proto
from decision_service.use_cases.base import Served
from decision_service.use_cases.proto import RequestLimits

DEBUG_TIMINGS_HEADER = "x-debug-timings"
TIMINGS_TRAILER = "x-stage-timings-ms"
WORKER_TRAILER = "x-server-worker"  # "w<id>:<pid>" of the process that answered
_MIN_BUDGET_S = 0.001


def _worker_label() -> str:
    return f"w{os.environ.get('DS_WORKER_ID', '0')}:{os.getpid()}"


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(
        self,
        served: Mapping[str, Served | None],
        limits: RequestLimits,
        budget_ms: int,
        outcomes: OutcomeRecorder | None = None,
    ) -> None:
        """``served``: request field (the ``GetDecisionRequest.use_case`` oneof) -> the use case
        serving it, None for a registered use case with no published version."""
        self._served = dict(served)
        self._outcomes = outcomes
        self._limits = limits
        self._budget_s = budget_ms / 1000.0
        self._worker = _worker_label()  # built in the serving process, after any fork
        self._known = ", ".join(self._served)

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: aio.ServicerContext
    ) -> pb.GetDecisionResponse:
        field = request.WhichOneof("use_case")
        if field not in self._served:
            if field is None:
                raise InvalidArgument("use_case", f"set exactly one of: {self._known}")
            # a use case of the API that this server's project does not serve
            raise NotServed(f"{field}: this server's project serves only {self._known}")
        served = self._served[field]
        if served is None:
            raise NotServed(f"{field}: no model for it is published in this server's registry")
        decided = await served.decide(request, self._budget(context))
        if _wants_timings(context):
            timings = ";".join(f"{k}={v:.3f}" for k, v in decided.stage_ms.items())
            context.set_trailing_metadata(((TIMINGS_TRAILER, timings), (WORKER_TRAILER, self._worker)))
        return decided.response

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        if self._outcomes is None:
            raise NotServed("RecordOutcome needs the outcome log, which is disabled on this server")
        outcomes = outcomes_from_proto(request, self._limits, now_ms())
        known = await self._outcomes.record(outcomes)
        return pb.RecordOutcomeResponse(
            accepted=len(outcomes),
            acks=[pb.OutcomeAck(index=i, decision_known=k) for i, k in enumerate(known)],
        )

    def _budget(self, context: aio.ServicerContext) -> float:
        """The configured budget, shortened by the client's deadline when that is sooner."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._budget_s
        return max(_MIN_BUDGET_S, min(self._budget_s, remaining * 0.9))


def _wants_timings(context: aio.ServicerContext) -> bool:
    return any(k == DEBUG_TIMINGS_HEADER for k, _ in context.invocation_metadata() or ())
