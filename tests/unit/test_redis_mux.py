"""The serving read connection against a real redis-server: pipelining, errors, faults."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from decision_service.devtools.local_redis import LocalRedis, free_port
from decision_service.features.redis_mux import MultiplexedRedis


def run(coro):
    return asyncio.run(coro)


def test_concurrent_commands_share_one_write_and_each_gets_its_own_reply(redis_client, redis_server):
    redis_client.mset({f"k{i}": f"v{i}" for i in range(50)})

    async def body():
        mux = MultiplexedRedis(redis_server.url)
        try:
            await mux.execute("PING")
            before = mux.writes
            replies = await asyncio.gather(*(mux.execute("GET", f"k{i}") for i in range(50)))
            return replies, mux.writes - before
        finally:
            await mux.aclose()

    replies, writes = run(body())
    assert replies == [f"v{i}".encode() for i in range(50)]
    assert writes == 1


def test_pipeline_returns_replies_in_order(redis_client, redis_server):
    redis_client.set("a", "1")
    redis_client.zadd("z", {"x": 1, "y": 2})

    async def body():
        mux = MultiplexedRedis(redis_server.url)
        try:
            return await mux.pipeline([("GET", "a"), ("ZREVRANGE", "z", 0, -1), ("GET", "missing"), ("MGET", "a", "b")])
        finally:
            await mux.aclose()

    assert run(body()) == [b"1", [b"y", b"x"], None, [b"1", None]]


def test_an_error_reply_raises_and_the_stream_stays_in_step(redis_client, redis_server):
    redis_client.set("s", "text")

    async def body():
        mux = MultiplexedRedis(redis_server.url)
        try:
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await mux.pipeline([("GET", "s"), ("ZRANGE", "s", 0, -1)])
            return await mux.execute("GET", "s")
        finally:
            await mux.aclose()

    assert run(body()) == b"text"


def test_the_url_selects_the_database(redis_client, redis_server):
    other_db = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3")
    other_db.set("where", "db3")

    async def body():
        mux = MultiplexedRedis(redis_server.url.rsplit("/", 1)[0] + "/3")
        try:
            return await mux.execute("GET", "where")
        finally:
            await mux.aclose()

    try:
        assert run(body()) == b"db3"
        assert redis_client.get("where") is None
    finally:
        other_db.delete("where")


def test_a_closed_port_is_a_connection_error():
    async def body():
        mux = MultiplexedRedis(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
        with pytest.raises(redis.exceptions.ConnectionError):
            await mux.execute("PING")

    run(body())


def test_a_paused_server_times_out_then_late_replies_are_dropped(redis_server):
    pauser = redis_server.client()

    async def body():
        mux = MultiplexedRedis(redis_server.url, timeout_s=0.05)
        try:
            await mux.execute("SET", "p", "before")
            pauser.execute_command("CLIENT", "PAUSE", 300, "ALL")
            t0 = time.perf_counter()
            with pytest.raises(redis.exceptions.TimeoutError):
                await mux.execute("GET", "p")
            waited = time.perf_counter() - t0
            await asyncio.sleep(0.4)  # the pause ends; the late reply arrives and is dropped
            return waited, await mux.execute("ECHO", "after"), mux.pending
        finally:
            await mux.aclose()

    waited, reply, pending = run(body())
    assert waited < 0.25
    assert reply == b"after"  # its own reply, not the late GET's
    assert pending == 0


def test_a_restarted_server_is_reconnected_on_the_next_call():
    first = LocalRedis().start()
    second = LocalRedis(port=first.port)

    async def body():
        mux = MultiplexedRedis(first.url, timeout_s=0.5, connect_timeout_s=0.5)
        try:
            assert await mux.execute("PING") == b"PONG"
            first.stop()
            await asyncio.sleep(0.1)  # the close reaches the client
            with pytest.raises(redis.exceptions.ConnectionError):
                await mux.execute("PING")
            second.start()
            return await mux.execute("PING")
        finally:
            await mux.aclose()

    try:
        assert run(body()) == b"PONG"
    finally:
        first.stop()
        second.stop()
