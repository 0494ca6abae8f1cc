"""The DecisionService servicer: proto -> domain -> pipeline -> proto, nothing else."""

from __future__ import annotations

from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.executor import RecommendationExecutor
from decision_service.server.convert import (
    RequestLimits,
    recommendation_decision_to_proto,
    recommendation_request_from_proto,
)
from decision_service.server.errors import InvalidArgument, NotServed

DEBUG_TIMINGS_HEADER = "x-debug-timings"
TIMINGS_TRAILER = "x-stage-timings-ms"
_MIN_BUDGET_S = 0.001


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(
        self, recommendations: RecommendationExecutor, limits: RequestLimits, budget_ms: int
    ) -> None:
        self._recommendations = recommendations
        self._limits = limits
        self._budget_s = budget_ms / 1000.0

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: aio.ServicerContext
    ) -> pb.GetDecisionResponse:
        use_case = request.WhichOneof("use_case")
        if use_case == "recommendation":
            domain_request = recommendation_request_from_proto(request, self._limits)
            decision = await self._recommendations.run(domain_request, self._budget(context))
            if _wants_timings(context):
                timings = ";".join(f"{k}={v:.3f}" for k, v in decision.stage_ms.items())
                context.set_trailing_metadata(((TIMINGS_TRAILER, timings),))
            return recommendation_decision_to_proto(decision)
        if use_case == "fraud_check":
            raise NotServed("fraud_check decisions are not served by this version yet")
        raise InvalidArgument("use_case", "set exactly one of: recommendation, fraud_check")

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        raise NotServed("RecordOutcome is not served by this version yet")

    def _budget(self, context: aio.ServicerContext) -> float:
        """The configured budget, shortened by the client's deadline when that is sooner."""
        remaining = context.time_remaining()
        if remaining is None:
            return self._budget_s
        return max(_MIN_BUDGET_S, min(self._budget_s, remaining * 0.9))


def _wants_timings(context: aio.ServicerContext) -> bool:
    return any(k == DEBUG_TIMINGS_HEADER for k, _ in context.invocation_metadata() or ())
