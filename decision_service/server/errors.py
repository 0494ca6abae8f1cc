"""Errors the edge maps to gRPC status codes, and the interceptor that does the mapping."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

log = logging.getLogger(__name__)


class InvalidArgument(ValueError):
    """Client error. ``field`` is the request path, e.g. ``recommendation.num_items``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotServed(Exception):
    """A valid request for a capability this server does not serve (UNIMPLEMENTED)."""


class NotReady(Exception):
    """The server cannot answer yet (UNAVAILABLE): artifacts not loaded, shutting down."""


_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
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

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
