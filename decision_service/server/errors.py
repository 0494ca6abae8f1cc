"""The interceptor that maps errors (decision_service/errors.py) to gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from decision_service.errors import AlreadyExists, InvalidArgument, NotReady, NotServed, Overloaded
from decision_service.server.handlers import replace_unary

__all__ = [
    "AlreadyExists",
    "ErrorMappingInterceptor",
    "InvalidArgument",
    "NotReady",
    "NotServed",
    "Overloaded",
]

log = logging.getLogger(__name__)


_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotServed, grpc.StatusCode.UNIMPLEMENTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
)


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps domain errors to statuses; anything unexpected becomes INTERNAL without internals."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the edge turns every error into a status
                for kind, code in _STATUS:
                    if isinstance(exc, kind):
                        await context.abort(code, str(exc))
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server logs")

        return replace_unary(handler, guarded)
