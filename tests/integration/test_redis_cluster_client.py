"""The cluster-aware multiplexed client (features/redis_cluster.py) on a real local cluster:
routing by slot, an MGET across slots split and put back in order, MOVED (a stale slot
table) and ASK (a slot being migrated) followed once, every primary pinged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from decision_service.devtools.local_redis import LocalRedisCluster
from decision_service.features.redis_cluster import ClusterMultiplexedRedis


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(3) as c:
        yield c


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_pipeline_routes_by_slot_and_an_mget_across_slots_keeps_key_order(cluster: LocalRedisCluster) -> None:
    async def go() -> None:
        client = ClusterMultiplexedRedis(cluster.urls[:1], timeout_s=1.0)
        keys = [f"fv:item:abc:i{n}" for n in range(251)]
        assert len({key_slot(k.encode()) for k in keys}) > 200  # spread over the cluster
        await client.pipeline([("SET", k, f"v{n}") for n, k in enumerate(keys)])
        values = await client.execute("MGET", *keys, "fv:item:abc:missing")
        assert values == [f"v{n}".encode() for n in range(251)] + [None]
        mixed = await client.pipeline([("GET", keys[7]), ("MGET", keys[3], keys[200]), ("PING",)])
        assert mixed == [b"v7", [b"v3", b"v200"], b"PONG"]
        assert client.refreshes == 1
        assert set((await client.ping_all()).values()) == {True} and len(await client.ping_all()) == 3
        with pytest.raises(redis.exceptions.ResponseError, match="CROSSSLOT"):
            await client.execute("EVAL", "return 1", 2, keys[0], keys[1])  # scripts stay single-slot
        await client.aclose()

    _run(go())


def test_a_stale_slot_table_is_refreshed_on_moved_and_the_command_resent(cluster: LocalRedisCluster) -> None:
    async def go() -> None:
        client = ClusterMultiplexedRedis(cluster.urls[1:2], timeout_s=1.0)
        await client.execute("SET", "moved-key", "here")
        slot = key_slot(b"moved-key")
        owner = client._slots[slot]
        wrong = next(a for a in set(client._slots) if a != owner)
        client._slots[slot] = wrong  # fault: the table says another primary owns it
        assert await client.execute("GET", "moved-key") == b"here"  # MOVED -> refresh -> resent
        assert client.refreshes == 2 and client._slots[slot] == owner
        await client.aclose()

    _run(go())


def test_ask_during_a_slot_migration_is_followed_to_the_importing_node(cluster: LocalRedisCluster) -> None:
    key = b"ask-key"
    slot = key_slot(key)
    clients = [redis.Redis.from_url(u) for u in cluster.urls]
    ids = {c: c.execute_command("CLUSTER", "MYID") for c in clients}
    source = next(c for c in clients if _owns(c, slot))
    target = next(c for c in clients if c is not source)
    try:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        pipe = target.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command("SET", key, "migrated")
        pipe.execute()  # the key lives on the importing node only: the source answers ASK

        async def go() -> None:
            client = ClusterMultiplexedRedis(cluster.urls[:1], timeout_s=1.0)
            assert await client.execute("GET", key) == b"migrated"
            await client.aclose()

        _run(go())
    finally:
        pipe = target.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.execute_command("DEL", key)  # while it still imports the slot
        pipe.execute()
        for c in clients:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[source])
        for c in clients:
            c.close()


def _owns(client: redis.Redis, slot: int) -> bool:
    myid = client.execute_command("CLUSTER", "MYID")
    for shard in client.execute_command("CLUSTER", "SHARDS"):
        slots = shard[b"slots"]
        nodes = [n[b"id"] for n in shard[b"nodes"]]
        if myid in nodes and any(a <= slot <= b for a, b in zip(slots[0::2], slots[1::2], strict=True)):
            return True
    return False
