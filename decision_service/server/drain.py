"""Graceful stop without CANCELLED: calls started before SIGTERM finish, later ones get UNAVAILABLE.

grpc's ``server.stop(grace)`` lets calls the application has started finish, but calls the
transport has accepted and not yet handed to Python (a backlog under load: the aio server
takes one call at a time from the core), and calls arriving while it sends GOAWAY, are killed
and their clients see CANCELLED, which they do not retry; seen here under load, 8 of 10 runs. So the server
stops in steps (app.RunningServer.stop):

1. ``DrainGate.start_draining()``: every call handed to the application from now on is
   answered UNAVAILABLE "server is shutting down" at once, without parsing its body:
   retryable, nothing done. Health checks still answer (NOT_SERVING).
2. ``wait_idle``: the calls started before (counted until their status is sent) finish,
   within the grace period.
3. ``disconnect_clients``: the server's own TCP sockets (local port = the server's port:
   the listener and every accepted connection, nothing else) are shut down. Clients see
   the connection close, so whatever the core still held unstarted fails UNAVAILABLE on the
   client, and they reconnect elsewhere (another worker or replica).
4. ``server.stop`` then has no connection left whose calls it could cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from decision_service.server.handlers import replace_unary

log = logging.getLogger(__name__)
FLUSH_PAUSE_S = 0.05  # after the last status was sent, before the connections are closed
_ANSWERED_WHILE_DRAINING = frozenset({"/grpc.health.v1.Health/Check"})  # says NOT_SERVING
SHUTTING_DOWN_MESSAGE = "server is shutting down; retry (another replica will answer)"


class DrainGate(aio.ServerInterceptor):
    """Counts calls running; once draining, refuses new ones with UNAVAILABLE (module doc)."""

    def __init__(self) -> None:
        self._draining = False
        self._running = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def running(self) -> int:
        return self._running

    def start_draining(self) -> None:
        self._draining = True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health Watch, reflection: streams end with the server
        if self._draining and handler_call_details.method not in _ANSWERED_WHILE_DRAINING:
            return replace_unary(handler, _refuse, request_deserializer=None)
        inner = handler.unary_unary

        async def counted(request: Any, context: aio.ServicerContext) -> Any:
            self._running += 1  # until the status is sent, not only until the handler returns
            context.add_done_callback(self._done)
            return await inner(request, context)

        return replace_unary(handler, counted)

    def _done(self, _context: object) -> None:
        self._running -= 1
        if self._running == 0 and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def idle(self) -> None:
        """Returns once no admitted call is running (every status sent): work that must never
        delay an answer (shadow scoring) waits here. No polling: woken by the last call's end."""
        if self._running == 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    async def wait_idle(self, timeout_s: float, poll_s: float = 0.005) -> bool:
        """Waits until no admitted call is running (status sent); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._running > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True


def disconnect_clients(port: int) -> int:
    """Shuts down (both directions) this process's TCP sockets whose local port is ``port``:
    the server's listener and its accepted connections; returns how many. Linux only (0
    elsewhere: grpc's own stop then applies, with its CANCELLED race)."""
    if port <= 0 or not sys.platform.startswith("linux"):
        return 0
    closed = 0
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return 0
    for fd in fds:
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)  # owns the duplicate only
        except OSError:
            os.close(dup)
            continue
        with sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if sock.getsockname()[1] != port:
                    continue
            except OSError:
                continue
            with contextlib.suppress(OSError):  # a listener that never connected: ENOTCONN
                sock.shutdown(socket.SHUT_RDWR)
                closed += 1
    return closed


async def _refuse(request: Any, context: aio.ServicerContext) -> Any:
    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN_MESSAGE)
