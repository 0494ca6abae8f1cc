"""Shared piece of the interceptors: the same RPC, answered by a wrapping behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]


def replace_unary(handler: grpc.RpcMethodHandler, behavior: UnaryBehavior) -> grpc.RpcMethodHandler:
    """A unary-unary handler with ``handler``'s (de)serializers and ``behavior`` as its body."""
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
