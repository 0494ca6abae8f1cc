"""Errors any layer may raise; the gRPC edge maps each to a status code."""

from __future__ import annotations

import redis

STORE_TIMEOUTS: tuple[type[BaseException], ...] = (redis.exceptions.TimeoutError,)
"""Store errors that mean "too slow" rather than "unreachable" (degraded ``store_timeout``)."""


class InvalidArgument(ValueError):
    """Client error. ``field`` is the request path, e.g. ``recommendation.num_items``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class AlreadyExists(ValueError):
    """The request conflicts with an earlier one under the same id (ALREADY_EXISTS)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotServed(Exception):
    """A valid request for a capability this server does not serve (UNIMPLEMENTED)."""


class NotReady(Exception):
    """The server cannot answer yet (UNAVAILABLE): artifacts not loaded, shutting down."""


class Overloaded(Exception):
    """A resource is full for now (RESOURCE_EXHAUSTED): the client should back off and retry."""
