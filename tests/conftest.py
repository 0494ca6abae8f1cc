"""Shared fixtures. Redis is real: a private redis-server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from decision_service.devtools.local_redis import LocalRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """A redis-server this test session started (and stops); never a shared one."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client of the session's private server, emptied before each test (we own it)."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()
