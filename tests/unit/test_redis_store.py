import asyncio

import numpy as np

from decision_service.domain.features import FeatureStatus
from decision_service.features import packed, redis_store
from decision_service.features.definitions import ITEM, USER, USER_EMBEDDING
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import RedisFeatureReads


def test_encode_decode_round_trip_with_statuses():
    values = np.arange(3 * ITEM.width, dtype=np.float32).reshape(3, ITEM.width)
    now = redis_store.now_ms()
    rows = packed.encode(ITEM, values, now)
    stale = packed.encode(ITEM, values[:1], now - int(ITEM.max_age_s * 1000) - 1)[0]
    raw = [rows[0], None, rows[2], stale, b"short"]
    got = packed.decode(ITEM, raw, now)
    assert got.status.tolist() == [
        FeatureStatus.PRESENT,
        FeatureStatus.MISSING,
        FeatureStatus.PRESENT,
        FeatureStatus.STALE,
        FeatureStatus.INVALID,
    ]
    assert np.array_equal(got.values[0], values[0])
    assert np.array_equal(got.values[2], values[2])
    for row in (1, 3, 4):
        assert np.array_equal(got.values[row], ITEM.defaults)


def test_decode_without_missing_values_checks_every_length():
    values = np.arange(3 * ITEM.width, dtype=np.float32).reshape(3, ITEM.width)
    now = redis_store.now_ms()
    rows = packed.encode(ITEM, values, now)
    stale = packed.encode(ITEM, values[:1], now - int(ITEM.max_age_s * 1000) - 1)[0]
    got = packed.decode(ITEM, [rows[0], stale, rows[2]], now)
    assert got.status.tolist() == [FeatureStatus.PRESENT, FeatureStatus.STALE, FeatureStatus.PRESENT]
    assert np.array_equal(got.values[2], values[2]) and np.array_equal(got.values[1], ITEM.defaults)
    # one value 4 bytes short, the next 4 bytes long: the total length is right, both are invalid
    short, long_ = rows[1][:-4], rows[1] + b"\0\0\0\0"
    got = packed.decode(ITEM, [rows[0], short, long_], now)
    assert got.status.tolist() == [FeatureStatus.PRESENT, FeatureStatus.INVALID, FeatureStatus.INVALID]


def test_keys_carry_the_group_layout_fingerprint():
    key = redis_store.feature_key(USER, "u1").decode()
    assert key == f"fv:user:{USER.fingerprint}:u1"


def test_async_store_reads_many_groups_in_one_round_trip(redis_client, redis_server):
    users = np.full((1, USER.width), 2.0, np.float32)
    items = np.arange(2 * ITEM.width, dtype=np.float32).reshape(2, ITEM.width)
    redis_store.RedisBulkWrites(redis_client).write_group(USER, ["u1"], users)
    redis_store.RedisBulkWrites(redis_client).write_group(ITEM, ["a", "b"], items)
    redis_client.config_resetstat()

    async def read():
        client = MultiplexedRedis(redis_server.url)
        try:
            store = RedisFeatureReads(client, max_seen_items=10, max_velocity_events=100)
            return await store.read_groups([(USER, ["u1"]), (ITEM, ["a", "zz", "b"])])
        finally:
            await client.aclose()

    user, item = asyncio.run(read())
    assert np.array_equal(user.values[0], users[0])
    assert item.status.tolist() == [0, 1, 0]
    assert np.array_equal(item.values[2], items[1])
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1 and "cmdstat_get" not in stats


def test_user_state_reads_embedding_and_newest_seen_items(redis_client, redis_server):
    redis_store.RedisBulkWrites(redis_client).write_group(USER_EMBEDDING, ["u1"], np.ones((1, 64), np.float32))
    redis_store.RedisBulkWrites(redis_client, max_seen_items=2).write_seen({"u1": [("old", 1), ("mid", 2), ("new", 3)]})

    async def read():
        client = MultiplexedRedis(redis_server.url)
        try:
            return await RedisFeatureReads(client, max_seen_items=5, max_velocity_events=100).read_user_state(USER_EMBEDDING, "u1")
        finally:
            await client.aclose()

    emb, seen = asyncio.run(read())
    assert emb.status.tolist() == [FeatureStatus.PRESENT]
    assert seen == [b"new", b"mid"]  # capped at 2 by the writer, newest first
