"""Transport security and caller authentication for the gRPC edge.

* TLS: a server certificate and key; mutual TLS when a client CA is configured (clients
  without a certificate signed by it fail the handshake).
* Bearer tokens: every RPC must carry ``authorization: Bearer <token>`` matching one of the
  configured tokens, except the health service (probes carry no secrets). Comparison is
  constant-time; the reply never says which part was wrong.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from decision_service.config import ConfigError, ServiceConfig
from decision_service.server import listen
from decision_service.server.handlers import replace_unary

HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class BearerTokenInterceptor(aio.ServerInterceptor):
    def __init__(self, tokens: list[str], exempt: frozenset[str] = HEALTH_METHODS) -> None:
        if not tokens or any(not t for t in tokens):
            raise ConfigError("auth_tokens: give at least one non-empty token")
        self._tokens = [t.encode() for t in tokens]
        self._exempt = exempt

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._exempt:
            return handler
        if self._authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return _rejecting(handler)

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata:
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer":
                    return False
                presented = token.strip().encode()
                # Check every token so timing says nothing about which one nearly matched.
                return any([hmac.compare_digest(presented, t) for t in self._tokens])
        return False


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """Answers UNAUTHENTICATED without parsing the body: an unauthenticated caller costs no
    decoding, and garbage from it is refused for the token, not for the bytes."""
    message = "missing or invalid bearer token"

    async def unary(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request_iterator: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return replace_unary(handler, unary, request_deserializer=None)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(unary, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(streaming, **kwargs)
    return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)


def interceptors(config: ServiceConfig) -> list[aio.ServerInterceptor]:
    tokens = [t.strip() for t in config.auth_tokens.split(",") if t.strip()]
    return [BearerTokenInterceptor(tokens)] if tokens else []


def server_options(config: ServiceConfig) -> list[tuple[str, int]]:
    """The transport bounds (README "Resource bounds"): one message, HTTP/2 streams per
    connection, the connection age after which a client reconnects (so load spreads again over
    workers and replicas); SO_REUSEPORT unless exactly one worker is configured (workers share
    the port, server/workers.py). The bound on calls in flight is ``max_concurrent_rpcs``, given
    to ``aio.server`` itself (app.py)."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0 if config.workers == 1 else 1),
    ]
    if config.max_concurrent_streams_per_connection > 0:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams_per_connection))
    if config.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", max(1, int(config.max_connection_age_s * 1000))),
            ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_s * 1000)),
        ]
    return options


def bind(server: aio.Server, config: ServiceConfig) -> int:
    """Adds the listening port (TLS when configured); returns the bound port."""
    address = f"{config.host}:{config.port}"
    if config.workers == 1:  # alone on the port: refuse one in use, with a plain message
        listen.check_port_free(config.host, config.port)
    if config.tls_cert_file is None and config.tls_key_file is None:
        if config.tls_client_ca_file is not None:
            raise ConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return listen.add_port(address, lambda: server.add_insecure_port(address))
    if config.tls_cert_file is None or config.tls_key_file is None:
        raise ConfigError("TLS needs both tls_cert_file and tls_key_file")
    try:
        key = config.tls_key_file.read_bytes()
        cert = config.tls_cert_file.read_bytes()
        client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"cannot read a TLS file: {exc}") from None
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    return listen.add_port(address, lambda: server.add_secure_port(address, credentials))
