"""The interceptors that turn every failure at the gRPC edge into a status.

* ``EdgeGuardInterceptor`` (outermost but for metrics): a request body that does not decode
  answers INVALID_ARGUMENT; an exception raised by any interceptor below it answers INTERNAL.
  Neither says more than that to the caller, and both are logged rate-limited (one line per
  interval with a count), so a flood of garbage cannot flood the log.
* ``ErrorMappingInterceptor`` (innermost): domain errors (decision_service/errors.py) to
  status codes; anything unexpected becomes INTERNAL, its traceback logged rate-limited.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from decision_service.errors import AlreadyExists, InvalidArgument, NotReady, NotServed, Overloaded
from decision_service.rate_limited_log import RateLimitedLog
from decision_service.server.handlers import (
    UNDECODABLE_MESSAGE,
    guard_decoding,
    is_undecodable,
    replace_unary,
    undecodable_error,
)

__all__ = [
    "AlreadyExists",
    "EdgeGuardInterceptor",
    "ErrorMappingInterceptor",
    "InvalidArgument",
    "NotReady",
    "NotServed",
    "Overloaded",
]

log = logging.getLogger(__name__)
_warn = RateLimitedLog(logger=log)
INTERNAL_MESSAGE = "internal error; see server logs"


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
            if is_undecodable(request):
                await _refuse_undecodable(request, context, method)
            try:
                return await inner(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - the edge turns every error into a status
                for kind, code in _STATUS:
                    if isinstance(exc, kind):
                        await context.abort(code, str(exc))
                _warn.error(f"unexpected:{method}", f"unexpected error in {method}", exc_info=exc)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

        return replace_unary(handler, guarded)


class EdgeGuardInterceptor(aio.ServerInterceptor):
    """Every path that can fail before the servicer runs answers a status, never a traceback.

    Contract: wraps the handler the interceptors below it return so that (a) its request
    deserializer cannot raise: bytes that do not parse answer INVALID_ARGUMENT "request could
    not be decoded", for every method kind (health and reflection too), with or without a
    token; (b) an exception raised by an interceptor below answers INTERNAL. The caller learns
    nothing about the parser or the code; the log gets one line per kind and interval with a
    count (RateLimitedLog), not one traceback per call.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        try:
            handler = await continuation(handler_call_details)
        except Exception as exc:  # noqa: BLE001 - an interceptor's bug must not reach the caller
            _warn.error(f"interceptor:{method}", f"an interceptor failed for {method}", exc_info=exc)
            return grpc.unary_unary_rpc_method_handler(_answer_internal)
        if handler is None:
            return handler

        async def refuse(request: Any, context: aio.ServicerContext) -> None:
            await _refuse_undecodable(request, context, method)

        return guard_decoding(handler, refuse)


async def _answer_internal(request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


async def _refuse_undecodable(request: Any, context: aio.ServicerContext, method: str) -> None:
    error = undecodable_error(request)
    _warn.warning(
        "undecodable",
        f"undecodable request bodies refused (INVALID_ARGUMENT), latest {method} from {context.peer()}: "
        f"{type(error).__name__}",
    )
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)
