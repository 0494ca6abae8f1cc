"""Request latency by use case and status (decision.request.duration) for every RPC."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from decision_service.server.handlers import replace_unary
from decision_service.telemetry import Telemetry


class RequestMetricsInterceptor(aio.ServerInterceptor):
    """Outermost interceptor: sees the final status, including auth and validation errors."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method.rsplit("/", 1)[-1]
        telemetry = self._telemetry

        async def measured(request: Any, context: aio.ServicerContext) -> Any:
            start = time.perf_counter()
            status = "OK"
            try:
                return await inner(request, context)
            except aio.AbortError:
                code = context.code()
                status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                raise
            except BaseException:
                status = "UNKNOWN"
                raise
            finally:
                # a request that did not decode, or raw bytes of a refused call, has no use case
                use_case = method
                if method == "GetDecision":
                    which = getattr(request, "WhichOneof", None)
                    use_case = which("use_case") if which is not None else "undecoded"
                telemetry.request_done(use_case or "none", status, (time.perf_counter() - start) * 1000.0)

        return replace_unary(handler, measured)
