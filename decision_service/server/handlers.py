"""Shared pieces of the interceptors: the same RPC answered by a wrapping behaviour, and request
bodies that do not decode turned into a status instead of a traceback."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
Deserializer = Callable[[bytes], Any]

UNDECODABLE_MESSAGE = "request could not be decoded"


class _Undecodable:
    """What a guarded deserializer returns for bytes that do not parse (see ``safe_deserializer``)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<undecodable request: {type(self.error).__name__}>"


def is_undecodable(request: Any) -> bool:
    return isinstance(request, _Undecodable)


def undecodable_error(request: Any) -> BaseException | None:
    """The parse error behind an undecodable request, else None."""
    return request.error if isinstance(request, _Undecodable) else None


def safe_deserializer(deserializer: Deserializer | None) -> Deserializer | None:
    """``deserializer`` that never raises: bytes it cannot parse (truncated, garbage, invalid
    UTF-8 in a string, nesting deeper than the parser allows) become an undecodable marker
    the handler answers with INVALID_ARGUMENT. Without it grpc answers UNKNOWN naming the
    protobuf exception and logs a traceback per call. Idempotent; None (raw bytes) stays None.
    """
    if deserializer is None or getattr(deserializer, "_ds_safe", False):
        return deserializer

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - any parse failure (DecodeError, RecursionError)
            return _Undecodable(exc)

    parse._ds_safe = True  # type: ignore[attr-defined]
    return parse


def replace_unary(
    handler: grpc.RpcMethodHandler,
    behavior: UnaryBehavior,
    request_deserializer: Deserializer | None | bool = True,
) -> grpc.RpcMethodHandler:
    """A unary-unary handler with ``handler``'s (de)serializers and ``behavior`` as its body.
    ``request_deserializer``: True keeps ``handler``'s; None takes the raw bytes (nothing to
    parse when the call is refused anyway); else the given one."""
    deserializer = handler.request_deserializer if request_deserializer is True else request_deserializer
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=deserializer,  # type: ignore[arg-type]
        response_serializer=handler.response_serializer,
    )


OnUndecodable = Callable[[Any, aio.ServicerContext], Awaitable[None]]


def guard_decoding(handler: grpc.RpcMethodHandler, on_undecodable: OnUndecodable) -> grpc.RpcMethodHandler:
    """``handler`` of any of the four kinds, its deserializer made safe and its body calling
    ``on_undecodable(marker, context)`` (which must abort) for a request that did not parse.

    Contract: the returned handler has the same kind, serializer and behaviour for requests
    that parse. On failure: a stream that sends one bad message is aborted at that message.
    """
    deserializer = safe_deserializer(handler.request_deserializer)
    kwargs = {"request_deserializer": deserializer, "response_serializer": handler.response_serializer}

    async def checked_stream(requests: AsyncIterator[Any], ctx: aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if is_undecodable(request):
                await on_undecodable(request, ctx)
            yield request

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext) -> Any:
            if is_undecodable(request):
                await on_undecodable(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)  # type: ignore[arg-type]
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream
        if inspect.isasyncgenfunction(inner_us):

            async def unary_stream_gen(request: Any, context: aio.ServicerContext) -> Any:
                if is_undecodable(request):
                    await on_undecodable(request, context)
                async for response in inner_us(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(unary_stream_gen, **kwargs)  # type: ignore[arg-type]

        async def unary_stream(request: Any, context: aio.ServicerContext) -> Any:
            if is_undecodable(request):
                await on_undecodable(request, context)
            return await inner_us(request, context)  # writes with context.write()

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)  # type: ignore[arg-type]
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: aio.ServicerContext) -> Any:
            return await inner_su(checked_stream(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)  # type: ignore[arg-type]
    inner_ss = handler.stream_stream
    if inspect.isasyncgenfunction(inner_ss):

        async def stream_stream_gen(requests: Any, context: aio.ServicerContext) -> Any:
            async for response in inner_ss(checked_stream(requests, context), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream_gen, **kwargs)  # type: ignore[arg-type]

    async def stream_stream(requests: Any, context: aio.ServicerContext) -> Any:
        return await inner_ss(checked_stream(requests, context), context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)  # type: ignore[arg-type]
