"""One multiplexed, pipelined Redis connection per process for the hot read path.

Why not redis.asyncio here: its per-command machinery (pool checkout, retry wrapper, command
objects, StreamReader) cost 0.31 ms of CPU for a 250-key MGET on the bench machine, against
0.08 ms for the same bytes through hiredis directly (BENCHMARKS.md). A decision makes one or
two such reads, so that overhead was a third of a request's CPU.

How: every command issued during one event-loop turn is appended to one buffer and written
with one ``write`` at the end of the turn; Redis answers in order, so replies are matched to
a FIFO of futures and parsed by ``hiredis.Reader`` (the C parser redis-py uses). Concurrent
requests therefore share one connection and one syscall per turn instead of taking a pooled
connection each. A decision's writes (the fraud commit, the decision-index SET) go the same
way; outcome effects use a second instance (server/app.py); offline jobs use redis-py.

Failure contract (the executor turns these into degraded answers):
  * a reply later than ``timeout_s``       -> redis.exceptions.TimeoutError
  * no connection / connection lost         -> redis.exceptions.ConnectionError
  * an error reply                          -> redis.exceptions.ResponseError
A late reply to a timed-out command is read and discarded, so the stream stays in step. If
the oldest unanswered command is older than ``reset_after_s`` the connection is dropped and
reopened by the next call (a hung server must not accumulate waiters forever).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

Command = Sequence[Any]


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: MultiplexedRedis) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_lost(self, exc)


class _Pending:
    """Commands sent together, waiting for their replies (Redis answers in order)."""

    __slots__ = ("future", "expected", "replies", "sent_at", "timer")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class MultiplexedRedis:
    """Sends commands over one shared connection; see the module docstring for the contract."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.05,
        connect_timeout_s: float = 0.1,
        reset_after_s: float | None = None,
    ) -> None:
        self._params = parse_url(url)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._reset_after_s = reset_after_s if reset_after_s is not None else max(1.0, 10 * timeout_s)
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self._waiting: collections.deque[_Pending] = collections.deque()  # sent or about to be
        self._unsent: list[_Pending] = []  # in ``_out``, written at the end of this loop turn
        self._out = bytearray()
        self._flush_scheduled = False
        self.writes = 0  # socket writes so far; each carries every command of one loop turn

    # ------------------------------------------------------------------ public API

    async def execute(self, *args: Any) -> Any:
        """One command; returns its reply as hiredis gives it (bytes, int, list, None)."""
        reply = (await self._send([args]))[0]
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands in one round trip; replies in order. Raises the first error reply."""
        replies = await self._send(commands)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """Replies in order, error replies in place as ResponseError objects (not raised): a
        caller that follows redirections (features/redis_cluster.py) reads them one by one."""
        return await self._send(commands)

    async def aclose(self) -> None:
        self._reset(redis.exceptions.ConnectionError("connection closed by the client"))

    @property
    def pending(self) -> int:
        """Command batches issued and not yet answered (a gauge for operators)."""
        return len(self._waiting)

    # ------------------------------------------------------------------ internals

    async def connected(self) -> None:
        """Opens the connection if it is not open (ConnectionError when it cannot be)."""
        if self._transport is None or self._transport.is_closing():
            await self._connect()

    def submit(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Queues ``commands`` for this loop turn's write and returns the future of their
        replies (error replies in place), without a coroutine of its own: a caller sending to
        several connections at once (features/redis_cluster.py) awaits the futures. Call after
        ``connected()``; a connection lost meanwhile fails the future with ConnectionError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        for command in commands:
            self._out += hiredis.pack_command(tuple(command))
        entry = _Pending(future, len(commands))
        self._waiting.append(entry)
        self._unsent.append(entry)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        return await self.submit(commands)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._unsent:
            return
        if self._transport is None or self._transport.is_closing():
            # The connection went away after these were queued: they can never be answered,
            # and must not stay in the FIFO where the next connection's replies would meet them.
            self._reset(redis.exceptions.ConnectionError("connection to Redis lost before sending"))
            return
        self._transport.write(bytes(self._out))
        self.writes += 1
        self._out.clear()
        # The clock starts when the bytes leave, so a busy event loop is not blamed on Redis.
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for entry in self._unsent:
            entry.sent_at = now
            entry.timer = loop.call_later(self._timeout_s, self._expire, entry.future)
        self._unsent.clear()

    def _expire(self, future: asyncio.Future[list[Any]]) -> None:
        if future.done():
            return
        future.set_exception(
            redis.exceptions.TimeoutError(f"no reply from Redis within {self._timeout_s * 1000:.0f} ms")
        )
        if self._waiting and time.monotonic() - self._waiting[0].sent_at > self._reset_after_s:
            self._reset(redis.exceptions.ConnectionError("Redis stopped answering; reconnecting"))

    def _on_data(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody waits for: the stream is out of step
                self._reset(redis.exceptions.ConnectionError("unexpected reply from Redis"))
                return
            entry = waiting[0]
            entry.replies.append(reply)
            if len(entry.replies) == entry.expected:
                waiting.popleft()
                entry.timer.cancel()  # type: ignore[union-attr] - set when the bytes were written
                if not entry.future.done():  # timed out or cancelled: read and dropped
                    entry.future.set_result(entry.replies)

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._transport = self._protocol = None
            self._fail_all(redis.exceptions.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _reset(self, error: Exception) -> None:
        transport = self._transport
        self._transport = self._protocol = None
        if transport is not None:
            transport.abort()
        self._fail_all(error)

    def _fail_all(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, collections.deque()
        self._reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self._out.clear()
        self._unsent.clear()
        for entry in waiting:
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(error)

    async def _connect(self) -> None:
        # one connection attempt at a time; concurrent callers wait for the same one
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        params = self._params
        kind = params.get("connection_class")
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if kind is UnixDomainSocketConnection:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), params["path"])
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self), params.get("host", "localhost"), params.get("port", 6379),
                        ssl=ssl.create_default_context() if kind is SSLConnection else None,
                    )
        except (OSError, TimeoutError) as exc:
            raise redis.exceptions.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        # nothing sent on an earlier connection can be answered on this one
        self._fail_all(redis.exceptions.ConnectionError("connection to Redis was replaced"))
        self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
        handshake: list[Command] = []
        if params.get("password"):
            user = params.get("username")
            handshake.append(("AUTH", user, params["password"]) if user else ("AUTH", params["password"]))
        if params.get("db"):
            handshake.append(("SELECT", params["db"]))
        if handshake:
            try:
                await self.pipeline(handshake)
            except redis.exceptions.RedisError:
                await self.aclose()
                raise
