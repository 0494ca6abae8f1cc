"""The DecisionService servicer: proto -> domain -> pipeline -> proto, nothing else."""

from __future__ import annotations

import os

from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.errors import InvalidArgument, NotServed
from decision_service.executor import RecommendationExecutor
from decision_service.features.online_store import now_ms
from decision_service.fraud_executor import FraudExecutor
from decision_service.outcomes.recorder import OutcomeRecorder
from decision_service.server.convert import (
    RequestLimits,
    outcomes_from_proto,
    recommendation_decision_to_proto,
    recommendation_request_from_proto,
)
from decision_service.server.convert_fraud import (
    FraudLimits,
    fraud_decision_to_proto,
    fraud_request_from_proto,
)

DEBUG_TIMINGS_HEADER = "x-debug-timings"
TIMINGS_TRAILER = "x-stage-timings-ms"
WORKER_TRAILER = "x-server-worker"  # "w<id>:<pid>" of the process that answered
_MIN_BUDGET_S = 0.001


def _worker_label() -> str:
    return f"w{os.environ.get('DS_WORKER_ID', '0')}:{os.getpid()}"


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(
        self,
        recommendations: RecommendationExecutor,
        limits: RequestLimits,
        budget_ms: int,
        outcomes: OutcomeRecorder | None = None,
        fraud: FraudExecutor | None = None,
        fraud_limits: FraudLimits | None = None,
    ) -> None:
        self._recommendations = recommendations
        self._fraud = fraud
        self._fraud_limits = fraud_limits
        self._outcomes = outcomes
        self._limits = limits
        self._budget_s = budget_ms / 1000.0
        self._worker = _worker_label()  # built in the serving process, after any fork

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: aio.ServicerContext
    ) -> pb.GetDecisionResponse:
        use_case = request.WhichOneof("use_case")
        if use_case == "recommendation":
            domain_request = recommendation_request_from_proto(request, self._limits)
            decision = await self._recommendations.run(domain_request, self._budget(context))
            if _wants_timings(context):
                timings = ";".join(f"{k}={v:.3f}" for k, v in decision.stage_ms.items())
                context.set_trailing_metadata(((TIMINGS_TRAILER, timings), (WORKER_TRAILER, self._worker)))
            return recommendation_decision_to_proto(decision)
        if use_case == "fraud_check":
            if self._fraud is None or self._fraud_limits is None:
                raise NotServed("fraud_check: no fraud model is published in this server's registry")
            fraud_request = fraud_request_from_proto(request, self._limits, self._fraud_limits, now_ms())
            fraud_decision = await self._fraud.run(fraud_request, self._budget(context))
            if _wants_timings(context):
                timings = ";".join(f"{k}={v:.3f}" for k, v in fraud_decision.stage_ms.items())
                context.set_trailing_metadata(((TIMINGS_TRAILER, timings), (WORKER_TRAILER, self._worker)))
            return fraud_decision_to_proto(fraud_decision)
        raise InvalidArgument("use_case", "set exactly one of: recommendation, fraud_check")

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
